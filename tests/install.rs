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
    assert_eq!(code, 3, "refused, nothing changed: {out}{err}");
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
    assert_eq!(code, 3);
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

/// Errors of `instance` against the schema file `schema/<name>` (empty: valid).
fn schema_errors(name: &str, instance: &serde_json::Value) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(name);
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
    v.iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// `shimgate ... --json` printing one object per line: the objects, each checked against
/// schema/install.schema.json.
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            let errors = schema_errors("install.schema.json", &v);
            assert!(errors.is_empty(), "{errors:#?}\n{l}");
            v
        })
        .collect()
}

fn actions(v: &serde_json::Value) -> Vec<(String, String)> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap();
            let name = path.rsplit('/').next().unwrap().to_string();
            (name, e["action"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn install_json_says_what_changed_and_a_package_upgrade_over_a_renamed_name_is_shown_and_reapplied()
{
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("bin");
    let state = tmp.path().join("state");
    std::fs::create_dir(&prefix).unwrap();
    for n in SHIMS {
        fake_go_shim(&prefix.join(n), &format!("{n} 1.7.1"));
    }
    let before = snapshot(&prefix);
    let common = ["--prefix", s(&prefix), "--state-dir", s(&state), "--json"];
    let run = |cmd: &str| {
        let mut a = vec![cmd];
        a.extend(common);
        shimgate(&a)
    };

    let (code, out, err) = run("install");
    assert_eq!(code, 0, "{out}{err}");
    let v = json_lines(&out);
    assert_eq!(v.len(), 1, "{out}");
    assert_eq!(v[0]["result"], "done", "{out}");
    assert_eq!(
        actions(&v[0]),
        [
            ("shimgate".into(), "create".into()),
            ("containerd-shim".into(), "rename".into()),
            ("containerd-shim-runc-v1".into(), "rename".into()),
            ("containerd-shim-runc-v2".into(), "rename".into()),
        ]
    );
    // Again: everything already so.
    let (code, out, _) = run("install");
    assert_eq!(code, 0);
    let v = json_lines(&out);
    assert_eq!(v[0]["result"], "nothing-to-do", "{out}");
    assert!(v[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] == "none" && e["changed"] == false));

    // An RPM upgrade of containerd writes the new Go shim over our symlink (rpm renames its
    // new file over the name).
    let upgraded = prefix.join(".containerd-shim-runc-v2;6650a1b2");
    fake_go_shim(&upgraded, "containerd-shim-runc-v2 1.7.2");
    std::fs::rename(&upgraded, prefix.join("containerd-shim-runc-v2")).unwrap();
    let new_sha = shimgate_sha(&prefix.join("containerd-shim-runc-v2"));

    // doctor says so, about that file, with the step to re-apply.
    let doctor = Command::new(env!("CARGO_BIN_EXE_shimgate"))
        .args(["doctor", "--json", "--state-dir", s(&state)])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let errors = schema_errors("doctor.schema.json", &report);
    assert!(errors.is_empty(), "{errors:#?}");
    let name = prefix.join("containerd-shim-runc-v2").display().to_string();
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "install-overwritten")
        .unwrap_or_else(|| panic!("no install-overwritten in {report:#}"));
    assert_eq!(
        f["subject"],
        serde_json::json!({"kind": "file", "path": name})
    );
    assert_eq!(f["severity"], "warn");
    assert!(
        f["step"]
            .as_str()
            .unwrap()
            .starts_with(&format!("shimgate install --prefix {}", prefix.display())),
        "{f}"
    );
    let names = &report["installs"][0]["names"];
    let runc_v2 = names
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["path"] == name.as_str())
        .unwrap();
    assert_eq!(runc_v2["state"], "changed");
    assert_eq!(runc_v2["now"]["kind"], "go-containerd");

    // Re-applying keeps the newer file as the original and switches the name back.
    let (code, out, err) = run("install");
    assert_eq!(code, 0, "{out}{err}");
    let v = json_lines(&out);
    assert_eq!(
        actions(&v[0])[3],
        ("containerd-shim-runc-v2".into(), "rekeep".into()),
        "{out}"
    );
    assert_eq!(
        std::fs::read_link(prefix.join("containerd-shim-runc-v2")).unwrap(),
        PathBuf::from("shimgate")
    );
    assert_eq!(
        shimgate_sha(&prefix.join("containerd-shim-runc-v2.shimgate-orig")),
        new_sha
    );
    let doctor = Command::new(env!("CARGO_BIN_EXE_shimgate"))
        .args(["doctor", "--json", "--state-dir", s(&state)])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    assert!(
        !report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "install-overwritten"),
        "{report:#}"
    );

    // Uninstall puts the upgraded shim back, and the others as they were.
    let (code, out, err) = run("uninstall");
    assert_eq!(code, 0, "{out}{err}");
    let v = json_lines(&out);
    assert_eq!(v[0]["command"], "uninstall");
    assert_eq!(v[0]["result"], "done");
    let after = snapshot(&prefix);
    assert_eq!(
        shimgate_sha(&prefix.join("containerd-shim-runc-v2")),
        new_sha
    );
    let unchanged = |v: &[(String, String)]| {
        v.iter()
            .filter(|(n, _)| n != "containerd-shim-runc-v2")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(unchanged(&after), unchanged(&before));
    assert_eq!(after.len(), before.len());
}

