//! Looking a program up in `$PATH` as containerd does (Go's `exec.LookPath`: the first regular
//! file with an execute bit; an empty element is skipped here, not read as the current
//! directory). Used by the live upgrade (where containerd found the shim it
//! started by bare name) and by the operator tool (containerd, rpm), so it sits below both.

use std::path::PathBuf;

/// The first executable named `tool` in $PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    which_in(&std::env::var("PATH").unwrap_or_default(), tool)
}

/// The first executable named `tool` in a PATH-style list.
pub fn which_in(path: &str, tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_in_finds_executables_only() {
        assert!(which_in("/nonexistent:/bin:/usr/bin", "sh").is_some());
        assert!(which_in("/etc", "passwd").is_none());
    }
}
