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

/// The shim's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A request frame (`timeout_nano` 0: none).
fn request_frame(
    stream: u32,
    service: &str,
    method: &str,
    payload: &[u8],
    timeout_nano: i64,
) -> Vec<u8> {
    use protobuf::Message;
    let body = ttrpc::Request {
        service: service.into(),
        method: method.into(),
        payload: payload.to_vec(),
        timeout_nano,
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap();
    let mut f = Vec::with_capacity(10 + body.len());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(&[1, 0]);
    f.extend_from_slice(&body);
    f
}

/// The shim's socket and pid for a runc.v2 container `id`.
fn shim_of(c: &Ctd, id: &str) -> (PathBuf, u32) {
    let addr = std::fs::read_to_string(c.bundle(id).join("address")).unwrap();
    let sock = PathBuf::from(addr.trim().strip_prefix("unix://").unwrap());
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    (sock, shims[0])
}

/// `State` of `id` on a fresh connection: how long it took.
fn state_latency(sock: &std::path::Path, id: &str) -> Duration {
    let t = Instant::now();
    let mut w = Raw::connect(sock, Duration::from_secs(20));
    let r = w.task(
        "State",
        &StateRequest {
            id: id.to_string(),
            ..Default::default()
        },
    );
    assert_eq!(r.code, 0, "{}", r.message);
    t.elapsed()
}

/// A peer that sends requests and never reads the answers: the shim stops reading from it
/// once its answers and requests in flight reach their budgets, instead of queueing answers
/// without bound; its memory stays bounded and other clients are served meanwhile. (Each
/// request names a 64 KiB unknown service, so each answer, which repeats it, is 64 KiB.)
#[test]
fn a_peer_that_never_reads_cannot_grow_the_shim() {
    use std::os::fd::AsRawFd;
    let Some(c) = Ctd::start() else { return };
    let id = c.id("noread");
    c.run_detached(RUNC_V2, &id, &[], &["sleep", "300"]);
    let (sock, shim) = shim_of(&c, &id);
    let before = rss_kib(shim);
    let peer = UnixStream::connect(&sock).unwrap();
    peer.set_nonblocking(true).unwrap();
    let service = "x".repeat(64 << 10);
    let mut sent = 0u64;
    let mut stream = 1u32;
    let mut frame = request_frame(stream, &service, "M", b"", 0);
    let mut off = 0;
    let mut stalled_since: Option<Instant> = None;
    let started = Instant::now();
    // Until the shim has stopped reading for 2 s, or 256 MiB of answers were asked for.
    while sent < 4096 && started.elapsed() < Duration::from_secs(60) {
        match (&peer).write(&frame[off..]) {
            Ok(n) => {
                stalled_since = None;
                off += n;
                if off == frame.len() {
                    sent += 1;
                    stream += 2;
                    frame = request_frame(stream, &service, "M", b"", 0);
                    off = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(2) {
                    break;
                }
                let mut pfd = libc::pollfd {
                    fd: peer.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: poll on one descriptor we own, with a 50 ms timeout.
                unsafe { libc::poll(&mut pfd, 1, 50) };
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let grown = rss_kib(shim).saturating_sub(before);
    let latency = state_latency(&sock, &id);
    eprintln!(
        "never-reading peer: {sent} requests taken ({} MiB of answers asked for), shim RSS +{} MiB, \
         State on another connection {latency:?}",
        sent * 64 / 1024,
        grown / 1024
    );
    assert!(
        sent < 4096,
        "the shim kept reading from a peer that never reads"
    );
    assert!(grown < 96 << 10, "shim RSS grew by {} MiB", grown / 1024);
    assert!(latency < Duration::from_secs(1), "State took {latency:?}");
    drop(peer);
    let e = c.ctr(&["task", "exec", "--exec-id", "x", &id, "true"]);
    assert_eq!(e.code, 0, "{}", e.brief());
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    assert_eq!(c.ctr(&["task", "rm", &id]).code, 0);
    c.ctr(&["c", "rm", &id]);
    c.assert_clean();
}

/// A flood of requests with a 1 ns deadline, each of which makes a runtime call (`Pids`: `runc
/// ps`, slowed to 3 s by a wrapper): each is answered DEADLINE_EXCEEDED at once, but its
/// runtime call goes on, and it keeps counting against the connection's in-flight limit until
/// it ends. So the runtime calls running at once stay bounded (64 per connection), and other
/// clients are served meanwhile.
#[test]
fn deadline_floods_cannot_start_unbounded_runtime_calls() {
    let Some(c) = Ctd::start() else { return };
    let runc = which("runc").expect("runc");
    let wrapper = c.shims.join("runc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = ps ] && sleep 3 && break; done\nexec {} \"$@\"\n",
            runc.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let id = c.id("flood");
    c.run_detached(RUNC_V2, &id, &[], &["sleep", "300"]);
    let (sock, shim) = shim_of(&c, &id);
    let before = rss_kib(shim);
    const N: u32 = 300;
    use protobuf::Message;
    let payload = PidsRequest {
        id: id.clone(),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap();
    let peer = UnixStream::connect(&sock).unwrap();
    let reader = {
        let mut r = peer.try_clone().unwrap();
        r.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut codes = std::collections::BTreeMap::new();
            for _ in 0..N {
                let mut hdr = [0u8; 10];
                if r.read_exact(&mut hdr).is_err() {
                    break;
                }
                let len = u32::from_be_bytes(hdr[0..4].try_into().unwrap()) as usize;
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                let resp = ttrpc::Response::parse_from_bytes(&body).unwrap();
                *codes.entry(resp.status.code.value()).or_insert(0u32) += 1;
            }
            codes
        })
    };
    let writer = std::thread::spawn({
        let payload = payload.clone();
        let mut w = peer.try_clone().unwrap();
        move || {
            for i in 0..N {
                let f = request_frame(2 * i + 1, "containerd.task.v2.Task", "Pids", &payload, 1);
                if w.write_all(&f).is_err() {
                    break;
                }
            }
        }
    });
    // Count the runtime calls running (the wrapper's shells under the shim) for a while.
    let mut most = 0;
    let mut slowest = Duration::ZERO;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) {
        let running = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                let pid = e.file_name().to_string_lossy().to_string();
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|x| x.1.split_whitespace().nth(1).map(str::to_string));
                ppid.as_deref() == Some(&shim.to_string())
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains("\0ps\0"))
                        .unwrap_or(false)
            })
            .count();
        most = most.max(running);
        if t.elapsed() > Duration::from_secs(1) {
            slowest = slowest.max(state_latency(&sock, &id));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let grown = rss_kib(shim).saturating_sub(before);
    let _ = writer.join();
    let codes = reader.join().unwrap();
    eprintln!(
        "timeout_nano=1 flood of {N} Pids: at most {most} runtime calls at once, answers {codes:?}, \
         shim RSS +{} MiB, State on another connection at most {slowest:?}",
        grown / 1024
    );
    assert!(most <= 64, "{most} runtime calls at once");
    assert!(slowest < Duration::from_secs(1), "State took {slowest:?}");
    assert!(grown < 64 << 10, "shim RSS grew by {} MiB", grown / 1024);
    // Every request was answered (DEADLINE_EXCEEDED = 4), none lost.
    assert_eq!(codes.values().sum::<u32>(), N, "{codes:?}");
    drop(peer);
    // Let the background calls finish before the container goes.
    std::thread::sleep(Duration::from_secs(4));
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(30)));
    assert_eq!(c.ctr(&["task", "rm", &id]).code, 0);
    c.ctr(&["c", "rm", &id]);
    c.assert_clean();
}

/// `Wait`s are parked for as long as their process lives, each holding its request: a flood
/// of them padded to 32 KiB each (an unknown field, which decoding keeps) is refused with
/// RESOURCE_EXHAUSTED once the parked budget is used up, instead of held without bound; other
/// clients are served, and an ordinary `Wait` still works afterwards.
#[test]
fn parked_waits_are_bounded() {
    use protobuf::Message;
    let Some(c) = Ctd::start() else { return };
    let id = c.id("waits");
    c.run_detached(RUNC_V2, &id, &[], &["sleep", "300"]);
    let (sock, shim) = shim_of(&c, &id);
    let before = rss_kib(shim);
    let mut payload = WaitRequest {
        id: id.clone(),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap();
    // Field 15, length-delimited, 32 KiB: unknown to WaitRequest.
    let pad = 32usize << 10;
    payload.push((15 << 3) | 2);
    let mut n = pad;
    while n >= 0x80 {
        payload.push((n as u8) | 0x80);
        n >>= 7;
    }
    payload.push(n as u8);
    payload.extend(std::iter::repeat_n(b'w', pad));
    const N: u32 = 3000;
    let mut peer = UnixStream::connect(&sock).unwrap();
    // Written from a thread: the refusals must be read meanwhile, or both sides block.
    let writer = std::thread::spawn({
        let mut w = peer.try_clone().unwrap();
        move || {
            for i in 0..N {
                let f = request_frame(2 * i + 1, "containerd.task.v2.Task", "Wait", &payload, 0);
                if w.write_all(&f).is_err() {
                    break;
                }
            }
        }
    });
    // The refusals come back at once; the parked ones stay silent.
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    while Instant::now() < deadline {
        use std::io::Read;
        let mut hdr = [0u8; 10];
        if peer.read_exact(&mut hdr).is_err() {
            break;
        }
        let len = u32::from_be_bytes(hdr[0..4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len];
        peer.read_exact(&mut body).unwrap();
        let resp = ttrpc::Response::parse_from_bytes(&body).unwrap();
        assert_eq!(resp.status.code.value(), 8, "{:?}", resp.status); // RESOURCE_EXHAUSTED
        refused += 1;
    }
    writer.join().unwrap();
    let grown = rss_kib(shim).saturating_sub(before);
    let latency = state_latency(&sock, &id);
    eprintln!(
        "{N} padded Waits: {refused} refused, shim RSS +{} MiB, State {latency:?}",
        grown / 1024
    );
    assert!(refused >= N / 2, "only {refused} of {N} refused");
    assert!(grown < 64 << 10, "shim RSS grew by {} MiB", grown / 1024);
    assert!(latency < Duration::from_secs(1));
    drop(peer);
    // Also refused outright: one Wait far larger than any containerd sends.
    let mut big = UnixStream::connect(&sock).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let huge = vec![b'x'; 1 << 20];
    big.write_all(&request_frame(
        1,
        "containerd.task.v2.Task",
        "Wait",
        &huge,
        0,
    ))
    .unwrap();
    {
        use std::io::Read;
        let mut hdr = [0u8; 10];
        big.read_exact(&mut hdr).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(hdr[0..4].try_into().unwrap()) as usize];
        big.read_exact(&mut body).unwrap();
        let resp = ttrpc::Response::parse_from_bytes(&body).unwrap();
        assert_eq!(resp.status.code.value(), 8, "{:?}", resp.status);
    }
    drop(big);
    // An ordinary Wait on a fresh connection still parks and gets the exit.
    let waiter = std::thread::spawn({
        let (sock, id) = (sock.clone(), id.clone());
        move || {
            let mut w = Raw::connect(&sock, Duration::from_secs(30));
            w.task(
                "Wait",
                &WaitRequest {
                    id,
                    ..Default::default()
                },
            )
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    let r = waiter.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.message);
    assert_eq!(
        WaitResponse::parse_from_bytes(&r.payload)
            .unwrap()
            .exit_status,
        137
    );
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    assert_eq!(c.ctr(&["task", "rm", &id]).code, 0);
    c.ctr(&["c", "rm", &id]);
    c.assert_clean();
}
