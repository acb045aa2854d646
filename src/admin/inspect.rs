//! Looking at executables without running them: is this file shimgate (and which version), a
//! Go containerd shim, or something else? Used by `install` to decide what it may replace and by
//! `doctor` to name the binary behind each running shim. Reading the file is enough: every
//! shimgate build embeds [`crate::BINARY_MARKER`], and every Go containerd binary embeds its
//! module path.

use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// What an executable is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BinaryKind {
    /// A shimgate build of this version.
    Shimgate { version: String },
    /// A Go binary built from containerd's source tree (the Go shims, containerd itself).
    GoContainerd,
    /// Anything else (another shim, a script, an unreadable file).
    Other,
}

impl BinaryKind {
    pub fn describe(&self) -> String {
        match self {
            BinaryKind::Shimgate { version } => format!("shimgate {version}"),
            BinaryKind::GoContainerd => "Go containerd shim".to_string(),
            BinaryKind::Other => "unknown".to_string(),
        }
    }
}

/// Executables are read whole; shims are ~5-15 MB. Anything larger is not a shim we know.
const MAX_READ: u64 = 256 << 20;

fn read_capped(path: &Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_READ).read_to_end(&mut buf).ok()?;
    Some(buf)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(off) = hay.get(from..)?.iter().position(|b| *b == first) {
        let at = from + off;
        if hay.get(at..at + needle.len()) == Some(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The shimgate marker's prefix, without this build's version (any version counts).
fn marker_prefix() -> &'static str {
    // BINARY_MARKER is "shimgate-binary-marker/<version>/".
    crate::BINARY_MARKER
        .split_once('/')
        .map_or(crate::BINARY_MARKER, |(p, _)| p)
}

/// Classify the bytes of an executable.
pub fn classify_bytes(data: &[u8]) -> BinaryKind {
    let prefix = format!("{}/", marker_prefix());
    if let Some(at) = find(data, prefix.as_bytes()) {
        let rest = &data[at + prefix.len()..];
        let version: String = rest
            .iter()
            .take(64)
            .take_while(|b| **b != b'/')
            .map(|b| *b as char)
            .collect();
        return BinaryKind::Shimgate { version };
    }
    // Builds from before the marker existed still carry their `-v` text.
    if find(data, b"Implementation: shimgate (Rust)").is_some() {
        return BinaryKind::Shimgate {
            version: "(version unknown: an early build)".to_string(),
        };
    }
    if find(data, b"github.com/containerd/containerd").is_some() {
        return BinaryKind::GoContainerd;
    }
    BinaryKind::Other
}

/// Classify the file at `path` (follows symlinks; `/proc/<pid>/exe` works too).
pub fn classify(path: &Path) -> BinaryKind {
    read_capped(path).map_or(BinaryKind::Other, |d| classify_bytes(&d))
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_marker_go_and_other() {
        let mut bin = b"\x7fELF....".to_vec();
        bin.extend_from_slice(crate::BINARY_MARKER.as_bytes());
        bin.extend_from_slice(b"\0more");
        assert_eq!(
            classify_bytes(&bin),
            BinaryKind::Shimgate {
                version: crate::VERSION.to_string()
            }
        );
        assert_eq!(
            classify_bytes(b"xx github.com/containerd/containerd/runtime/v2/shim yy"),
            BinaryKind::GoContainerd
        );
        assert_eq!(classify_bytes(b"#!/bin/sh\necho hi\n"), BinaryKind::Other);
        assert_eq!(classify_bytes(b""), BinaryKind::Other);
    }

    #[test]
    fn find_handles_partial_matches() {
        assert_eq!(find(b"aaab", b"ab"), Some(2));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"", b"a"), None);
    }

    #[test]
    fn this_test_binary_is_not_mistaken_for_a_shim() {
        // The test binary links the library (so it carries the marker); classification of a
        // real file goes through the same path as the doctor's /proc/<pid>/exe reads.
        let me = std::env::current_exe().unwrap();
        assert!(matches!(classify(&me), BinaryKind::Shimgate { .. }));
        assert_eq!(classify(Path::new("/nonexistent/x")), BinaryKind::Other);
    }
}
