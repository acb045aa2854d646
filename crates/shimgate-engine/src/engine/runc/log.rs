//! Reading runc's `--log` file (JSON lines `{"level":..,"msg":..,"time":..}`). The file is
//! shared by every invocation on a container and only appended to, so each call remembers the
//! length before it ran and only looks at what it added.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    level: String,
    #[serde(default)]
    msg: String,
}

/// Current length of the log (0 when it does not exist yet).
pub fn offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Most bytes we read back from one call's log entries.
const MAX_TAIL: u64 = 1 << 20;

/// The last `error`-level message written after `since`, if any. Lines that are not JSON (a
/// runtime that ignores `--log-format`) count as errors when nothing better exists.
pub fn last_error_since(path: &Path, since: u64) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = since.max(len.saturating_sub(MAX_TAIL)).min(len);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_TAIL).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let mut last_err = None;
    let mut last_plain = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match serde_json::from_str::<Entry>(line) {
            Ok(e) if matches!(e.level.as_str(), "error" | "fatal" | "panic") => {
                last_err = Some(e.msg)
            }
            Ok(_) => {}
            Err(_) => last_plain = Some(line.to_string()),
        }
    }
    last_err.or(last_plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn picks_last_error_after_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let mut f = std::fs::File::create(&p).unwrap();
        writeln!(f, r#"{{"level":"error","msg":"old failure","time":"t"}}"#).unwrap();
        let off = offset(&p);
        writeln!(f, r#"{{"level":"warning","msg":"w","time":"t"}}"#).unwrap();
        writeln!(f, r#"{{"level":"error","msg":"first","time":"t"}}"#).unwrap();
        writeln!(f, r#"{{"level":"error","msg":"container_linux.go:380: starting container process caused: exec: \"nope\": executable file not found in $PATH","time":"t"}}"#).unwrap();
        let m = last_error_since(&p, off).unwrap();
        assert!(m.contains("executable file not found"), "{m}");
        assert_eq!(last_error_since(&p, offset(&p)), None);
        assert_eq!(last_error_since(&dir.path().join("missing"), 0), None);
    }

    #[test]
    fn plain_text_is_used_when_no_json_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        std::fs::write(&p, "something broke\n").unwrap();
        assert_eq!(last_error_since(&p, 0).as_deref(), Some("something broke"));
    }
}
