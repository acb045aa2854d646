//! Live upgrade (`shimgate upgrade`), for every personality, through a private containerd:
//! running shims move to a differently-versioned build of this tree (built once into
//! `target/upgrade-next`) and keep their pid, their containers' pids, the output flowing with
//! no byte lost, stdin, a running exec's terminal, and their exits (including exits while no
//! image serves, delivered once with the right status); containerd notices nothing. Also: an
//! unusable binary is refused with the old one still serving, and a new image that fails to
//! adopt rolls back to the old binary, which answers with the reason.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::next::{next_binary, NEXT_VERSION};
use common::pty::PtySession;
use common::*;

const THIS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `shimgate upgrade --json` for these shims; the parsed outcomes (one JSON line per shim).
fn upgrade(pids: &[u32], binary: Option<&Path>, extra: &[&str]) -> (Out, Vec<serde_json::Value>) {
    let mut cmd = Command::new(shimgate_bin());
    cmd.arg("upgrade").arg("--json");
    for p in pids {
        cmd.arg("--pid").arg(p.to_string());
    }
    if let Some(b) = binary {
        cmd.arg("--binary").arg(b);
    }
    cmd.args(extra);
    let out = run_cmd(&mut cmd, None, Duration::from_secs(120));
    let parsed: Vec<serde_json::Value> = out
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    (out, parsed)
}

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// An attached `ctr run`: its stdin to write to and its stdout as it arrives.
struct Attached {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Attached {
    fn start(c: &Ctd, args: Vec<String>, stdin: bool) -> Attached {
        let mut child = spawn(
            c.ctr_cmd()
                .args(args)
                .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let mut so = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match so.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });
        Attached {
            stdin: child.stdin.take(),
            child,
            out,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn write(&mut self, b: &[u8]) {
        let s = self.stdin.as_mut().unwrap();
        s.write_all(b).unwrap();
        s.flush().unwrap();
    }

    fn finish(mut self, limit: Duration) -> (i32, String) {
        drop(self.stdin.take());
        let (code, timed_out) = finish(self.child, limit);
        assert!(
            !timed_out,
            "ctr did not end; output:\n{}",
            String::from_utf8_lossy(&self.out.lock().unwrap())
        );
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let out = String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned();
        (code, out)
    }
}

/// The container exits (init and execs) published for `id`: (exec id, status).
fn exits(ev: &Events, id: &str) -> Vec<(String, u64)> {
    ev.of("/tasks/exit", id)
        .iter()
        .map(|e| (e.str("id").to_string(), e.num("exit_status")))
        .collect()
}

/// Wait until none of `shims` is alive any more.
fn wait_shims_gone(c: &Ctd, shims: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.shim_pids().iter().any(|p| shims.contains(p)) {
        assert!(
            Instant::now() < deadline,
            "shims {shims:?} still alive after their containers were deleted"
        );
        reap_orphans();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Shims of this containerd that were not there in `before`.
fn new_shims(c: &Ctd, before: &[u32]) -> Vec<u32> {
    let mut v: Vec<u32> = c
        .shim_pids()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    v.sort_unstable();
    v
}

/// A container that answers each stdin line `l` with `got-l` and exits 4 at EOF.
fn echoer(c: &Ctd, rt: Runtime, id: &str, flags: &[&str]) -> Attached {
    Attached::start(
        c,
        c.run_args(
            rt,
            id,
            flags,
            &["sh", "-c", "while read l; do echo got-$l; done; exit 4"],
        ),
        true,
    )
}

/// The annotation that puts a test's runc.v2 containers into one group.
fn group_annotation(c: &Ctd) -> String {
    format!("io.containerd.runc.v2.group={}", c.id("grp"))
}

/// `ctr run` flags that group containers (runc.v2), none otherwise.
fn group_flags(rt: Runtime, ann: &str) -> Vec<&str> {
    if rt.groups {
        vec!["--annotation", ann]
    } else {
        Vec::new()
    }
}

/// Everything keeps working across an upgrade, under containerd series `s`: see the module
/// docs.
fn keeps_everything(s: Series, rt: Runtime) {
    let Some(c) = Ctd::start_series(s, Shims::Ours) else {
        return;
    };
    let next = root_safe(&next_binary(), &c.dir, "shimgate-next");
    let ev = Events::watch(&c);
    let ann = group_annotation(&c);
    let flags = group_flags(rt, &ann);
    let before = c.shim_pids();

    // Output that keeps coming through the hand-over.
    let counter = c.id("count");
    let count = Attached::start(
        &c,
        c.run_args(
            rt,
            &counter,
            &flags,
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 1000 ]; do echo n$i; i=$((i+1)); usleep 3000; done; exit 3",
            ],
        ),
        false,
    );
    // Stdin before and after.
    let echo = c.id("echo");
    let mut echoer = echoer(&c, rt, &echo, &flags);
    assert!(
        c.wait_status(&echo, "RUNNING", Duration::from_secs(10)),
        "{:?}",
        c.tasks()
    );
    echoer.write(b"before\n");
    assert!(echoer.wait_for("got-before", Duration::from_secs(10)));
    // A running exec with a terminal.
    let sleeper = c.id("sleep");
    c.run_detached(rt, &sleeper, &flags, &["sleep", "600"]);
    let mut tty_cmd = c.ctr_cmd();
    tty_cmd.args(["task", "exec", "-t", "--exec-id", "tty1", &sleeper, "sh"]);
    let mut tty = PtySession::start(tty_cmd);
    tty.write(b"echo pre-$((1+1))\n");
    assert!(
        tty.wait_for("pre-2", Duration::from_secs(10)),
        "{}",
        tty.output()
    );
    assert!(count.wait_for("n20\n", Duration::from_secs(10)));

    let shims = new_shims(&c, &before);
    assert_eq!(shims.len(), if rt.groups { 1 } else { 3 }, "{shims:?}");
    let tasks = c.tasks();
    let exes: Vec<PathBuf> = shims.iter().map(|p| exe_of(*p)).collect();

    // Requests keep coming while the shims change program: execs, one after another.
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = std::thread::spawn({
        let (busy, cmd_base, sleeper) = (busy.clone(), c.ctr_cmd(), sleeper.clone());
        let (prog, base_args): (String, Vec<String>) = (
            cmd_base.get_program().to_string_lossy().into_owned(),
            cmd_base
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        );
        move || {
            let mut n = 0;
            while busy.load(std::sync::atomic::Ordering::SeqCst) || n < 3 {
                let id = format!("bg{n}");
                let msg = format!("x{n}");
                let out = run_cmd(
                    Command::new(&prog).args(&base_args).args([
                        "task",
                        "exec",
                        "--exec-id",
                        &id,
                        &sleeper,
                        "echo",
                        &msg,
                    ]),
                    None,
                    Duration::from_secs(60),
                );
                assert_eq!(
                    (out.code, out.text()),
                    (0, format!("{msg}\n")),
                    "exec during the upgrade: {}",
                    out.brief()
                );
                n += 1;
            }
            n
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let (out, outcomes) = upgrade(&shims, Some(&next), &[]);
    busy.store(false, std::sync::atomic::Ordering::SeqCst);
    let execs = load.join().unwrap();
    eprintln!("{}: {} ({execs} execs alongside)", rt.short, out.text());
    assert_eq!(out.code, 0, "{}", out.brief());
    assert_eq!(outcomes.len(), shims.len(), "{}", out.text());
    for o in &outcomes {
        assert_eq!(o["from"], THIS_VERSION, "{o}");
        assert_eq!(o["to"], NEXT_VERSION, "{o}");
        assert!(o["handover_micros"].as_u64().unwrap() > 0, "{o}");
    }
    // Same processes, new program.
    assert_eq!(new_shims(&c, &before), shims);
    for (pid, old) in shims.iter().zip(&exes) {
        let now = exe_of(*pid);
        assert_ne!(&now, old);
        assert_eq!(now, next.canonicalize().unwrap());
    }
    let after = c.tasks();
    for id in [&counter, &echo, &sleeper] {
        // The counter may have finished meanwhile on a slow machine (ctr then removed its
        // task); its status, every line and its one exit event are checked below.
        if id == &counter && !after.contains_key(id) {
            continue;
        }
        assert_eq!(after.get(id), tasks.get(id), "{id}: {after:?} vs {tasks:?}");
    }

    // Stdin and the terminal still work, in both directions.
    echoer.write(b"after\n");
    assert!(
        echoer.wait_for("got-after", Duration::from_secs(10)),
        "{}",
        echoer.text()
    );
    tty.write(b"echo post-$((2+3))\n");
    assert!(
        tty.wait_for("post-5", Duration::from_secs(10)),
        "{}",
        tty.output()
    );
    tty.write(b"exit 6\n");
    let (code, shown) = tty.finish(Duration::from_secs(20));
    assert_eq!(code, 6, "{shown}");
    // A new exec, a kill and the waits behind them.
    let e = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        &sleeper,
        "sh",
        "-c",
        "echo hi; exit 5",
    ]);
    assert_eq!((e.code, e.text()), (5, "hi\n".to_string()), "{}", e.brief());
    let (code, text) = echoer.finish(Duration::from_secs(20));
    assert_eq!(code, 4, "{text}");
    assert_eq!(text, "got-before\ngot-after\n");
    // Every line of the counter, in order, none twice.
    let (code, text) = count.finish(Duration::from_secs(60));
    assert_eq!(code, 3);
    let lines: Vec<&str> = text.lines().collect();
    let want: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
    assert!(
        lines == want,
        "output changed: {} lines, first difference at {:?}",
        lines.len(),
        lines.iter().zip(&want).position(|(a, b)| a != b)
    );
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &sleeper]).code, 0);
    assert!(c.wait_status(&sleeper, "STOPPED", Duration::from_secs(10)));

