//! Hostile input, sent straight to a live shim's socket next to a real running task: bad ids,
//! bundles outside containerd's, options of the wrong type, many idle connections. Each gets
//! the right status code, nothing is created outside the shim's own dirs, and the real task
//! keeps being served.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::raw_ttrpc::{Raw, Reply};
use common::*;
use shimgate::protos::task::*;
use shimgate::protos::Any;

const INVALID_ARGUMENT: i32 = 3;

/// Everything under `dirs`, to compare before and after.
fn snapshot(dirs: &[PathBuf]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in dirs {
        let mut stack = vec![d.clone()];
        while let Some(p) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    out.insert(e.path().display().to_string());
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
        }
    }
    out
}

const BAD_IDS: &[&str] = &[
    "../escape",
    "a/b",
    "..",
    "with\0nul",
    "ctrl\u{7}char",
    "new\nline",
    " space",
    "ü",
    "-leading",
];

#[test]
fn hostile_requests_are_refused_and_the_real_task_keeps_running() {
    let Some(c) = Ctd::start() else { return };
    let id = c.id("real");
    c.run_detached(RUNC_V2, &id, &[], &["sleep", "300"]);
    let addr = std::fs::read_to_string(c.bundle(&id).join("address")).unwrap();
    let sock = PathBuf::from(addr.trim().strip_prefix("unix://").unwrap());
    let watched = vec![
        PathBuf::from("/run/containerd/runc").join(&c.ns),
        c.dir.join("state"),
        PathBuf::from("/tmp").join("shimgate-hostile-target"),
    ];
    let before = snapshot(&watched);
    let mut w = Raw::connect(&sock, Duration::from_secs(20));

    let long = "x".repeat(200);
    let mut ids: Vec<&str> = BAD_IDS.to_vec();
    ids.push(&long);
    let good_bundle = c.bundle(&id).display().to_string();
    for bad in &ids {
        let create = CreateTaskRequest {
            id: bad.to_string(),
            bundle: good_bundle.clone(),
            ..Default::default()
        };
        let Reply {
            code, message: msg, ..
        } = w.task("Create", &create);
        assert_eq!(code, INVALID_ARGUMENT, "Create id {bad:?}: {msg}");
        for method in ["State", "Kill", "Delete", "Start", "Wait"] {
            let st = StateRequest {
                id: bad.to_string(),
                ..Default::default()
            };
            let Reply {
                code, message: msg, ..
            } = w.task(method, &st);
            assert_eq!(code, INVALID_ARGUMENT, "{method} id {bad:?}: {msg}");
        }
        let exec = ExecProcessRequest {
            id: id.clone(),
            exec_id: bad.to_string(),
            spec: Some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: br#"{"args":["true"],"cwd":"/"}"#.to_vec(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let Reply {
            code, message: msg, ..
        } = w.task("Exec", &exec);
        assert_eq!(code, INVALID_ARGUMENT, "Exec id {bad:?}: {msg}");
    }

    // Bundles anywhere but where containerd keeps them.
    let parent = c.bundle(&id).parent().unwrap().display().to_string();
    for bundle in [
        "/etc".to_string(),
        "relative/bundle".to_string(),
        format!("{parent}/../../../../../tmp/shimgate-hostile-target"),
        "/tmp/shimgate-hostile-target/new1".to_string(),
    ] {
        let create = CreateTaskRequest {
            id: "new1".into(),
            bundle: bundle.clone(),
            stdout: "/tmp/shimgate-hostile-target/out".into(),
            ..Default::default()
        };
        let Reply {
            code, message: msg, ..
        } = w.task("Create", &create);
        assert_eq!(code, INVALID_ARGUMENT, "bundle {bundle}: {msg}");
    }

    // Options of the wrong type.
    let create = CreateTaskRequest {
        id: "new2".into(),
        bundle: format!("{parent}/new2"),
        options: Some(Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: b"\x0a\x03abc".to_vec(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let Reply {
        code, message: msg, ..
    } = w.task("Create", &create);
    assert_eq!(code, INVALID_ARGUMENT, "options: {msg}");
    let upd = UpdateTaskRequest {
        id: id.clone(),
        resources: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: b"not json".to_vec(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let Reply { code, .. } = w.task("Update", &upd);
    assert_ne!(code, 0, "garbage resources must fail");

    // Nothing appeared anywhere.
    assert_eq!(snapshot(&watched), before, "hostile requests created files");

    // And the real task is still served, on this connection and a new one.
    let st = StateRequest {
        id: id.clone(),
        ..Default::default()
    };
    assert_eq!(w.task("State", &st).code, 0);
    let e = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "ok",
        &id,
        "sh",
        "-c",
        "echo fine",
    ]);
    assert!(e.code == 0 && e.stdout == b"fine\n", "{}", e.brief());
    c.assert_clean();
}

#[test]
fn many_idle_connections_do_not_stop_the_shim_from_serving() {
    let Some(c) = Ctd::start() else { return };
    let id = c.id("idle");
    c.run_detached(RUNC_V2, &id, &[], &["sleep", "300"]);
    let addr = std::fs::read_to_string(c.bundle(&id).join("address")).unwrap();
    let sock = PathBuf::from(addr.trim().strip_prefix("unix://").unwrap());
    let idle: Vec<UnixStream> = (0..600)
        .filter_map(|_| UnixStream::connect(&sock).ok())
        .collect();
    assert!(idle.len() >= 500, "only {} connections", idle.len());
    // A half-written frame on some of them: the shim must not wait for the rest.
    for s in idle.iter().take(100) {
        let mut s = s;
        let _ = s.write_all(&[0, 0, 0, 50, 0, 0, 0, 1, 1]);
    }
    let t = Instant::now();
    let mut w = Raw::connect(&sock, Duration::from_secs(20));
    let Reply {
        code, message: msg, ..
    } = w.task(
        "State",
        &StateRequest {
            id: id.clone(),
            ..Default::default()
        },
    );
    assert_eq!(code, 0, "{msg}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "State took {:?}",
        t.elapsed()
    );
    let e = c.ctr(&["task", "exec", "--exec-id", "x", &id, "true"]);
    assert_eq!(e.code, 0, "{}", e.brief());
    drop(idle);
    c.assert_clean();
}

#[test]
fn start_refuses_hostile_ids_and_namespaces_before_touching_anything() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("containerd-shim-runc-v2");
    std::os::unix::fs::symlink(shimgate_bin(), &bin).unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let before = snapshot(&[PathBuf::from("/run/containerd/s")]);
    for (ns, id) in [
        ("../x", "a"),
        ("default", "../../etc"),
        ("default", "a/b"),
        ("de\nfault", "a"),
    ] {
        let out = run_cmd(
            std::process::Command::new(&bin)
                .args([
                    "-namespace",
                    ns,
                    "-address",
                    "/run/nowhere.sock",
                    "-publish-binary",
                    "/bin/true",
                ])
                .args(["-id", id, "start"])
                .current_dir(dir.path()),
            None,
            Duration::from_secs(10),
        );
        assert_eq!(out.code, 1, "{ns:?}/{id:?}: {}", out.brief());
        assert!(out.err().contains("invalid argument"), "{}", out.brief());
        assert!(!dir.path().join("address").exists());
    }
    assert_eq!(snapshot(&[PathBuf::from("/run/containerd/s")]), before);
}
