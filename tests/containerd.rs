//! End-to-end scenarios through a real private containerd and real runc, run under every
//! containerd series (1.6, 1.7, 2.2, 2.3) for every runtime type that series starts (one
//! suite, parametrised: see `series_matrix!` at the bottom; `ctd23::runcv2::exec` is the exec
//! scenario on containerd 2.3 with runc.v2).

#[macro_use]
mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// A private containerd of series `s` running shimgate.
fn ctd(s: Series) -> Option<Ctd> {
    Ctd::start_series(s, Shims::Ours)
}

fn echo(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let id = c.id("echo");
    let r = c.run(
        rt,
        &id,
        &["--rm"],
        &["sh", "-c", "echo hello-shim; echo err-line >&2"],
    );
    assert_eq!(r.code, 0, "{}", r.brief());
    assert_eq!(r.stdout, b"hello-shim\n");
    assert!(r.err().contains("err-line"), "{}", r.brief());
    c.assert_clean();
}

fn exit_codes(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    for code in [0, 1, 42, 255] {
        let id = c.id("exit");
        let r = c.run(rt, &id, &["--rm"], &["sh", "-c", &format!("exit {code}")]);
        assert_eq!(r.code, code, "{}", r.brief());
    }
    // Death by signal is 128 + signal (an exec: a pid namespace's init ignores its own
    // namespace's SIGKILL).
    let id = c.id("sig");
    c.run_detached(rt, &id, &[], &["sleep", "300"]);
    let r = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "k",
        &id,
        "sh",
        "-c",
        "kill -9 $$",
    ]);
    assert_eq!(r.code, 137, "{}", r.brief());
    let r = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "t",
        &id,
        "sh",
        "-c",
        "kill -15 $$",
    ]);
    assert_eq!(r.code, 143, "{}", r.brief());
    c.assert_clean();
}

/// `ctr run --rm` in the background; the caller signals it and checks the status.
fn kill_case(
    c: &Ctd,
    rt: Runtime,
    cmd: &[&str],
    sig: &str,
    all: bool,
    want: i32,
    min_procs: usize,
) {
    let id = c.id("kill");
    let args = c.run_args(rt, &id, &["--rm"], cmd);
    let mut child = spawn(
        c.ctr_cmd()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut err = child.stderr.take().unwrap();
    assert!(c.wait_status(&id, "RUNNING", Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.ctr(&["task", "ps", &id]).text().lines().count() < min_procs + 1
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut k = vec!["task", "kill", "-s", sig];
    if all {
        k.push("--all");
    }
    k.push(&id);
    let r = c.ctr(&k);
    assert_eq!(r.code, 0, "kill: {}", r.brief());
    let (code, timed_out) = finish(child, Duration::from_secs(20));
    let mut e = String::new();
    let _ = err.read_to_string(&mut e);
    assert!(!timed_out, "ctr run did not return after {sig}");
    assert_eq!(code, want, "stderr: {e}");
}

fn signals(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    kill_case(&c, rt, &["sleep", "300"], "SIGKILL", false, 137, 1);
    // pid 1 ignores SIGTERM without a handler: install one.
    kill_case(
        &c,
        rt,
        &["sh", "-c", "trap 'exit 143' TERM; sleep 300 & wait"],
        "SIGTERM",
        false,
        143,
        2,
    );
    // --all reaches the non-init sleep; sh passes its status on.
    kill_case(
        &c,
        rt,
        &["sh", "-c", "sleep 300; exit $?"],
        "SIGTERM",
        true,
        143,
        2,
    );
    c.assert_clean();
}

fn exec(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let id = c.id("exec");
    c.run_detached(rt, &id, &[], &["sleep", "300"]);
    let e = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "x1",
        &id,
        "sh",
        "-c",
        "echo exec-out; echo exec-err >&2; exit 7",
    ]);
    assert_eq!(e.code, 7, "{}", e.brief());
    assert_eq!(e.stdout, b"exec-out\n");
    assert!(e.err().contains("exec-err"));
    // The id is free again once the exec is gone.
    let e = c.ctr(&["task", "exec", "--exec-id", "x1", &id, "true"]);
    assert_eq!(e.code, 0, "{}", e.brief());
    // Execs that exit at once keep their status.
    for i in 0..5 {
        let e = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &format!("q{i}"),
            &id,
            "sh",
            "-c",
            "exit 4",
        ]);
        assert_eq!(e.code, 4, "{}", e.brief());
    }
    // stdin into an exec.
    let e = run_cmd(
        c.ctr_cmd()
            .args(["task", "exec", "--exec-id", "in1", &id, "cat"]),
        Some(b"through-exec\n"),
        Duration::from_secs(30),
    );
    assert_eq!(e.stdout, b"through-exec\n", "{}", e.brief());
    c.assert_clean();
}