    // Each exit exactly once, with its status: counted once the shims are gone (nothing can
    // publish another exit then).
    ev.wait_until("the exits", Duration::from_secs(20), |_| {
        exits(&ev, &sleeper).len() >= 3
    });
    // (The attached `ctr run`s deleted their own tasks when they ended.)
    assert_eq!(c.ctr(&["task", "rm", &sleeper]).code, 0);
    for id in [&counter, &echo, &sleeper] {
        let _ = c.ctr(&["container", "rm", id]);
    }
    wait_shims_gone(&c, &shims);
    ev.barrier(&c);
    // The execs run alongside the upgrade: each exited once, with 0.
    let (bg, mut s): (Vec<_>, Vec<_>) = exits(&ev, &sleeper)
        .into_iter()
        .partition(|(id, _)| id.starts_with("bg"));
    let mut want_bg: Vec<(String, u64)> = (0..execs).map(|n| (format!("bg{n}"), 0)).collect();
    want_bg.sort();
    let mut bg = bg;
    bg.sort();
    assert_eq!(bg, want_bg, "{}", ev.dump());
    s.sort();
    assert_eq!(
        s,
        vec![
            ("e2".to_string(), 5),
            (sleeper.clone(), 137),
            ("tty1".to_string(), 6)
        ],
        "{}",
        ev.dump()
    );
    assert_eq!(exits(&ev, &counter), vec![(counter.clone(), 3)]);
    assert_eq!(exits(&ev, &echo), vec![(echo.clone(), 4)]);
    // containerd saw nothing wrong with any shim.
    let log = c.log();
    for line in log.lines().filter(|l| l.contains("level=error")) {
        assert!(
            ![&counter, &echo, &sleeper]
                .iter()
                .any(|id| line.contains(id.as_str())),
            "containerd complained: {line}"
        );
    }
    c.assert_clean();
}

