//! The init process's exit, recorded in its bundle the moment it is known. If the shim dies
//! before containerd hears about the exit (SIGKILL, OOM kill of the shim), the `delete` action
//! containerd then runs reports this real status instead of a generic 137.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::types::Exit;

/// File name inside the bundle (ignored by containerd and by the Go shims).
pub const FILE: &str = "shimgate-exit.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub pid: u32,
    pub status: u32,
    pub exited_at_secs: u64,
    pub exited_at_nanos: u32,
}

impl Recorded {
    pub fn exited_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.exited_at_secs, self.exited_at_nanos)
    }
}

/// Write atomically (temp file + rename), so a reader never sees half a record.
pub fn write(bundle: &Path, exit: &Exit) -> std::io::Result<()> {
    let d = exit.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let r = Recorded {
        pid: exit.pid,
        status: exit.status,
        exited_at_secs: d.as_secs(),
        exited_at_nanos: d.subsec_nanos(),
    };
    let json = serde_json::to_vec(&r).map_err(std::io::Error::other)?;
    let tmp = bundle.join(format!(".{FILE}"));
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, bundle.join(FILE))
}

/// The recorded exit, if any (a missing or unreadable file is simply no record).
pub fn read(bundle: &Path) -> Option<Recorded> {
    let b = std::fs::read(bundle.join(FILE)).ok()?;
    serde_json::from_slice(&b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), None);
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 42);
        write(
            d.path(),
            &Exit {
                pid: 7,
                status: 3,
                at,
            },
        )
        .unwrap();
        let r = read(d.path()).unwrap();
        assert_eq!((r.pid, r.status, r.exited_at()), (7, 3, at));
        std::fs::write(d.path().join(FILE), "garbage").unwrap();
        assert_eq!(read(d.path()), None);
    }
}