fn ps(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let id = c.id("ps");
    c.run_detached(rt, &id, &[], &["sh", "-c", "sleep 300 & sleep 301 & wait"]);
    let init = c.tasks()[&id].0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pids = Vec::new();
    while Instant::now() < deadline {
        pids = c
            .ctr(&["task", "ps", &id])
            .text()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
            .collect();
        if pids.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        pids.contains(&init) && pids.len() >= 3,
        "pids {pids:?} init {init}"
    );
    c.assert_clean();
}

fn pause_resume(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let id = c.id("pause");
    c.run_detached(rt, &id, &[], &["sleep", "300"]);
    assert_eq!(c.ctr(&["task", "pause", &id]).code, 0);
    assert!(c.wait_status(&id, "PAUSED", Duration::from_secs(5)));
    // Exec into a paused container is refused.
    let e = c.ctr(&["task", "exec", "--exec-id", "p1", &id, "true"]);
    assert_ne!(e.code, 0);
    assert_eq!(c.ctr(&["task", "resume", &id]).code, 0);
    assert!(c.wait_status(&id, "RUNNING", Duration::from_secs(5)));
    let e = c.ctr(&["task", "exec", "--exec-id", "after", &id, "true"]);
    assert_eq!(e.code, 0, "{}", e.brief());
    c.assert_clean();
}

fn stdin(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    for payload in [b"data\n".to_vec(), random_bytes(1 << 20)] {
        // Feed only once the task runs: ctr 1.6 installs its CloseIO hook after task create.
        let id = c.id("stdin");
        let args = c.run_args(rt, &id, &["--rm"], &["cat"]);
        let (code, timed_out, got) = c.run_with_stdin(
            &id,
            &args,
            payload.clone(),
            Duration::from_secs(10),
            Duration::from_secs(60),
        );
        assert!(!timed_out, "EOF did not reach the container");
        assert_eq!(code, 0);
        assert_eq!(got.len(), payload.len(), "log:\n{}", c.log_tail(30));
        assert!(got == payload, "stdin round trip differs");
    }
    c.assert_clean();
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut v)
        .unwrap();
    v
}

fn tty(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let id = c.id("tty");
    let args = c.run_args(
        rt,
        &id,
        &["--rm", "-t"],
        &[
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo IS-A-TTY; echo READY; read x; echo got-$x; exit 5",
        ],
    );
    let mut cmd = c.ctr_cmd();
    cmd.args(&args);
    let (code, out) = pty_run(cmd, b"abc\r");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("IS-A-TTY"), "{text}");
    assert!(text.contains("got-abc"), "{text}");
    assert_eq!(code, 5, "{text}");
    // An exec with a terminal.
    let id2 = c.id("ttyexec");
    c.run_detached(rt, &id2, &[], &["sleep", "300"]);
    let mut cmd = c.ctr_cmd();
    cmd.args([
        "task",
        "exec",
        "-t",
        "--exec-id",
        "t1",
        &id2,
        "sh",
        "-c",
        "[ -t 1 ] && echo EXEC-TTY; echo READY; read y; echo e-$y; exit 6",
    ]);
    let (code, out) = pty_run(cmd, b"xyz\r");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("EXEC-TTY") && text.contains("e-xyz"),
        "{text}"
    );
    assert_eq!(code, 6, "{text}");
    c.assert_clean();
}

fn large_output(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let want = std::fs::read_to_string(rootfs().join("data/blob.sha256")).unwrap();
    let id = c.id("large");
    let r = c.run(rt, &id, &["--rm"], &["cat", "/data/blob"]);
    assert_eq!(r.code, 0, "rc {}", r.code);
    assert_eq!(r.stdout.len(), 16 << 20);
    assert_eq!(sha256_hex(&r.stdout), want);
    // The same on stderr, while stdout also flows.
    let id = c.id("large2");
    let r = c.run(
        rt,
        &id,
        &["--rm"],
        &["sh", "-c", "cat /data/blob >&2; echo done"],
    );
    assert_eq!(r.stdout, b"done\n");
    assert_eq!(sha256_hex(&r.stderr), want);
    c.assert_clean();
}

