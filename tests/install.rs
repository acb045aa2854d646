//! `shimgate install` / `uninstall` round trips, on throwaway trees only: a temporary prefix
//! for the rename path, and a temporary root with its own dpkg database (`dpkg --root`) for the
//! divert path, so the machine's /usr/bin and dpkg state are never touched.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const SHIMS: [&str; 3] = [
    "containerd-shim",
    "containerd-shim-runc-v1",
    "containerd-shim-runc-v2",
];

fn shimgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shimgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file that looks like a Go containerd shim to the content check.
fn fake_go_shim(path: &Path, tag: &str) {
    std::fs::write(
        path,
        format!("\x7fELF fake {tag} github.com/containerd/containerd/runtime/v2/shim\n"),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Everything in `dir` as (name, kind + content/target), for exact before/after comparisons.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link:{}", std::fs::read_link(e.path()).unwrap().display())
            } else {
                format!(
                    "file:{:o}:{}",
                    m.permissions().mode() & 0o7777,
                    shimgate_sha(&e.path())
                )
            };
            (e.file_name().to_string_lossy().into_owned(), what)
        })
        .collect();
    v.sort();
    v
}

fn shimgate_sha(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(p).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn rename_round_trip_in_a_temporary_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("bin");
    let state = tmp.path().join("state");
    std::fs::create_dir(&prefix).unwrap();
    // A Go v1 shim and runc.v1 shim as files, runc.v2 as a symlink to a Go shim elsewhere (as
    // some packages lay it out); an unrelated file stays untouched.
    fake_go_shim(&prefix.join("containerd-shim"), "v1");
    fake_go_shim(&prefix.join("containerd-shim-runc-v1"), "runc-v1");
    let elsewhere = tmp.path().join("go-runc-v2");
    fake_go_shim(&elsewhere, "runc-v2");
    symlink(&elsewhere, prefix.join("containerd-shim-runc-v2")).unwrap();
    std::fs::write(prefix.join("unrelated"), "x").unwrap();
    let before = snapshot(&prefix);
    let common = ["--prefix", s(&prefix), "--state-dir", s(&state)];

    // Dry run: says what it would do, changes nothing.
    let mut a = vec!["install", "--dry-run"];
    a.extend(common);
    let (code, out, err) = shimgate(&a);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("would") && out.contains("dry run"), "{out}");
    assert_eq!(snapshot(&prefix), before);
    assert!(!state.exists());

    // Install.
    let mut a = vec!["install"];
    a.extend(common);
    let (code, out, err) = shimgate(&a);
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    assert!(
        out.contains("keep     ") && out.contains("(rename)"),
        "{out}"
    );
    assert!(
        out.contains("relink   ") && out.contains("remembered"),
        "{out}"
    );
    let bin = prefix.join("shimgate");
    assert_eq!(
        shimgate_sha(&bin),
        shimgate_sha(Path::new(env!("CARGO_BIN_EXE_shimgate")))
    );
    for n in SHIMS {
        assert_eq!(
            std::fs::read_link(prefix.join(n)).unwrap(),
            PathBuf::from("shimgate"),
            "{n}"
        );
        // The installed names run as the shim they are named after.
        let v = Command::new(prefix.join(n)).arg("-v").output().unwrap();
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(text.contains("shimgate"), "{n}: {text}");
    }
    for n in ["containerd-shim", "containerd-shim-runc-v1"] {
        let kept = prefix.join(format!("{n}.shimgate-orig"));
        let want = before.iter().find(|(f, _)| f == n).unwrap();
        assert_eq!(
            snapshot(&prefix)
                .into_iter()
                .find(|(f, _)| *f == format!("{n}.shimgate-orig"))
                .unwrap()
                .1,
            want.1,
            "{kept:?} keeps the original exactly"
        );
    }
    let manifest = state.join(format!(
        "{}.json",
        std::fs::canonicalize(&prefix)
            .unwrap()
            .to_string_lossy()
            .trim_matches('/')
            .replace('/', "_")
    ));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let methods: Vec<&str> = m["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kept"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["nothing", "renamed", "renamed", "symlink"], "{m}");

    // Idempotent: a second install changes nothing.
    let installed = snapshot(&prefix);
    let (code, out, err) = shimgate(&a);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("ok       ").count(), 4, "{out}");
    assert_eq!(snapshot(&prefix), installed);

    // Uninstall restores exactly what was there, and removes its manifest.
    let mut u = vec!["uninstall"];
    u.extend(common);
    let (code, out, err) = shimgate(&u);
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    assert_eq!(snapshot(&prefix), before);
    assert!(!manifest.exists());
    // And again: nothing recorded, nothing to do.
    let (code, out, _) = shimgate(&u);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to do"), "{out}");
}

