//! The tests' second build of this tree: `target/upgrade-next`, reporting [`NEXT_VERSION`] and
//! built with the `test-faults` feature (fault injection: `SHIMGATE_UPGRADE_FAULT`,
//! `SHIMGATE_TEST_FAULT`). The binary under test (`CARGO_BIN_EXE_shimgate`) is built without
//! it, like the binary operators run; the tests that need a fault use this one.
//! A test upgrades to it through [`super::root_safe`]: the shim runs only a binary that
//! nobody but root could have written, and `target/` may sit in a user's checkout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::run_cmd;

pub const NEXT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-next");

/// Build it (once per test binary; cargo rebuilds incrementally, the first build compiles the
/// dependencies once) and return its path.
pub fn next_binary() -> PathBuf {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("target/upgrade-next");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = run_cmd(
            Command::new(cargo)
                .current_dir(root)
                .args([
                    "build",
                    "--quiet",
                    "--bin",
                    "shimgate",
                    "--features",
                    "test-faults",
                    "--target-dir",
                ])
                .arg(&dir)
                .env("SHIMGATE_VERSION", NEXT_VERSION)
                .env("CARGO_PROFILE_DEV_DEBUG", "0"),
            None,
            Duration::from_secs(1200),
        );
        assert_eq!(out.code, 0, "build the next binary: {}", out.err());
        dir.join("debug/shimgate")
    })
    .clone()
}