fn fast_exits(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    for i in 0..20 {
        let id = c.id("fast");
        let r = c.run(rt, &id, &["--rm"], &["echo", "x"]);
        assert!(r.code == 0 && r.stdout == b"x\n", "run {i}: {}", r.brief());
        let id = c.id("fastexit");
        let r = c.run(rt, &id, &["--rm"], &["sh", "-c", "echo last-words; exit 3"]);
        assert!(
            r.code == 3 && r.stdout == b"last-words\n",
            "run {i}: {}",
            r.brief()
        );
    }
    c.assert_clean();
}

fn metrics(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let id = c.id("metrics");
    c.run_detached(rt, &id, &[], &["sleep", "300"]);
    let r = c.ctr(&["task", "metrics", &id]);
    assert_eq!(r.code, 0, "{}", r.brief());
    let t = r.text();
    assert!(t.contains("memory") && t.contains("pids"), "{t}");
    c.assert_clean();
}

fn update(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let id = c.id("update");
    c.run_detached(rt, &id, &[], &["sleep", "300"]);
    let pid = c.tasks()[&id].0;
    let limit: u64 = 64 << 20;
    let (status, msg) = grpc::unary(
        &c.addr,
        &c.ns,
        "/containerd.services.tasks.v1.Tasks/Update",
        grpc::update_task_request(&id, &format!("{{\"memory\":{{\"limit\":{limit}}}}}")),
    );
    assert_eq!(status, 0, "Update: {msg}");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cg
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, ctrls, path) = (p.next()?, p.next()?, p.next()?);
            ctrls
                .split(',')
                .any(|x| x == "memory")
                .then(|| path.to_string())
        })
        .expect("memory cgroup");
    let got = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
        .unwrap();
    assert_eq!(got.trim(), limit.to_string());
    c.assert_clean();
}

fn containerd_restart(s: Series, rt: Runtime) {
    let Some(mut c) = ctd(s) else { return };
    let id = c.id("restart");
    c.run_detached(rt, &id, &[], &["sleep", "300"]);
    let before = c.shim_pids();
    c.restart(libc::SIGKILL);
    assert!(
        c.wait_status(&id, "RUNNING", Duration::from_secs(15)),
        "{:?}",
        c.tasks()
    );
    let after = c.shim_pids();
    assert!(
        before.iter().all(|p| after.contains(p)),
        "shim did not survive: {before:?} -> {after:?}"
    );
    let e = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "post",
        &id,
        "sh",
        "-c",
        "echo alive",
    ]);
    assert!(e.code == 0 && e.stdout == b"alive\n", "{}", e.brief());
    // A container that exits while containerd is down still reports its exit status after.
    let id2 = c.id("restart2");
    c.run_detached(rt, &id2, &[], &["sh", "-c", "sleep 2; exit 9"]);
    c.restart(libc::SIGKILL);
    assert!(
        c.wait_status(&id2, "STOPPED", Duration::from_secs(20)),
        "{:?}",
        c.tasks()
    );
    // ... and is deleted like any other.
    assert_eq!(c.ctr(&["task", "rm", &id2]).code, 0);
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).code, 0);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    assert_eq!(c.ctr(&["task", "rm", &id]).code, 0);
    c.assert_clean();
}