#[test]
fn refuses_unknown_files_without_force_and_keeps_them_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("bin");
    let state = tmp.path().join("state");
    std::fs::create_dir(&prefix).unwrap();
    std::fs::write(
        prefix.join("containerd-shim-runc-v2"),
        "#!/bin/sh\necho mine\n",
    )
    .unwrap();
    let before = snapshot(&prefix);
    let (code, out, err) = shimgate(&["install", "--prefix", s(&prefix), "--state-dir", s(&state)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("nothing changed") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(snapshot(&prefix), before, "a refusal touches nothing");

    // A kept name that is already taken is never overwritten, even with --force.
    std::fs::write(prefix.join("containerd-shim-runc-v2.shimgate-orig"), "old").unwrap();
    let (code, _, err) = shimgate(&[
        "install",
        "--force",
        "--prefix",
        s(&prefix),
        "--state-dir",
        s(&state),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("shimgate-orig exists already"), "{err}");
    std::fs::remove_file(prefix.join("containerd-shim-runc-v2.shimgate-orig")).unwrap();

    let (code, out, err) = shimgate(&[
        "install",
        "--force",
        "--prefix",
        s(&prefix),
        "--state-dir",
        s(&state),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(prefix.join("containerd-shim-runc-v2.shimgate-orig")).unwrap(),
        "#!/bin/sh\necho mine\n"
    );
    // A name changed behind install's back is left alone by uninstall (and reported).
    std::fs::remove_file(prefix.join("containerd-shim")).unwrap();
    std::fs::write(prefix.join("containerd-shim"), "someone else's").unwrap();
    let (code, out, _) = shimgate(&[
        "uninstall",
        "--prefix",
        s(&prefix),
        "--state-dir",
        s(&state),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("left     ") && out.contains("containerd-shim "),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(prefix.join("containerd-shim-runc-v2")).unwrap(),
        "#!/bin/sh\necho mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(prefix.join("containerd-shim")).unwrap(),
        "someone else's"
    );
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A root directory with a minimal dpkg database in which package `containerd-fake` owns the
/// three shims under /usr/bin.
fn fake_debian_root(root: &Path) {
    let admin = root.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info")).unwrap();
    std::fs::create_dir_all(admin.join("updates")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(admin.join("diversions"), "").unwrap();
    std::fs::write(
        admin.join("status"),
        "Package: containerd-fake\nStatus: install ok installed\nVersion: 1.6.20\n\
         Architecture: all\nMaintainer: test <t@example.invalid>\nDescription: fake\n\n",
    )
    .unwrap();
    let mut list = String::from("/.\n/usr\n/usr/bin\n");
    for n in SHIMS {
        list.push_str(&format!("/usr/bin/{n}\n"));
        fake_go_shim(&root.join("usr/bin").join(n), n);
    }
    std::fs::write(admin.join("info/containerd-fake.list"), list).unwrap();
}

#[test]
fn divert_round_trip_in_a_throwaway_dpkg_root() {
    if !have("dpkg-divert") || !have("dpkg-query") {
        eprintln!("SKIP: dpkg-divert/dpkg-query not installed (not a Debian host)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fake_debian_root(root);
    let before = snapshot(&root.join("usr/bin"));
    let (code, out, err) = shimgate(&["install", "--root", s(root), "--prefix", "/usr/bin"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    assert_eq!(
        out.matches("(dpkg-divert, package containerd-fake)")
            .count(),
        3,
        "{out}"
    );
    let diversions = std::fs::read_to_string(root.join("var/lib/dpkg/diversions")).unwrap();
    for n in SHIMS {
        assert!(
            diversions.contains(&format!("/usr/bin/{n}\n/usr/bin/{n}.shimgate-orig\n:\n")),
            "{diversions}"
        );
        assert_eq!(
            std::fs::read_link(root.join("usr/bin").join(n)).unwrap(),
            PathBuf::from("shimgate")
        );
    }
    // dpkg itself agrees: the package's file now lives at the kept name.
    let q = Command::new("dpkg-divert")
        .args([
            "--root",
            s(root),
            "--truename",
            "/usr/bin/containerd-shim-runc-v2",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&q.stdout).trim(),
        "/usr/bin/containerd-shim-runc-v2.shimgate-orig"
    );
    assert!(root.join("var/lib/shimgate/usr_bin.json").exists());

    let (code, out, err) = shimgate(&["uninstall", "--root", s(root), "--prefix", "/usr/bin"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    assert_eq!(snapshot(&root.join("usr/bin")), before);
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/dpkg/diversions")).unwrap(),
        "",
        "every diversion removed"
    );
    assert!(!root.join("var/lib/shimgate").exists());
}
