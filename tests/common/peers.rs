//! The upstream containerd releases the series tests run against ("peers": containerd 1.7,
//! 2.2 and 2.3 with their Go shims, and crictl), found through one setting and unpacked by the
//! tests themselves.
//!
//! `SHIMGATE_PEERS` names the directory holding the release archives, `SHA256SUMS` (over the
//! archives) and `CONTENTS.sha256` (over the unpacked files); it defaults to
//! `$CARGO_MANIFEST_DIR/../shared/peers`. The archives are checked, unpacked once into
//! `target/tmp/peers/<key>/` (the key is derived from `SHA256SUMS`, so new archives get a new
//! directory) and the unpacked files checked again before the directory is published by a
//! rename. Concurrency: test threads of one binary share a `OnceLock`; parallel test binaries
//! serialise on an exclusive `flock` of `target/tmp/peers/.lock`, and a half-unpacked tree is
//! never visible under its final name.
//!
//! Without the archives the series tests skip, saying so once per test binary on the real
//! stderr (not the captured test output); with `SHIMGATE_REQUIRE_PEERS=1` (CI) a missing or
//! corrupt peer fails the test instead.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::run_cmd;

/// Where the peer archives are looked for.
pub fn peers_source() -> PathBuf {
    match std::env::var_os("SHIMGATE_PEERS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers"),
    }
}

/// Whether a missing peer is a failure rather than a skip.
pub fn peers_required() -> bool {
    std::env::var("SHIMGATE_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// The unpacked, checked peers directory, or why there is none.
fn unpacked() -> &'static Result<PathBuf, String> {
    static U: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    U.get_or_init(|| unpack(&peers_source()))
}

/// The unpacked peers, or None (after one loud line) when they are missing and not required.
/// Panics when they are required (`SHIMGATE_REQUIRE_PEERS=1`) or present but corrupt.
pub fn peers() -> Option<&'static Path> {
    match unpacked() {
        Ok(p) => Some(p.as_path()),
        Err(why) if why.starts_with("missing:") && !peers_required() => {
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| {
                // The real stderr: a skip must be visible without --nocapture.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIP: containerd series peers not found ({}); series tests are skipped. \
                     Set SHIMGATE_PEERS to the peers directory; SHIMGATE_REQUIRE_PEERS=1 makes \
                     this a failure.",
                    why.trim_start_matches("missing:").trim()
                );
            });
            None
        }
        Err(why) => panic!(
            "containerd series peers unusable: {why} (SHIMGATE_PEERS={})",
            peers_source().display()
        ),
    }
}

/// A file inside the unpacked peers (`containerd-2.3.4/bin/ctr`), if peers are present.
pub fn peer_file(rel: &str) -> Option<PathBuf> {
    let p = peers()?.join(rel);
    assert!(p.is_file(), "peers lack {rel} (in {})", p.display());
    Some(p)
}

fn unpack(src: &Path) -> Result<PathBuf, String> {
    let sums = src.join("SHA256SUMS");
    let contents = src.join("CONTENTS.sha256");
    let Ok(sums_text) = std::fs::read_to_string(&sums) else {
        return Err(format!("missing: no {}", sums.display()));
    };
    if !contents.is_file() {
        return Err(format!("missing: no {}", contents.display()));
    }
    let key = &super::sha256_hex(sums_text.as_bytes())[..16];
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("peers");
    std::fs::create_dir_all(&base).map_err(|e| format!("mkdir {}: {e}", base.display()))?;
    let dest = base.join(key);
    if dest.join(".complete").exists() {
        return Ok(dest);
    }
    // Another test binary may be unpacking the same archives: wait for it, then look again.
    let lock = std::fs::File::create(base.join(".lock")).map_err(|e| format!("lock: {e}"))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("flock: {}", std::io::Error::last_os_error()));
    }
    if dest.join(".complete").exists() {
        return Ok(dest);
    }

    let sh = |args: &[&str], dir: &Path, what: &str| -> Result<(), String> {
        let out = run_cmd(
            Command::new(args[0]).args(&args[1..]).current_dir(dir),
            None,
            Duration::from_secs(600),
        );
        if out.code == 0 {
            Ok(())
        } else {
            Err(format!("{what}: {}", out.brief()))
        }
    };
    sh(
        &["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"],
        src,
        "archives do not match SHA256SUMS",
    )?;
    let tmp = base.join(format!(".{key}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("mkdir {}: {e}", tmp.display()))?;
    for line in sums_text.lines() {
        let Some(name) = line.split_whitespace().nth(1) else {
            continue;
        };
        let archive = src.join(name.trim_start_matches('*'));
        let archive = archive.display().to_string();
        sh(
            &["tar", "-xJf", &archive],
            &tmp,
            &format!("unpack {archive}"),
        )?;
    }
    let check = run_cmd(
        Command::new("sha256sum")
            .args(["--quiet", "--strict", "-c"])
            .arg(&contents)
            .current_dir(&tmp),
        None,
        Duration::from_secs(600),
    );
    if check.code != 0 {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!(
            "unpacked files do not match CONTENTS.sha256: {}",
            check.brief()
        ));
    }
    std::fs::write(tmp.join(".complete"), &sums_text).map_err(|e| e.to_string())?;
    // Under the lock nobody else publishes; an incomplete leftover would block the rename.
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| format!("publish {}: {e}", dest.display()))?;
    Ok(dest)
}