fn shim_sigkill(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let id = c.id("shimkill");
    c.run_detached(rt, &id, &[], &["sleep", "300"]);
    let init = c.tasks()[&id].0;
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    // SAFETY: killing the shim this test started.
    unsafe {
        libc::kill(shims[0] as i32, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        reap_orphans();
        let t = c.tasks().get(&id).cloned();
        let alive = std::fs::read_to_string(format!("/proc/{init}/stat"))
            .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
            .unwrap_or(false);
        let state = PathBuf::from("/run/containerd/runc")
            .join(&c.ns)
            .join(&id)
            .exists();
        if (t.is_none() || t.as_ref().unwrap().1 == "STOPPED") && !alive && !state {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after shim SIGKILL: task {t:?} init alive {alive} runc state {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!c.socket_for(&id).exists(), "stale shim socket left behind");
    c.ctr(&["task", "rm", "-f", &id]);
    assert_eq!(c.ctr(&["c", "rm", &id]).code, 0);
    c.assert_clean();
}

use std::path::PathBuf;

fn parallel(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let ids: Vec<String> = (0..12).map(|_| c.id("par")).collect();
    let results: Vec<(String, Out)> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .map(|id| {
                let c = &c;
                s.spawn(move || {
                    (
                        id.clone(),
                        c.run(rt, id, &["--rm"], &["sh", "-c", &format!("echo ok-{id}")]),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (id, r) in results {
        assert!(
            r.code == 0 && r.text() == format!("ok-{id}\n"),
            "{id}: {}",
            r.brief()
        );
    }
    c.assert_clean();
}

fn grouping(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let group = c.id("grp");
    let before = c.shim_pids();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = c.id("grpc");
        let ann = format!("io.containerd.runc.v2.group={group}");
        c.run_detached(
            rt,
            &id,
            &["--annotation", &ann, "--label", &ann],
            &["sleep", "300"],
        );
        ids.push(id);
    }
    let n = c.shim_pids().iter().filter(|p| !before.contains(p)).count();
    assert_eq!(n, if rt.groups { 1 } else { 3 });
    // Removing one container of a group keeps the shim serving the others.
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &ids[0]]).code, 0);
    assert!(c.wait_status(&ids[0], "STOPPED", Duration::from_secs(10)));
    assert_eq!(c.ctr(&["task", "rm", &ids[0]]).code, 0);
    let e = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "g1",
        &ids[1],
        "sh",
        "-c",
        "echo still",
    ]);
    assert!(e.code == 0 && e.stdout == b"still\n", "{}", e.brief());
    // The CRI sandbox annotation groups too.
    if rt.groups {
        let sb = c.id("sandbox");
        let before = c.shim_pids();
        for _ in 0..2 {
            let id = c.id("pod");
            let ann = format!("io.kubernetes.cri.sandbox-id={sb}");
            c.run_detached(rt, &id, &["--annotation", &ann], &["sleep", "300"]);
        }
        assert_eq!(
            c.shim_pids().iter().filter(|p| !before.contains(p)).count(),
            1
        );
    }
    c.assert_clean();
}

fn checkpoint(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let id = c.id("ckpt");
    c.run_detached(rt, &id, &[], &["sh", "-c", "while true; do sleep 1; done"]);
    let r = c.ctr(&["task", "checkpoint", &id]);
    if r.code != 0 {
        // This kernel may not let CRIU run; then the error must be CRIU's, name the dump log,
        // and leave the task running.
        let text = format!("{}{}", r.text(), r.err());
        assert!(
            text.contains("criu"),
            "checkpoint failed without a CRIU error: {text}"
        );
        assert!(text.contains("criu-dump.log"), "{text}");
    }
    assert!(c.wait_status(&id, "RUNNING", Duration::from_secs(5)));
    c.assert_clean();
}

/// Task events as containerd's subscribers see them: exactly one of each per process, in
/// lifecycle order, whoever publishes them. A task API shim publishes every task event itself;
/// with the legacy runtime containerd publishes all but the exits, so a v1 shim that published
/// more would show up here as duplicates (and nobody publishes `/tasks/exec-added` for v1).
fn events(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let ev = Events::watch(&c);
    let id = c.id("events");
    c.run_detached(rt, &id, &[], &["sleep", "300"]);
    let e = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "ev1",
        &id,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(e.code, 3, "{}", e.brief());
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).code, 0);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    assert_eq!(c.ctr(&["task", "rm", &id]).code, 0);
    ev.wait_until("delete and two exits", Duration::from_secs(15), |_| {
        !ev.of("/tasks/delete", &id).is_empty() && ev.of("/tasks/exit", &id).len() >= 2
    });
    // Late duplicates would arrive now.
    std::thread::sleep(Duration::from_millis(500));
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-started",
        "/tasks/delete",
    ] {
        assert_eq!(ev.of(topic, &id).len(), 1, "{topic} in:\n{}", ev.dump());
    }
    let added = if rt == V1_LINUX { 0 } else { 1 };
    assert_eq!(
        ev.of("/tasks/exec-added", &id).len(),
        added,
        "{}",
        ev.dump()
    );
    let exits = ev.of("/tasks/exit", &id);
    assert_eq!(exits.len(), 2, "{}", ev.dump());
    assert_eq!(
        (exits[0].str("id"), exits[0].num("exit_status")),
        ("ev1", 3),
        "exec exit first"
    );
    assert_eq!(
        (exits[1].str("id"), exits[1].num("exit_status")),
        (id.as_str(), 137),
        "init exit last"
    );
    c.assert_clean();
}

