//! Unit tests of `startup/upgrade.rs`, kept beside it so the module reads as its job alone.

use super::*;
use crate::engine::handover::{ContainerSnap, ProcSnap};
use crate::io::{IoSnap, PumpSnap, SinkSnap};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn proc_snap(exec_id: Option<&str>, io: IoSnap) -> ProcSnap {
    ProcSnap {
        exec_id: exec_id.map(str::to_string),
        state: crate::engine::state::State::Running,
        pid: 1 << 30,
        exit: None,
        reaped_exit: None,
        stdio: Default::default(),
        spec: None,
        gate_counted: false,
        io,
    }
}

fn container(id: &str, init: ProcSnap, execs: Vec<ProcSnap>) -> ContainerSnap {
    ContainerSnap {
        id: id.into(),
        bundle: PathBuf::from("/nonexistent"),
        options: Default::default(),
        own_pidns: true,
        rootfs: vec![],
        rootfs_mounted: false,
        checkpoint: None,
        parent_checkpoint: None,
        work_dir: PathBuf::from("/nonexistent"),
        init_exited: false,
        oom_seen: None,
        init,
        execs,
    }
}

fn output(src: i32, fd: i32, keep: Option<i32>) -> PumpSnap {
    PumpSnap {
        src,
        sink: SinkSnap::Poll { fd, keep },
        pending: vec![],
    }
}

fn doc(containers: Vec<ContainerSnap>, server: ServerSnap, old: RawFd) -> Handover {
    Handover {
        format: FORMAT,
        written_by: "test".into(),
        personality: "containerd-shim-runc-v2".into(),
        quiesced_at_ns: 0,
        old_binary_fd: old,
        old_binary: String::new(),
        target: String::new(),
        rollback: None,
        server,
        core: CoreSnap {
            containers,
            tombstones: vec![],
        },
        events: vec![],
    }
}

/// Open descriptors to name in documents (kept open by the returned files).
fn open_fds(n: usize) -> (Vec<std::fs::File>, Vec<RawFd>) {
    let files: Vec<_> = (0..n)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let fds = files.iter().map(|f| f.as_raw_fd()).collect();
    (files, fds)
}

