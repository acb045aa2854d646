//! Files the shim writes into a bundle for itself and for later `delete`s (options, runtime
//! name, process specs): created or truncated with mode 0600, since they may hold a spec's
//! environment or the runtime's options.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::{Error, Result};

/// Write `data` to `path` (created or truncated) readable by the owner only.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::from(e).context(format!("write {}", path.display())))?;
    f.write_all(data)
        .map_err(|e| Error::from(e).context(format!("write {}", path.display())))
}