fn dpkg_root(root: &Path, args: &[&str]) -> (i32, String) {
    // Maintainer scripts run on this host with DPKG_ROOT set (the throwaway root has no
    // shell or libc of its own to chroot into); the package's scripts honour DPKG_ROOT.
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
        ])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[allow(dead_code)]
#[path = "../examples/gen-docs.rs"]
mod gen_docs;

#[test]
fn deb_package_installs_switches_nothing_and_its_removal_restores_every_prefix() {
    if !have("dpkg-deb") || !have("dpkg-divert") {
        eprintln!("SKIP: dpkg not installed (not a Debian host)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Build the package the way CI's release would, from this build's binary.
    let docs = tmp.path().join("docs");
    gen_docs::generate(&docs).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-deb.sh");
    let out = Command::new(&script)
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_shimgate"),
            "--docs",
            s(&docs),
        ])
        .args(["--out", s(&tmp.path().join("out")), "--fast"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let contents = Command::new("dpkg-deb")
        .args(["-c", &deb])
        .output()
        .unwrap();
    let contents = String::from_utf8_lossy(&contents.stdout).into_owned();
    println!("{contents}");
    let mut want = vec![
        "./usr/bin/shimgate".to_string(),
        "./usr/share/bash-completion/completions/shimgate".into(),
        "./usr/share/zsh/vendor-completions/_shimgate".into(),
        "./usr/share/fish/vendor_completions.d/shimgate.fish".into(),
        "./usr/share/doc/shimgate/copyright".into(),
        "./usr/share/shimgate/schema/doctor.schema.json".into(),
    ];
    for page in [
        "shimgate",
        "shimgate-install",
        "shimgate-uninstall",
        "shimgate-doctor",
        "shimgate-upgrade",
        "shimgate-version",
    ] {
        want.push(format!("./usr/share/man/man1/{page}.1.gz"));
    }
    for w in &want {
        assert!(
            contents.lines().any(|l| l.ends_with(&format!(" {w}"))),
            "{w} not in the package:\n{contents}"
        );
    }
    // The completions know the commands.
    let bash = std::fs::read_to_string(docs.join("completions/shimgate.bash")).unwrap();
    assert!(
        bash.contains("uninstall") && bash.contains("--state-dir"),
        "{bash}"
    );

    let root = tmp.path().join("root");
    fake_debian_root(&root);
    // A second prefix with shims of their own (as k3s keeps in its data directory).
    let k3s = root.join("opt/k3s/bin");
    std::fs::create_dir_all(&k3s).unwrap();
    for n in SHIMS {
        fake_go_shim(&k3s.join(n), &format!("k3s {n}"));
    }
    let usr_bin = root.join("usr/bin");
    let before = (snapshot(&usr_bin), snapshot(&k3s));
    let shimgate_in_root = usr_bin.join("shimgate");

    for removal in ["--remove", "--purge"] {
        let (code, log) = dpkg_root(&root, &["--install", &deb]);
        assert_eq!(code, 0, "{log}");
        // Installing the package switches nothing.
        let mut with_binary = before.0.clone();
        with_binary.retain(|(n, _)| n != "shimgate");
        assert_eq!(
            snapshot(&usr_bin)
                .into_iter()
                .filter(|(n, _)| n != "shimgate")
                .collect::<Vec<_>>(),
            with_binary
        );
        assert!(shimgate_in_root.exists());
        assert!(!root.join("var/lib/shimgate").exists());

        // The operator switches both prefixes with the packaged binary.
        for prefix in ["/usr/bin", "/opt/k3s/bin"] {
            let out = Command::new(&shimgate_in_root)
                .args(["install", "--root", s(&root), "--prefix", prefix, "--json"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(out.status.code(), Some(0), "{text}{out:?}");
            let v = json_lines(&text);
            let want = if prefix == "/usr/bin" {
                "divert"
            } else {
                "rename"
            };
            assert_eq!(
                actions(&v[0])
                    .into_iter()
                    .filter(|(_, a)| a == want)
                    .count(),
                3,
                "{text}"
            );
        }
        for n in SHIMS {
            assert_eq!(
                std::fs::read_link(usr_bin.join(n)).unwrap(),
                PathBuf::from("shimgate")
            );
            assert_eq!(
                std::fs::read_link(k3s.join(n)).unwrap(),
                PathBuf::from("shimgate")
            );
        }

        // Removing (or purging) the package undoes both installs first.
        let (code, log) = dpkg_root(&root, &[removal, "shimgate"]);
        assert_eq!(code, 0, "{log}");
        println!("{removal}:\n{log}");
        assert!(log.contains("shimgate uninstall from /usr/bin"), "{log}");
        assert!(
            log.contains("shimgate uninstall from /opt/k3s/bin"),
            "{log}"
        );
        assert_eq!((snapshot(&usr_bin), snapshot(&k3s)), before, "{log}");
        assert_eq!(
            std::fs::read_to_string(root.join("var/lib/dpkg/diversions")).unwrap(),
            "",
            "every diversion removed"
        );
        assert!(!root.join("var/lib/shimgate").exists());
        let (_, status) = dpkg_root(&root, &["--status", "shimgate"]);
        let want = if removal == "--purge" {
            "not-installed"
        } else {
            "deinstall ok config-files"
        };
        assert!(
            status.contains(want) || (removal == "--purge" && status.contains("not installed")),
            "{status}"
        );
    }
}