#[test]
fn runcv2_group_keeps_everything() {
    keeps_everything(Series::V1_6, RUNC_V2);
}

#[test]
fn runcv1_keeps_everything() {
    keeps_everything(Series::V1_6, RUNC_V1);
}

#[test]
fn v1linux_keeps_everything() {
    keeps_everything(Series::V1_6, V1_LINUX);
}

/// The same live upgrade under containerd 1.7 (the last series with the legacy runtime) and
/// 2.3 (task API v3 negotiated through BootstrapParams; runc.v1 started the old way).
#[test]
fn ctd17_runcv2_group_keeps_everything() {
    keeps_everything(Series::V1_7, RUNC_V2);
}

#[test]
fn ctd17_v1linux_keeps_everything() {
    keeps_everything(Series::V1_7, V1_LINUX);
}

#[test]
fn ctd23_runcv2_group_keeps_everything() {
    keeps_everything(Series::V2_3, RUNC_V2);
}

#[test]
fn ctd23_runcv1_keeps_everything() {
    keeps_everything(Series::V2_3, RUNC_V1);
}

/// Host pids of the processes of `id` whose command line contains `needle`.
fn pids_matching(c: &Ctd, id: &str, needle: &str) -> Vec<i32> {
    c.ctr(&["task", "ps", id])
        .text()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Processes that exit while no image serves (the new one waits before adopting, by the
/// test-only fault knob) are reaped by the new image and their exits published once, with
/// the right status; the client waiting on an exec gets its status.
fn exits_during_handover(rt: Runtime) {
    let Some(c) = Ctd::start_env(Shims::Ours, &[("SHIMGATE_UPGRADE_FAULT", "delay=1500")]) else {
        return;
    };
    let next = root_safe(&next_binary(), &c.dir, "shimgate-next")
        .canonicalize()
        .unwrap();
    let ev = Events::watch(&c);
    let ann = group_annotation(&c);
    let flags = group_flags(rt, &ann);
    let before = c.shim_pids();
    let a = c.id("dies");
    c.run_detached(rt, &a, &flags, &["sleep", "600"]);
    let shims = new_shims(&c, &before);
    // A second container in the same group (runc.v2 only: one shim for both).
    let b = rt.groups.then(|| {
        let b = c.id("dies2");
        c.run_detached(rt, &b, &flags, &["sleep", "600"]);
        assert_eq!(new_shims(&c, &before), shims);
        b
    });
    let exec = Attached::start(
        &c,
        [
            "task",
            "exec",
            "--exec-id",
            "x1",
            &a,
            "sh",
            "-c",
            "trap 'exit 9' TERM; echo ready; while true; do sleep 0.05; done",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        false,
    );
    assert!(exec.wait_for("ready", Duration::from_secs(10)));
    let exec_pid = pids_matching(&c, &a, "trap")[0];
    let tasks = c.tasks();
    let init_a = tasks[&a].0 as i32;
    let init_b = b.as_ref().map(|b| tasks[b].0 as i32);

    let shim = shims[0];
    let upgrading = std::thread::spawn({
        let next = next.clone();
        move || upgrade(&[shim], Some(&next), &[])
    });
    // The new program is in place and waits before adopting: exit now.
    let deadline = Instant::now() + Duration::from_secs(20);
    while exe_of(shim) != next {
        assert!(
            Instant::now() < deadline,
            "the shim never exec'd the new binary"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: signalling pids of our own containers.
    unsafe {
        libc::kill(exec_pid, libc::SIGTERM);
    }
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    unsafe {
        libc::kill(init_a, libc::SIGKILL);
        if let Some(p) = init_b {
            libc::kill(p, libc::SIGKILL);
        }
    }
    let (out, outcomes) = upgrading.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.brief());
    assert_eq!(outcomes[0]["to"], NEXT_VERSION);
    assert!(
        outcomes[0]["handover_micros"].as_u64().unwrap() >= 1_500_000,
        "{outcomes:?}"
    );
    // The client waiting on the exec gets its status (its Wait was replayed).
    let (code, _) = exec.finish(Duration::from_secs(20));
    assert_eq!(code, 9);
    assert!(c.wait_status(&a, "STOPPED", Duration::from_secs(10)));
    if let Some(b) = &b {
        assert!(c.wait_status(b, "STOPPED", Duration::from_secs(10)));
    }
    ev.wait_until("the exits", Duration::from_secs(20), |_| {
        exits(&ev, &a).len() >= 2
    });
    // Exactly once: counted once the shim is gone.
    for id in std::iter::once(&a).chain(b.iter()) {
        assert_eq!(c.ctr(&["task", "rm", id]).code, 0);
        let _ = c.ctr(&["container", "rm", id]);
    }
    wait_shims_gone(&c, &shims);
    ev.barrier(&c);
    let mut got = exits(&ev, &a);
    got.sort();
    assert_eq!(
        got,
        vec![(a.clone(), 137), ("x1".to_string(), 9)],
        "{}",
        ev.dump()
    );
    if let Some(b) = &b {
        assert_eq!(exits(&ev, b), vec![(b.clone(), 137)], "{}", ev.dump());
    }
    c.assert_clean();
}

#[test]
fn runcv2_exits_during_handover() {
    exits_during_handover(RUNC_V2);
}

#[test]
fn runcv1_exits_during_handover() {
    exits_during_handover(RUNC_V1);
}

#[test]
fn v1linux_exits_during_handover() {
    exits_during_handover(V1_LINUX);
}

fn doctor() -> serde_json::Value {
    let out = run_cmd(
        Command::new(shimgate_bin()).args(["doctor", "--json"]),
        None,
        Duration::from_secs(60),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Binary version a shim runs, as `shimgate doctor --json` reports it.
fn doctor_version(pid: u32) -> String {
    doctor()["shims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pid"] == pid)
        .map(|s| s["binary_version"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// A new image that cannot adopt (forced by the fault knob) rolls back: the old binary serves
/// on, with everything, and the operator gets the reason. The knob does not survive the
/// rollback, so the next attempt goes through; `doctor` shows each step's version.
fn failed_adoption_rolls_back(rt: Runtime) {
    let Some(c) = Ctd::start_env(Shims::Ours, &[("SHIMGATE_UPGRADE_FAULT", "fail-adoption")])
    else {
        return;
    };
    let next = root_safe(&next_binary(), &c.dir, "shimgate-next");
    let before = c.shim_pids();
    let echo = c.id("echo");
    let mut echoer = echoer(&c, rt, &echo, &[]);
    assert!(c.wait_status(&echo, "RUNNING", Duration::from_secs(10)));
    let shim = new_shims(&c, &before)[0];
    let old_exe = exe_of(shim);
    assert_eq!(doctor_version(shim), THIS_VERSION);

    let (out, outcomes) = upgrade(&[shim], Some(&next), &[]);
    assert_eq!(out.code, 1, "{}", out.brief());
    let err = outcomes[0]["error"].as_str().unwrap_or("");
    assert!(
        err.contains("refused on purpose") && err.contains("serves on"),
        "{err}"
    );
    assert_eq!(exe_of(shim), old_exe);
    assert_eq!(doctor_version(shim), THIS_VERSION);
    echoer.write(b"one\n");
    assert!(echoer.wait_for("got-one", Duration::from_secs(10)));

    let (out, outcomes) = upgrade(&[shim], Some(&next), &[]);
    assert_eq!(out.code, 0, "{}", out.brief());
    assert_eq!(outcomes[0]["to"], NEXT_VERSION);
    assert_eq!(doctor_version(shim), NEXT_VERSION);
    // It now runs another build than the one containerd would start: doctor says so, about
    // this shim.
    let findings = doctor()["findings"].clone();
    assert!(
        findings.as_array().unwrap().iter().any(|f| {
            f["id"] == "shim-outdated"
                && f["subject"] == serde_json::json!({"kind": "shim", "pid": shim})
                && f["message"].as_str().unwrap_or("").contains(&format!(
                    "runs shimgate {NEXT_VERSION}, {THIS_VERSION} is installed"
                ))
        }),
        "{findings}"
    );
    echoer.write(b"two\n");
    let (code, text) = echoer.finish(Duration::from_secs(20));
    assert_eq!((code, text.as_str()), (4, "got-one\ngot-two\n"));
    let _ = c.ctr(&["task", "rm", &echo]);
    let _ = c.ctr(&["container", "rm", &echo]);
    c.assert_clean();
}

#[test]
fn runcv2_failed_adoption_rolls_back() {
    failed_adoption_rolls_back(RUNC_V2);
}

#[test]
fn v1linux_failed_adoption_rolls_back() {
    failed_adoption_rolls_back(V1_LINUX);
}

/// `Admin.Upgrade` to `binary`, spoken to the shim's socket directly (as any caller could,
/// bypassing the operator tool's own checks).
fn admin_upgrade(sock: &Path, binary: &Path) -> raw_ttrpc::Reply {
    raw_ttrpc::Raw::connect(sock, Duration::from_secs(60)).call(
        "shimgate.admin.v1.Admin",
        "Upgrade",
        &shimgate::protos::admin::UpgradeRequest {
            binary: binary.display().to_string(),
            ..Default::default()
        },
    )
}

/// On the wire, a rolled-back upgrade is ABORTED and a refused one FAILED_PRECONDITION, so a
/// caller speaking to the socket (not only the operator tool, which also reads the text) can
/// tell "nothing was stopped" from "the new image was tried and the old one serves on".
#[test]
fn a_rollback_is_answered_aborted_on_the_wire() {
    let Some(c) = Ctd::start_env(Shims::Ours, &[("SHIMGATE_UPGRADE_FAULT", "fail-adoption")])
    else {
        return;
    };
    let next = root_safe(&next_binary(), &c.dir, "shimgate-next");
    let id = c.id("ab");
    c.run_detached(RUNC_V2, &id, &[], &["sleep", "600"]);
    let sock = c.socket_for(&id);
    let call = |binary: &Path| admin_upgrade(&sock, binary);
    let refused = call(Path::new("/nonexistent/shimgate"));
    assert_eq!(refused.code, 9, "{}", refused.message); // FAILED_PRECONDITION
    assert!(
        refused.message.starts_with("upgrade refused: "),
        "{}",
        refused.message
    );
    let rolled_back = call(&next);
    assert_eq!(rolled_back.code, 10, "{}", rolled_back.message); // ABORTED
    assert!(
        rolled_back.message.contains("refused on purpose")
            && rolled_back.message.contains("serves on"),
        "{}",
        rolled_back.message
    );
    let e = c.ctr(&["task", "exec", "--exec-id", "e1", &id, "echo", "fine"]);
    assert_eq!((e.code, e.text()), (0, "fine\n".to_string()));
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    let _ = c.ctr(&["task", "rm", &id]);
    let _ = c.ctr(&["container", "rm", &id]);
    c.assert_clean();
}

/// Binaries that cannot take over are refused before anything stops: one that is not
/// shimgate at all (by the tool), one that speaks only a future hand-over format (by the
/// shim). Without `--binary` a shim re-executes the binary installed under its own name.
#[test]
fn unusable_binaries_are_refused() {
    let Some(c) = Ctd::start() else { return };
    let rt = RUNC_V2;
    let before = c.shim_pids();
    let id = c.id("stay");
    c.run_detached(rt, &id, &[], &["sleep", "600"]);
    let shim = new_shims(&c, &before)[0];

    // A dry run lists the shim and touches nothing; a pid that is no shim is an error.
    let (out, listed) = upgrade(&[shim], None, &["--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.brief());
    assert_eq!(listed.len(), 1, "{}", out.text());
    assert_eq!(listed[0]["from"], THIS_VERSION, "{}", out.text());
    assert_eq!(listed[0]["result"], "would-upgrade", "{}", out.text());
    assert_eq!(
        listed[0]["containers"],
        serde_json::json!([id]),
        "{}",
        out.text()
    );
    assert_eq!(upgrade(&[1], None, &["--dry-run"]).0.code, 1);

    let (out, _) = upgrade(&[shim], Some(Path::new("/bin/true")), &[]);
    assert_eq!(out.code, 3, "refused, nothing changed: {}", out.brief());
    assert!(out.err().contains("not a shimgate"), "{}", out.err());

    let future = c.dir.join("future-shimgate");
    std::fs::write(
        &future,
        "#!/bin/sh\necho '{\"version\":\"9.0.0\",\"formats\":[2]}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&future, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (out, outcomes) = upgrade(&[shim], Some(&future), &[]);
    assert_eq!(out.code, 1, "{}", out.brief());
    let err = outcomes[0]["error"].as_str().unwrap_or("");
    assert!(err.contains("formats [2]"), "{err}");
    assert_eq!(outcomes[0]["result"], "failed");
    let e = c.ctr(&["task", "exec", "--exec-id", "e1", &id, "echo", "fine"]);
    assert_eq!((e.code, e.text()), (0, "fine\n".to_string()));

    // The default: the binary installed as containerd-shim-runc-v2 (this one again).
    let (out, outcomes) = upgrade(&[shim], None, &[]);
    assert_eq!(out.code, 0, "{}", out.brief());
    assert_eq!(outcomes[0]["to"], THIS_VERSION);
    assert_eq!(outcomes[0]["result"], "upgraded");
    let e = c.ctr(&["task", "exec", "--exec-id", "e2", &id, "echo", "fine"]);
    assert_eq!((e.code, e.text()), (0, "fine\n".to_string()));
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    let _ = c.ctr(&["task", "rm", &id]);
    let _ = c.ctr(&["container", "rm", &id]);
    c.assert_clean();
}

/// Start `argv` as a child of this process with exactly the pid `pid` (`clone3` with
/// `set_tid`, as root), so a test can put a decoy where a dead process's pid was. `None` when
/// the pid is taken already.
fn spawn_with_pid(pid: i32, argv: &[&str]) -> Option<i32> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let cargs: Vec<std::ffi::CString> = argv
        .iter()
        .map(|a| std::ffi::CString::new(*a).unwrap())
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let tid = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: clone3 with a fully initialised argument block; the child only calls execv
    // (async-signal-safe) on memory prepared before the call, then _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: in the child: replace the image at once.
        unsafe {
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    (r > 0).then_some(r as i32)
}

/// A child started by [`spawn_with_pid`]: killed and reaped when dropped, also when an
/// assertion fails first, so a failing test leaves no process behind.
struct Decoy(Option<i32>);

impl Drop for Decoy {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            // SAFETY: kill and waitpid with integer arguments on our own child, which is
            // alive until this signal (the orphan reaper takes only zombies).
            unsafe {
                libc::kill(d, libc::SIGKILL);
                libc::waitpid(d, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn alive_not_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let st = s.rsplit_once(')').map(|x| x.1.trim_start()).unwrap_or("");
            !st.starts_with('Z') && !st.starts_with('X')
        })
        .unwrap_or(false)
}

/// A container whose logging binary (`binary://`) ended on its own before the upgrade: the
/// new image must not "stop the logger" by its old pid, which by then belongs to another
/// process (here a decoy this test starts with exactly that pid); and Delete is answered
/// promptly instead of waiting for an exit that will never come.
fn an_exited_logger_is_left_alone_after_an_upgrade(rt: Runtime) {
    let Some(c) = Ctd::start() else { return };
    let next = root_safe(&next_binary(), &c.dir, "shimgate-next");
    let logger = c.dir.join("logger.sh");
    let pid_file = c.dir.join("logger.pid");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec 5>&-\nsleep 1\nexit 0\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = c.shim_pids();
    let id = c.id("logged");
    let uri = format!("binary://{}", logger.display());
    c.run_detached(rt, &id, &["--log-uri", &uri], &["sleep", "600"]);
    let shim = new_shims(&c, &before)[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    let logger_pid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the logger never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    while Path::new(&format!("/proc/{logger_pid}")).exists() {
        assert!(Instant::now() < deadline, "the logger did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let decoy = Decoy(spawn_with_pid(logger_pid, &["/bin/sleep", "120"]));
    eprintln!("logger pid {logger_pid}; decoy {:?}", decoy.0);

    let (out, outcomes) = upgrade(&[shim], Some(&next), &[]);
    assert_eq!(out.code, 0, "{}", out.brief());
    assert_eq!(outcomes[0]["to"], NEXT_VERSION);
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).code, 0);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    let t = Instant::now();
    let rm = c.ctr_timeout(&["task", "rm", &id], Duration::from_secs(40));
    let took = t.elapsed();
    let decoy_alive = decoy.0.map(alive_not_zombie);
    drop(decoy);
    assert_ne!(
        decoy_alive,
        Some(false),
        "the process now holding the logger's old pid was signalled"
    );
    assert_eq!(rm.code, 0, "{}", rm.brief());
    assert!(took < Duration::from_secs(5), "Delete took {took:?}");
    let _ = c.ctr(&["container", "rm", &id]);
    c.assert_clean();
}

#[test]
fn runcv2_an_exited_logger_is_left_alone_after_an_upgrade() {
    an_exited_logger_is_left_alone_after_an_upgrade(RUNC_V2);
}

#[test]
fn v1linux_an_exited_logger_is_left_alone_after_an_upgrade() {
    an_exited_logger_is_left_alone_after_an_upgrade(V1_LINUX);
}

/// The shim itself (not only the operator tool, which a caller can bypass by speaking to the
/// socket) refuses to become, or even run, a binary that others than root could have
/// written: one inside a container's bundle, one writable by its group, one in a directory
/// anybody may write to. Each would print a marker if it ran.
#[test]
fn the_shim_refuses_targets_others_could_have_written() {
    let Some(c) = Ctd::start() else { return };
    let id = c.id("tgt");
    c.run_detached(RUNC_V2, &id, &[], &["sleep", "600"]);
    let marker = c.dir.join("target-ran");
    let body = format!("#!/bin/sh\ntouch {}\n", marker.display());
    let open_dir = c.dir.join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(
        &open_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let cases = [
        (c.bundle(&id).join("evil"), 0o755, "inside the bundle"),
        (c.dir.join("group-writable"), 0o775, "written by others"),
        (open_dir.join("evil"), 0o755, "can be written by others"),
    ];
    let sock = c.socket_for(&id);
    for (path, mode, why) in &cases {
        std::fs::write(path, &body).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(*mode))
            .unwrap();
        let r = admin_upgrade(&sock, path);
        assert_eq!(r.code, 9, "{}: {}", path.display(), r.message); // FAILED_PRECONDITION
        assert!(r.message.contains(why), "{}: {}", path.display(), r.message);
        assert!(!marker.exists(), "{} was run", path.display());
        let _ = std::fs::remove_file(path);
    }
    let e = c.ctr(&["task", "exec", "--exec-id", "e1", &id, "echo", "fine"]);
    assert_eq!((e.code, e.text()), (0, "fine\n".to_string()));
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    assert_eq!(c.ctr(&["task", "rm", &id]).code, 0);
    let _ = c.ctr(&["container", "rm", &id]);
    c.assert_clean();
}

/// Test-only knobs are not in the binary under test (built like the one operators run), only
/// in the tests' second build, which enables the `test-faults` feature.
#[test]
fn fault_knobs_exist_only_in_the_test_build() {
    let has = |p: &Path, needle: &[u8]| {
        std::fs::read(p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    };
    for knob in [&b"SHIMGATE_UPGRADE_FAULT"[..], b"SHIMGATE_TEST_FAULT"] {
        let name = String::from_utf8_lossy(knob);
        assert!(
            !has(&shimgate_bin(), knob),
            "{name} in {}",
            shimgate_bin().display()
        );
        assert!(
            has(&next_binary(), knob),
            "{name} missing from the test build"
        );
    }
}

/// Hand-over time (quiesce to serving again, as the new image reports it) for a runc.v2 group
/// shim holding 1 and 20 containers, upgrading to the installed binary (this one) several
/// times. A measurement, not a check: run by `scripts/upgrade-bench.sh` on a release build.
#[test]
#[ignore]
fn handover_duration() {
    let Some(c) = Ctd::start() else { return };
    let rt = RUNC_V2;
    let ann = format!("io.containerd.runc.v2.group={}", c.id("grp"));
    let before = c.shim_pids();
    let mut ids = Vec::new();
    let mut report = Vec::new();
    for want in [1usize, 20] {
        while ids.len() < want {
            let id = c.id("bench");
            c.run_detached(rt, &id, &["--annotation", &ann], &["sleep", "600"]);
            ids.push(id);
        }
        let shim = new_shims(&c, &before)[0];
        let mut micros = Vec::new();
        for _ in 0..7 {
            let (out, outcomes) = upgrade(&[shim], None, &[]);
            assert_eq!(out.code, 0, "{}", out.brief());
            micros.push(outcomes[0]["handover_micros"].as_u64().unwrap());
            std::thread::sleep(Duration::from_millis(200));
        }
        micros.sort_unstable();
        report.push(format!(
            "{want} container(s): median {:.2} ms, min {:.2} ms, max {:.2} ms over {} upgrades",
            micros[micros.len() / 2] as f64 / 1000.0,
            micros[0] as f64 / 1000.0,
            micros[micros.len() - 1] as f64 / 1000.0,
            micros.len()
        ));
    }
    for id in &ids {
        c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    }
    for id in &ids {
        assert!(c.wait_status(id, "STOPPED", Duration::from_secs(10)));
        let _ = c.ctr(&["task", "rm", id]);
        let _ = c.ctr(&["container", "rm", id]);
    }
    println!("hand-over duration ({}):", shimgate_bin().display());
    for r in report {
        println!("  {r}");
    }
}
