//! The `containerd-shim` process itself: its command line (run as that name, no root needed),
//! and its signal handling under a real containerd, next to the Go shim in the same run.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// shimgate under the name `containerd-shim` in a temp dir.
fn as_containerd_shim(dir: &Path) -> PathBuf {
    let p = dir.join("containerd-shim");
    std::os::unix::fs::symlink(shimgate_bin(), &p).unwrap();
    p
}

fn run(bin: &Path, args: &[&str]) -> Out {
    run_cmd(Command::new(bin).args(args), None, Duration::from_secs(10))
}

#[test]
fn version_flag_errors_and_refusals() {
    let d = tempfile::tempdir().unwrap();
    let shim = as_containerd_shim(d.path());

    let v = run(&shim, &["-v"]);
    assert_eq!(v.code, 0, "{}", v.brief());
    let text = v.text();
    assert!(text.starts_with("containerd-shim\n  Version:  "), "{text}");
    assert!(text.contains("\n  Revision: "), "{text}");

    // Unknown flags: Go's flag package wording, usage, exit 2.
    for bad in [&["-id", "c1"][..], &["-x"]] {
        let r = run(&shim, bad);
        assert_eq!(r.code, 2, "{}", r.brief());
        assert!(
            r.err().starts_with("flag provided but not defined: -"),
            "{}",
            r.brief()
        );
        assert!(r.err().contains("Usage of containerd-shim:"));
    }
    // The flag containerd 1.3-1.6 pass although the Go shim does not define it.
    let r = run(
        &shim,
        &["-namespace", "default", "-criu-path", "/usr/sbin/criu"],
    );
    assert!(!r.err().contains("not defined"), "{}", r.brief());

    // No namespace.
    let r = run(&shim, &[]);
    assert_eq!(
        (r.code, r.err().as_str()),
        (1, "containerd-shim: shim namespace cannot be empty\n")
    );

    // An abstract socket (what containerd < 1.3.9 / 1.4.3 asked for) is refused, with the way out.
    let r = run(
        &shim,
        &[
            "-namespace",
            "default",
            "-socket",
            "/containerd-shim/default/c1/shim.sock",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.brief());
    for needle in [
        "abstract",
        "1.3.9",
        "1.4.3",
        "-allow-abstract-socket",
        "unix:///",
    ] {
        assert!(r.err().contains(needle), "{needle}: {}", r.err());
    }
}

#[test]
fn serves_a_socket_file_and_logs_to_the_workdir_fifo_until_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let shim = as_containerd_shim(d.path());
    let sock = d.path().join("s.sock");
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut child = spawn(
        Command::new(&shim)
            .args(["-namespace", "default", "-debug", "-workdir"])
            .arg(&work)
            .arg("-socket")
            .arg(format!("unix://{}", sock.display()))
            .current_dir(d.path()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "shim never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The log FIFO carries logrus lines (we are its only reader).
    let fifo = work.join("shim.stdout.log");
    let mut log = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    // SAFETY: signalling the shim this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "shim ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut log, &mut text);
    assert!(text.contains("level=info msg=\"shim serving\""), "{text}");
    assert!(text.contains("namespace=default"), "{text}");
    assert!(
        !sock.exists(),
        "the socket file we bound is removed at exit"
    );
}

/// SIGTERM to the shim of a running task: nothing of the container survives, and containerd's
/// own cleanup after the dead shim completes.
fn sigterm_under_containerd(which: Shims) {
    let Some(c) = Ctd::start_with(which) else {
        return;
    };
    let id = c.id("term");
    c.run_detached(V1_LINUX, &id, &[], &["sh", "-c", "sleep 300 & sleep 301"]);
    let init = c.tasks()[&id].0;
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let shim = shims[0];
    let ps = c.ctr(&["task", "ps", &id]).text();
    let pids: Vec<u32> = ps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    // SAFETY: signalling the shim of this test's container.
    unsafe {
        libc::kill(shim as i32, libc::SIGTERM);
    }
    let alive = |p: u32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        reap_orphans();
        let gone = !alive(shim) && !alive(init) && pids.iter().all(|p| !alive(*p));
        let state = PathBuf::from("/run/containerd/runc")
            .join(&c.ns)
            .join(&id)
            .exists();
        let task = c.tasks().get(&id).cloned();
        let stopped = match &task {
            None => true,
            Some(t) => t.1 == "STOPPED",
        };
        if gone && !state && stopped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{which:?}: after SIGTERM shim alive {} init alive {} runc state {state} task {task:?}",
            alive(shim),
            alive(init)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.ctr(&["task", "rm", "-f", &id]);
    assert_eq!(c.ctr(&["c", "rm", &id]).code, 0);
    c.assert_clean();
}

#[test]
fn sigterm_kills_the_container_like_the_go_shim() {
    sigterm_under_containerd(Shims::Ours);
    if go_shim("containerd-shim").is_some() {
        sigterm_under_containerd(Shims::Go);
    } else {
        peer_missing("the Go containerd-shim");
    }
}

/// With `-allow-abstract-socket` any process in the host's network namespace can connect,
/// root in a host-network container included: the shimgate Admin service (live upgrade runs
/// a program as host root) answers nobody there. The Task API is served as before.
#[test]
fn admin_is_refused_on_an_abstract_socket() {
    use shimgate::protos::admin::{InfoRequest, UpgradeRequest};
    use std::os::linux::net::SocketAddrExt;
    if !prerequisites() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let shim = as_containerd_shim(d.path());
    let name = format!("shimgate-test-abstract-{}", std::process::id());
    let marker = d.path().join("target-ran");
    let target = d.path().join("target");
    std::fs::write(&target, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let child = spawn(
        Command::new(&shim)
            .args(["-namespace", "default", "-allow-abstract-socket", "-socket"])
            .arg(&name)
            .current_dir(d.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect_addr(&addr) {
            break s;
        }
        assert!(Instant::now() < deadline, "shim never listened");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut raw = raw_ttrpc::Raw::over(stream, Duration::from_secs(20));
    let info = raw.call("shimgate.admin.v1.Admin", "Info", &InfoRequest::default());
    let up = raw.call(
        "shimgate.admin.v1.Admin",
        "Upgrade",
        &UpgradeRequest {
            binary: target.display().to_string(),
            ..Default::default()
        },
    );
    // The legacy API still answers on the same connection.
    let state = raw.call(
        "containerd.runtime.linux.shim.v1.Shim",
        "State",
        &shimgate::protos::shim_v1::StateRequest::default(),
    );
    // SAFETY: signalling the shim this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let (_, timed_out) = finish(child, Duration::from_secs(10));
    assert!(!timed_out);
    for (what, r) in [("Info", &info), ("Upgrade", &up)] {
        assert_eq!(r.code, 7, "{what}: {} {}", r.code, r.message); // PERMISSION_DENIED
        assert!(r.message.contains("abstract"), "{what}: {}", r.message);
    }
    assert!(!marker.exists(), "the upgrade target was run");
    assert_ne!(state.code, 12, "the shim API is served: {}", state.message);
}