fn log_file_uri(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sub/dir/log.txt");
    let id = c.id("filelog");
    let uri = format!("file://{}", log.display());
    let r = c.run(
        rt,
        &id,
        &["--rm", "--log-uri", &uri],
        &["sh", "-c", "echo out-line; echo err-line >&2; exit 4"],
    );
    assert_eq!(r.code, 4, "{}", r.brief());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("out-line\n") && text.contains("err-line\n"),
        "{text:?}"
    );
    c.assert_clean();
}

fn log_binary_uri(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // A logger as containerd documents them: fd 3 stdout, fd 4 stderr, closing fd 5 = ready.
    let logger = dir.path().join("logger.sh");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\nenv > {d}/env\necho \"$@\" > {d}/args\ncat <&3 > {d}/out 5>&- &\ncat <&4 > {d}/err 5>&- &\nexec 5>&-\nwait\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let id = c.id("binlog");
    let uri = format!("binary://{}?level=debug", logger.display());
    let r = c.run(
        rt,
        &id,
        &["--rm", "--log-uri", &uri],
        &["sh", "-c", "echo to-out; echo to-err >&2"],
    );
    assert_eq!(r.code, 0, "{}", r.brief());
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (read("out").is_empty() || read("err").is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(read("out"), "to-out\n");
    assert_eq!(read("err"), "to-err\n");
    assert_eq!(read("args").trim(), "level debug");
    let env = read("env");
    assert!(env.contains(&format!("CONTAINER_ID={id}")), "{env}");
    assert!(
        env.contains(&format!("CONTAINER_NAMESPACE={}", c.ns)),
        "{env}"
    );
    assert!(
        !env.contains("TTRPC_ADDRESS") && !env.contains("GOMAXPROCS"),
        "logger must not see the shim's environment: {env}"
    );

    // A logger that fails before it is ready: a clear error, promptly, and nothing left behind.
    let bad = dir.path().join("bad.sh");
    std::fs::write(&bad, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let id = c.id("badlog");
    let t = Instant::now();
    let r = c.run(
        rt,
        &id,
        &["--rm", "--log-uri", &format!("binary://{}", bad.display())],
        &["true"],
    );
    assert_ne!(r.code, 0);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        r.err().contains("logging binary") && r.err().contains("status 3"),
        "{}",
        r.brief()
    );
    c.ctr(&["c", "rm", &id]);
    c.assert_clean();
}

fn oom(s: Series, rt: Runtime) {
    let Some(c) = ctd(s) else { return };
    let ev = Events::watch(&c);
    let id = c.id("oom");
    // tail keeps everything from a newline-free stream in memory: it is OOM-killed.
    let r = c.run(
        rt,
        &id,
        &["--rm", "--memory-limit", "33554432"],
        &["sh", "-c", "cat /dev/zero | tail"],
    );
    assert_eq!(r.code, 137, "{}", r.brief());
    ev.wait_until("oom and exit", Duration::from_secs(20), |_| {
        !ev.of("/tasks/oom", &id).is_empty() && !ev.of("/tasks/exit", &id).is_empty()
    });
    let all = ev.all();
    let oom_at = all
        .iter()
        .position(|e| e.topic == "/tasks/oom" && e.str("container_id") == id)
        .unwrap();
    let exit_at = all
        .iter()
        .position(|e| e.topic == "/tasks/exit" && e.str("container_id") == id)
        .unwrap();
    if rt != V1_LINUX {
        // Our shims publish both: the OOM first. (For the v1 runtime containerd itself
        // publishes OOM events from its own cgroup monitor.)
        assert!(oom_at < exit_at, "OOM after exit:\n{}", ev.dump());
        assert_eq!(
            ev.of("/tasks/oom", &id).len(),
            1,
            "one OOM event per kill:\n{}",
            ev.dump()
        );
    }
    c.assert_clean();
}

series_matrix!(
    echo,
    exit_codes,
    signals,
    exec,
    ps,
    pause_resume,
    stdin,
    tty,
    large_output,
    fast_exits,
    metrics,
    update,
    containerd_restart,
    shim_sigkill,
    parallel,
    grouping,
    checkpoint,
    events,
    log_file_uri,
    log_binary_uri,
    oom,
);