/// Every descriptor of a hand-over document has exactly one owner in the next image: one
/// named by two processes, by a process and the server, twice by the server, twice in one
/// process's IO in roles that do not share, or as stdio, is refused before anything is
/// adopted. The sharing one process IO really has (a pty master as a pump's source and
/// stdin's sink; one file as stdout and stderr) is accepted.
#[test]
fn a_document_naming_a_descriptor_for_two_owners_is_refused() {
    let (_keep, f) = open_fds(9);
    let server = |listener, conns: &[i32]| ServerSnap {
        listener,
        conns: conns
            .iter()
            .map(|fd| crate::api::server::ConnSnap {
                fd: *fd,
                ..Default::default()
            })
            .collect(),
    };
    let io = |outputs: Vec<PumpSnap>, keepalive: Option<i32>| IoSnap {
        outputs,
        stdin_keepalive: keepalive,
        ..Default::default()
    };
    // A good document: two processes, each its own descriptors; a tty-like sharing.
    let tty = IoSnap {
        outputs: vec![output(f[2], f[3], Some(f[4]))],
        stdin: Some(PumpSnap {
            src: f[5],
            sink: SinkSnap::Poll {
                fd: f[2],
                keep: None,
            },
            pending: vec![],
        }),
        master: Some(f[2]),
        ..Default::default()
    };
    let good = doc(
        vec![container(
            "a",
            proc_snap(None, io(vec![output(f[0], f[1], None)], None)),
            vec![proc_snap(Some("t"), tty.clone())],
        )],
        server(f[6], &[f[7]]),
        f[8],
    );
    good.check_fds().unwrap();
    let refused = |d: Handover, what: &str| {
        let e = d.check_fds().unwrap_err().to_string();
        assert!(e.contains("descriptor"), "{what}: {e}");
    };
    // The same descriptor in two containers' IO.
    refused(
        doc(
            vec![
                container(
                    "a",
                    proc_snap(None, io(vec![output(f[0], f[1], None)], None)),
                    vec![],
                ),
                container(
                    "b",
                    proc_snap(None, io(vec![output(f[0], f[3], None)], None)),
                    vec![],
                ),
            ],
            server(f[6], &[]),
            f[8],
        ),
        "two containers",
    );
    // An exec's keep-alive that is also a connection.
    refused(
        doc(
            vec![container(
                "a",
                proc_snap(None, io(vec![], None)),
                vec![proc_snap(Some("e"), io(vec![], Some(f[7])))],
            )],
            server(f[6], &[f[7]]),
            f[8],
        ),
        "process and server",
    );
    // The listener named as a connection too; a connection twice.
    refused(
        doc(vec![], server(f[6], &[f[6]]), f[8]),
        "listener as connection",
    );
    refused(
        doc(vec![], server(f[6], &[f[7], f[7]]), f[8]),
        "connection twice",
    );
    // Within one IO: a keep-alive that is also a FIFO keep (two owners of one descriptor).
    refused(
        doc(
            vec![container(
                "a",
                proc_snap(None, io(vec![output(f[0], f[1], Some(f[4]))], Some(f[4]))),
                vec![],
            )],
            server(f[6], &[]),
            f[8],
        ),
        "keep twice",
    );
    // Stdio, and the old binary's descriptor as a process's.
    refused(
        doc(
            vec![container(
                "a",
                proc_snap(None, io(vec![output(0, f[1], None)], None)),
                vec![],
            )],
            server(f[6], &[]),
            f[8],
        ),
        "stdio",
    );
    refused(
        doc(
            vec![container(
                "a",
                proc_snap(None, io(vec![output(f[0], f[8], None)], None)),
                vec![],
            )],
            server(f[6], &[]),
            f[8],
        ),
        "old binary",
    );
    // A closed descriptor is refused (checked by number, never borrowed).
    let closed = {
        let (files, fds) = open_fds(1);
        drop(files);
        fds[0]
    };
    refused(doc(vec![], server(closed, &[]), f[8]), "closed");
}

/// The two answers an `Upgrade` can get from the old binary carry different codes and
/// the texts operators have always read.
#[test]
fn refusals_and_rollbacks_are_told_apart() {
    let r = UpgradeError::from(Refused::ShuttingDown);
    assert_eq!(r.code(), ttrpc::Code::FAILED_PRECONDITION);
    assert_eq!(r.to_string(), "upgrade refused: the shim is shutting down");
    let b = UpgradeError::RolledBack {
        target: "/x".into(),
        version: "0.1.0".into(),
        why: AdoptError::Format(7).to_string(),
    };
    assert_eq!(b.code(), ttrpc::Code::ABORTED);
    assert_eq!(
        b.to_string(),
        "upgrade to /x failed, 0.1.0 serves on: hand-over format 7 is not one of [1]"
    );
    let lost = Lost::RollbackFailed(AdoptError::Format(7));
    assert_eq!(
        lost.to_string(),
        "rollback failed too: hand-over format 7 is not one of [1]"
    );
}

struct Nowhere;
impl crate::engine::event::EventSink for Nowhere {
    fn publish(&self, _e: crate::engine::event::Event) {}
}

fn upgrader() -> Upgrader {
    let reaper = crate::reaper::Reaper::new();
    reaper
        .start_polling_thread(Duration::from_millis(5))
        .unwrap();
    let spawner = Spawner::new(reaper);
    let core = Engine::new(
        crate::api::v1::profile(),
        "ns",
        spawner.clone(),
        Arc::new(crate::engine::RuncFactory {
            spawner: spawner.clone(),
            namespace: "ns".into(),
            deadlines: crate::engine::runc::Deadlines::from_env(),
        }),
        Arc::new(Nowhere),
    );
    let (queue, _rx) = crate::events::queue::queue();
    let (_tx, stop) = watch::channel(false);
    std::mem::forget(_tx);
    Upgrader::new(
        core,
        crate::api::server::Control::new(),
        queue,
        spawner,
        "containerd-shim-runc-v2",
        stop,
    )
}

fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// An upgrade whose request goes away half-way (here: its future is dropped while the
/// preflight runs; a panicking handler ends the same way) does not leave "an upgrade is
/// in progress" behind.
#[test]
fn an_abandoned_upgrade_does_not_block_the_next() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let slow = script(dir.path(), "slow", "sleep 5", 0o755);
        let u = upgrader();
        let slow = slow.display().to_string();
        let abandoned = tokio::time::timeout(
            Duration::from_millis(300),
            u.upgrade(&slow, DEFAULT_QUIESCE),
        )
        .await;
        assert!(abandoned.is_err(), "the preflight should still be running");
        let r = u.upgrade("/nonexistent/shimgate", DEFAULT_QUIESCE).await;
        assert!(
            matches!(r, Refused::Target(TargetError::Open { .. })),
            "{r:?}"
        );
        assert!(r.to_string().contains("/nonexistent/shimgate"), "{r}");
    });
}

/// An upgrade whose request goes away while the server is quiesced (waiting for a
/// request to finish) leaves the server serving, not quiesced for ever.
#[test]
fn an_upgrade_abandoned_while_quiescing_resumes_the_server() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ok = script(
            dir.path(),
            "ok",
            "echo '{\"version\":\"9\",\"formats\":[1]}'",
            0o755,
        );
        let u = upgrader();
        let busy = u.server.busy_for_test();
        let ok = ok.display().to_string();
        let abandoned = tokio::time::timeout(
            Duration::from_millis(1500),
            u.upgrade(&ok, Duration::from_secs(30)),
        )
        .await;
        assert!(abandoned.is_err(), "the quiesce should still be waiting");
        let e = u
            .server
            .quiesce(Duration::from_millis(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("still running"), "{e}");
        drop(busy);
        u.server.quiesce(Duration::from_millis(100)).await.unwrap();
    });
}

/// What the shim refuses to become (it would run it as root): a file others can write, or
/// in a directory others can write to, not owned by root, inside a container's bundle;
/// and what the preflight runs is the file it opened, not whatever the path names later.
#[test]
fn targets_others_could_have_written_are_refused_and_the_checked_file_runs() {
    let dir = tempfile::tempdir().unwrap();
    let answer = |v: &str| format!("echo '{{\"version\":\"{v}\",\"formats\":[1]}}'");
    let ok = script(dir.path(), "ok", &answer("checked"), 0o755);
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let refusals = [
        (
            script(dir.path(), "gw", &answer("x"), 0o775),
            "written by others",
        ),
        (
            script(dir.path(), "ow", &answer("x"), 0o757),
            "written by others",
        ),
        (
            script(&bundle, "inside", &answer("x"), 0o755),
            "inside the bundle",
        ),
        (
            script(dir.path(), "noexec", &answer("x"), 0o644),
            "not executable",
        ),
        (dir.path().to_path_buf(), "not a regular file"),
    ];
    for (p, why) in &refusals {
        let e = open_target(p, std::slice::from_ref(&bundle))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(why), "{}: {e}", p.display());
    }
    let owned = script(dir.path(), "owned", &answer("x"), 0o755);
    std::os::unix::fs::chown(&owned, Some(1000), None).unwrap();
    let e = open_target(&owned, &[]).err();
    assert!(
        matches!(e, Some(TargetError::NotRoot { uid: 1000, .. })),
        "{e:?}"
    );
    assert!(e
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("not root"));
    let open_dir = dir.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = open_target(&script(&open_dir, "t", &answer("x"), 0o755), &[])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("directory"), "{e}");
    // A sticky world-writable directory (like /tmp) is fine: nobody else can replace
    // root's entries in it.
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    open_target(&open_dir.join("t"), &[]).unwrap();

    // Checked once, run as checked: swapping the path afterwards changes nothing.
    let target = open_target(&ok, std::slice::from_ref(&bundle)).unwrap();
    let swapped = script(dir.path(), "other", &answer("swapped"), 0o755);
    std::fs::rename(&swapped, &ok).unwrap();
    let version = rt()
        .block_on(async { upgrader().preflight(&target).await })
        .unwrap();
    assert_eq!(version, "checked");
}
