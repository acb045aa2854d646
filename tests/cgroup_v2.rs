//! The cgroup v2 suite: shimgate's release binary under a real containerd on a host with the
//! pure unified hierarchy, per containerd series, personality and runtime (runc, and crun
//! through the runc options' `BinaryName`).
//!
//! This machine boots cgroup v1 hybrid. There, [`cgv2_guest`] builds the release binary, boots a
//! throwaway VM with a pure cgroup v2 hierarchy and systemd as PID 1 over this machine's
//! filesystem (`scripts/cgv2-vm.sh --systemd`) and runs this same test binary inside it
//! (`SHIMGATE_BIN` pointing at the release build); it fails when a guest test fails, printing
//! the guest's console. On a pure v2 host (the guest, or a real one) the scenario tests run
//! directly and `cgv2_guest` has nothing to do; elsewhere the scenarios return at once (they
//! ran in the guest).
//!
//! Each scenario test is one private containerd holding a few related checks, because under
//! the guest's software emulation a containerd start costs seconds and a container lifecycle
//! several: lifecycle (exit codes, exec, stdin, tty, signals, ps, the container's cgroup and
//! its removal), resources (`Metrics` against the cgroup files, `Update` with unified
//! resources, pause/resume through `cgroup.freeze`, a pids limit), OOM (`memory.events` -> one
//! `/tasks/oom` before the exit), containerd restart, checkpoint/restore (CRIU), runc.v2
//! grouping, the systemd cgroup driver, and what cannot run: the legacy runtime (refused, with
//! nothing left behind) and crun 1.8.1 under containerd 2.3. `SHIMGATE_CGV2_FILTER` narrows the
//! guest run to matching tests (libtest filters, separated by spaces).

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::pty::pty_run_limit;
use common::*;

/// How the guest runs a scenario: the runtime type containerd asks for and the runc-compatible
/// binary the shim drives (`None`: runc, the default).
#[derive(Debug, Clone, Copy)]
struct Variant {
    series: Series,
    rt: Runtime,
    binary: Option<&'static str>,
}

/// Whether this host itself is pure cgroup v2 (the scenarios' precondition).
fn on_v2() -> bool {
    shimgate::engine::cgroup::is_v2_unified()
}

/// Start the scenario: None (return at once) on a host that is not pure cgroup v2, where
/// [`cgv2_guest`] runs the scenarios in a VM instead, or when integration tests are skipped.
fn begin(v: Variant, name: &str) -> Option<(Ctd, Timer)> {
    if !on_v2() {
        return None;
    }
    if let Some(b) = v.binary {
        assert!(which(b).is_some(), "{b} is not installed");
    }
    let t = Instant::now();
    let c = Ctd::start_series(v.series, Shims::Ours)?;
    let mut timer = Timer::new(name, v);
    timer.containerd_up = t.elapsed();
    timer.start = t;
    Some((c, timer))
}

/// Records a scenario's verdict (PASS, or FAIL when it panicked) and duration in
/// `$SHIMGATE_CGV2_RESULTS/times`, which [`cgv2_guest`] prints as its summary.
struct Timer {
    name: String,
    start: Instant,
    /// How long the private containerd took to answer.
    containerd_up: Duration,
}

impl Timer {
    fn new(name: &str, v: Variant) -> Timer {
        Timer {
            name: format!(
                "containerd-{} {} {} {name}",
                v.series.name(),
                v.rt.short,
                v.binary.unwrap_or("runc")
            ),
            start: Instant::now(),
            containerd_up: Duration::ZERO,
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let verdict = if std::thread::panicking() {
            "FAIL"
        } else {
            "PASS"
        };
        if let Some(dir) = std::env::var_os("SHIMGATE_CGV2_RESULTS") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(&dir).join("times"))
            {
                let _ = writeln!(
                    f,
                    "{} {verdict} {:.1} s (containerd up in {:.1} s)",
                    self.name,
                    self.start.elapsed().as_secs_f64(),
                    self.containerd_up.as_secs_f64()
                );
            }
        }
    }
}

/// `ctr run` flags selecting the variant's runtime binary.
fn rflags<'a>(v: Variant, extra: &[&'a str]) -> Vec<&'a str> {
    let mut f = Vec::new();
    if let Some(b) = v.binary {
        f.extend(["--runc-binary", b]);
    }
    f.extend_from_slice(extra);
    f
}

fn run(c: &Ctd, v: Variant, id: &str, flags: &[&str], cmd: &[&str]) -> Out {
    c.run(v.rt, id, &rflags(v, flags), cmd)
}

fn run_detached(c: &Ctd, v: Variant, id: &str, flags: &[&str], cmd: &[&str]) {
    c.run_detached(v.rt, id, &rflags(v, flags), cmd)
}

/// The cgroup directory containerd's default cgroups path gives a task: `/<ns>/<id>`.
fn cgroup_dir(c: &Ctd, id: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(&c.ns).join(id)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// `key value` lines of a cgroup v2 file (`memory.events`, `cpu.stat`, `cgroup.events`).
fn kv(p: &Path, key: &str) -> u64 {
    read(p)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {key} in {}", p.display()))
}

fn exec(c: &Ctd, id: &str, exec_id: &str, cmd: &[&str]) -> Out {
    let mut a = vec!["task", "exec", "--exec-id", exec_id, id];
    a.extend_from_slice(cmd);
    c.ctr(&a)
}

/// Kill, wait for STOPPED, delete; then the container's cgroup must be gone.
fn remove(c: &Ctd, id: &str) {
    let cg = cgroup_dir(c, id);
    c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    assert!(
        c.wait_status(id, "STOPPED", Duration::from_secs(30)),
        "{id} did not stop: {:?}",
        c.tasks()
    );
    let r = c.ctr(&["task", "rm", id]);
    assert_eq!(r.code, 0, "task rm {id}: {}", r.brief());
    assert!(!cg.exists(), "cgroup {} left after delete", cg.display());
    let r = c.ctr(&["c", "rm", id]);
    assert_eq!(r.code, 0, "c rm {id}: {}", r.brief());
}

/// Everything removed, nothing leaked, and no cgroup of ours under the namespace's directory.
fn assert_clean_v2(c: &Ctd) {
    c.assert_clean();
    let ns = Path::new("/sys/fs/cgroup").join(&c.ns);
    let left: Vec<String> = std::fs::read_dir(&ns)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Exit codes, output, exec (codes, stdin, terminal), signals, ps, and the task's cgroup: its
/// path, its members, its removal with the task.
fn lifecycle(v: Variant) {
    let Some((c, _t)) = begin(v, "lifecycle") else {
        return;
    };
    // Init: output on both streams and its exit code.
    let id = c.id("life");
    let r = run(
        &c,
        v,
        &id,
        &["--rm"],
        &["sh", "-c", "echo out-line; echo err-line >&2; exit 42"],
    );
    assert_eq!(r.code, 42, "{}", r.brief());
    assert_eq!(r.stdout, b"out-line\n");
    assert!(r.err().contains("err-line"), "{}", r.brief());
    assert!(!cgroup_dir(&c, &id).exists(), "cgroup of {id} left");

    // A running task: its cgroup, execs, ps.
    let id = c.id("life");
    run_detached(&c, v, &id, &[], &["sleep", "300"]);
    let pid = c.tasks()[&id].0;
    let cg = cgroup_dir(&c, &id);
    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    assert_eq!(own, format!("0::/{}/{id}", c.ns), "init's cgroup");
    assert!(read(&cg.join("cgroup.procs"))
        .lines()
        .any(|l| l == pid.to_string()));
    // An exec joins the same cgroup (ctr's default spec has no cgroup namespace).
    let e = exec(&c, &id, "cgns", &["cat", "/proc/self/cgroup"]);
    assert_eq!(e.code, 0, "{}", e.brief());
    assert_eq!(e.text().trim(), own, "{}", e.brief());
    let e = exec(
        &c,
        &id,
        "x1",
        &["sh", "-c", "echo exec-out; echo exec-err >&2; exit 7"],
    );
    assert_eq!(e.code, 7, "{}", e.brief());
    assert_eq!(e.stdout, b"exec-out\n");
    assert!(e.err().contains("exec-err"));
    let e = exec(&c, &id, "k9", &["sh", "-c", "kill -9 $$"]);
    assert_eq!(e.code, 137, "{}", e.brief());
    let e = run_cmd(
        c.ctr_cmd()
            .args(["task", "exec", "--exec-id", "in1", &id, "cat"]),
        Some(b"through-exec\n"),
        Duration::from_secs(60),
    );
    assert_eq!(e.stdout, b"through-exec\n", "{}", e.brief());
    let mut cmd = c.ctr_cmd();
    cmd.args([
        "task",
        "exec",
        "-t",
        "--exec-id",
        "t1",
        &id,
        "sh",
        "-c",
        "[ -t 1 ] && echo EXEC-TTY; echo READY; read y; echo e-$y; exit 6",
    ]);
    let (code, out) = pty_run_limit(cmd, b"xyz\r", Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("EXEC-TTY") && text.contains("e-xyz"),
        "{text}"
    );
    assert_eq!(code, 6, "{text}");
    // ps (ListPids reads cgroup.procs): init and a running exec.
    let bg = exec(&c, &id, "bg", &["sh", "-c", "sleep 300 >/dev/null 2>&1 &"]);
    assert_eq!(bg.code, 0, "{}", bg.brief());
    let pids: Vec<u32> = c
        .ctr(&["task", "ps", &id])
        .text()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let procs: Vec<u32> = read(&cg.join("cgroup.procs"))
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert!(pids.contains(&pid) && pids.len() >= 2, "ps {pids:?}");
    let mut a = pids.clone();
    let mut b = procs.clone();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "ps against cgroup.procs");
    remove(&c, &id);

    // Init stdin (fed once the task runs) and a terminal.
    let id = c.id("life");
    let args = c.run_args(v.rt, &id, &rflags(v, &["--rm"]), &["cat"]);
    let payload: Vec<u8> = (0..(256u32 << 10)).map(|i| (i % 251) as u8).collect();
    let (code, timed_out, got) = c.run_with_stdin(
        &id,
        &args,
        payload.clone(),
        Duration::from_secs(30),
        Duration::from_secs(120),
    );
    assert!(!timed_out && code == 0, "stdin run: {code}");
    assert!(got == payload, "stdin round trip differs");

    let id = c.id("life");
    let args = c.run_args(
        v.rt,
        &id,
        &rflags(v, &["--rm", "-t"]),
        &[
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo IS-A-TTY; echo READY; read x; echo got-$x; exit 5",
        ],
    );
    let mut cmd = c.ctr_cmd();
    cmd.args(&args);
    let (code, out) = pty_run_limit(cmd, b"abc\r", Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("IS-A-TTY") && text.contains("got-abc"),
        "{text}"
    );
    assert_eq!(code, 5, "{text}");

    // Signals to init: SIGKILL, and SIGTERM --all through a shell that passes it on.
    for (cmd, all, want) in [
        (&["sleep", "300"][..], false, 137),
        (&["sh", "-c", "sleep 300; exit $?"][..], true, 143),
    ] {
        let id = c.id("sig");
        let args = c.run_args(v.rt, &id, &rflags(v, &["--rm"]), cmd);
        let child = spawn(
            c.ctr_cmd()
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(c.wait_status(&id, "RUNNING", Duration::from_secs(30)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while all
            && read(&cgroup_dir(&c, &id).join("cgroup.procs"))
                .lines()
                .count()
                < 2
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut k = vec![
            "task",
            "kill",
            "-s",
            if all { "SIGTERM" } else { "SIGKILL" },
        ];
        if all {
            k.push("--all");
        }
        k.push(&id);
        let r = c.ctr(&k);
        assert_eq!(r.code, 0, "kill: {}", r.brief());
        let (code, timed_out) = finish(child, Duration::from_secs(60));
        assert!(!timed_out, "ctr run did not return after the signal");
        assert_eq!(code, want);
        assert!(!cgroup_dir(&c, &id).exists(), "cgroup of {id} left");
    }
    assert_clean_v2(&c);
}

/// `ctr task metrics --format json`: the `io.containerd.cgroups.v2.Metrics` the shim reported.
fn metrics_json(c: &Ctd, id: &str) -> serde_json::Value {
    let r = c.ctr(&["task", "metrics", "--format", "json", id]);
    assert_eq!(r.code, 0, "metrics: {}", r.brief());
    serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("metrics JSON: {e}: {}", r.text()))
}

fn num(m: &serde_json::Value, path: &str) -> u64 {
    path.split('.')
        .try_fold(m, |v, k| v.get(k))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// Metrics against the cgroup files, Update with unified resources, a pids limit that holds,
/// pause/resume through `cgroup.freeze`.
fn resources(v: Variant) {
    let Some((c, _t)) = begin(v, "resources") else {
        return;
    };
    let id = c.id("res");
    let limit: u64 = 96 << 20;
    run_detached(
        &c,
        v,
        &id,
        &["--memory-limit", &limit.to_string()],
        &["sleep", "300"],
    );
    let cg = cgroup_dir(&c, &id);
    // Some CPU time and memory to report.
    let e = exec(
        &c,
        &id,
        "busy",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
        ],
    );
    assert_eq!(e.code, 0, "{}", e.brief());

    let m = metrics_json(&c, &id);
    assert_eq!(
        num(&m, "pids.current"),
        read(&cg.join("pids.current")).parse::<u64>().unwrap(),
        "pids.current: {m}"
    );
    assert_eq!(num(&m, "memory.usage_limit"), limit, "memory limit: {m}");
    let mem = read(&cg.join("memory.current")).parse::<u64>().unwrap();
    let usage = num(&m, "memory.usage");
    assert!(
        usage > 0 && usage <= limit && usage.abs_diff(mem) <= mem.max(usage) / 2 + (1 << 20),
        "memory.usage {usage} vs memory.current {mem}: {m}"
    );
    let cpu = num(&m, "cpu.usage_usec");
    let cpu_file = kv(&cg.join("cpu.stat"), "usage_usec");
    assert!(
        cpu > 0 && cpu <= cpu_file,
        "cpu.usage_usec {cpu} vs file {cpu_file}: {m}"
    );
    assert!(
        num(&m, "memory.file") + num(&m, "memory.anon") > 0,
        "memory.stat fields: {m}"
    );

    // Update: containerd's Tasks.Update with classic and unified resources.
    let new_limit: u64 = 80 << 20;
    let high: u64 = 72 << 20;
    let res = format!(
        r#"{{"memory":{{"limit":{new_limit}}},"cpu":{{"quota":50000,"period":100000}},"pids":{{"limit":16}},"unified":{{"memory.high":"{high}"}}}}"#
    );
    let (status, msg) = grpc::unary(
        &c.addr,
        &c.ns,
        "/containerd.services.tasks.v1.Tasks/Update",
        grpc::update_task_request(&id, &res),
    );
    assert_eq!(status, 0, "Update: {msg}");
    assert_eq!(read(&cg.join("memory.max")), new_limit.to_string());
    assert_eq!(read(&cg.join("memory.high")), high.to_string());
    assert_eq!(read(&cg.join("cpu.max")), "50000 100000");
    assert_eq!(read(&cg.join("pids.max")), "16");
    let m = metrics_json(&c, &id);
    assert_eq!(num(&m, "pids.limit"), 16, "{m}");
    assert_eq!(num(&m, "memory.usage_limit"), new_limit, "{m}");

    // Pause and resume: the cgroup freezer of v2.
    assert_eq!(c.ctr(&["task", "pause", &id]).code, 0);
    assert!(c.wait_status(&id, "PAUSED", Duration::from_secs(30)));
    assert_eq!(read(&cg.join("cgroup.freeze")), "1");
    assert_eq!(kv(&cg.join("cgroup.events"), "frozen"), 1);
    let e = exec(&c, &id, "p1", &["true"]);
    assert_ne!(e.code, 0, "exec into a paused task: {}", e.brief());
    let m = metrics_json(&c, &id);
    assert!(num(&m, "pids.current") >= 1, "metrics while paused: {m}");
    assert_eq!(c.ctr(&["task", "resume", &id]).code, 0);
    assert!(c.wait_status(&id, "RUNNING", Duration::from_secs(30)));
    assert_eq!(read(&cg.join("cgroup.freeze")), "0");
    assert_eq!(kv(&cg.join("cgroup.events"), "frozen"), 0);
    let e = exec(&c, &id, "after", &["sh", "-c", "echo thawed"]);
    assert!(e.code == 0 && e.stdout == b"thawed\n", "{}", e.brief());
    // Last, as its processes fill the limit: the pids limit holds. Forks beyond it fail (the
    // shell gives up at the first refusal) and the kernel counts the refusals.
    let e = exec(
        &c,
        &id,
        "forks",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 30 ]; do sleep 120 & i=$((i+1)); done; echo all-forked",
        ],
    );
    assert!(
        e.code != 0 && !e.text().contains("all-forked"),
        "30 forks under pids.max 16: {}",
        e.brief()
    );
    assert!(
        read(&cg.join("pids.current")).parse::<u64>().unwrap() <= 16,
        "pids.current above pids.max"
    );
    assert!(
        kv(&cg.join("pids.events"), "max") > 0,
        "no fork was refused"
    );
    remove(&c, &id);
    assert_clean_v2(&c);
}

/// An OOM kill: `memory.events` counts it and containerd hears exactly one `/tasks/oom`, before
/// the task's exit.
fn oom(v: Variant) {
    let Some((c, _t)) = begin(v, "oom") else {
        return;
    };
    let ev = Events::watch(&c);
    let id = c.id("oom");
    // tail keeps a newline-free stream in memory: it is OOM-killed, and sh passes that on.
    // Detached, without waiting for RUNNING: the OOM kill may come first.
    let r = run(
        &c,
        v,
        &id,
        &["-d", "--memory-limit", "33554432"],
        &["sh", "-c", "cat /dev/zero | tail; exit $?"],
    );
    assert_eq!(r.code, 0, "{}", r.brief());
    assert!(
        c.wait_status(&id, "STOPPED", Duration::from_secs(120)),
        "{:?}",
        c.tasks()
    );
    let cg = cgroup_dir(&c, &id);
    assert!(kv(&cg.join("memory.events"), "oom_kill") >= 1);
    ev.wait_until("oom and exit", Duration::from_secs(30), |_| {
        !ev.of("/tasks/oom", &id).is_empty() && !ev.of("/tasks/exit", &id).is_empty()
    });
    // Late duplicates would arrive now.
    std::thread::sleep(Duration::from_millis(500));
    let all = ev.all();
    let oom_at = all
        .iter()
        .position(|e| e.topic == "/tasks/oom" && e.str("container_id") == id)
        .unwrap();
    let exit_at = all
        .iter()
        .position(|e| e.topic == "/tasks/exit" && e.str("container_id") == id)
        .unwrap();
    assert!(oom_at < exit_at, "OOM after exit:\n{}", ev.dump());
    assert_eq!(ev.of("/tasks/oom", &id).len(), 1, "{}", ev.dump());
    assert_eq!(ev.of("/tasks/exit", &id)[0].num("exit_status"), 137);
    remove(&c, &id);
    assert_clean_v2(&c);
}

/// containerd SIGKILLed and restarted: the running task keeps its shim and stays controllable;
/// a task that exits during the outage reports its status afterwards (1.x), or is deleted by
/// containerd 2.x as it loads the shims (its own rule, the same with the Go shim), and leaves
/// no cgroup either way.
fn containerd_restart(v: Variant) {
    let Some((mut c, _t)) = begin(v, "containerd_restart") else {
        return;
    };
    let id = c.id("rst");
    run_detached(&c, v, &id, &[], &["sleep", "300"]);
    let before = c.shim_pids();
    let id2 = c.id("rst");
    run_detached(&c, v, &id2, &[], &["sleep", "300"]);
    let pid2 = c.tasks()[&id2].0;
    // containerd goes down; then id2 exits; then containerd comes back.
    // SAFETY: signalling the containerd this test started.
    unsafe {
        libc::kill(c.pid() as i32, libc::SIGKILL);
    }
    // SAFETY: signalling the container's init (id2), which this test started.
    unsafe {
        libc::kill(pid2 as i32, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid2}")).exists() {
        assert!(Instant::now() < deadline, "{id2} did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.restart(libc::SIGKILL);
    assert!(
        c.wait_status(&id, "RUNNING", Duration::from_secs(60)),
        "{:?}",
        c.tasks()
    );
    let after = c.shim_pids();
    assert!(
        before.iter().all(|p| after.contains(p)),
        "the running task's shim did not survive: {before:?} -> {after:?}\n{}",
        c.log_tail(40)
    );
    let e = exec(&c, &id, "post", &["sh", "-c", "echo alive"]);
    assert!(e.code == 0 && e.stdout == b"alive\n", "{}", e.brief());
    if v.series.is_2x() {
        // containerd 2.x deletes, while it loads its shims, every task whose shim reports no
        // processes (containerd/containerd#6860: "cleaning leaked shim process"); the Go shim
        // reports none for an exited task too (`runc ps` is empty), so the task is gone.
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.tasks().contains_key(&id2) {
            assert!(Instant::now() < deadline, "{:?}", c.tasks());
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            c.log().contains("cleaning leaked shim process"),
            "{}",
            c.log_tail(40)
        );
    } else {
        assert!(
            c.wait_status(&id2, "STOPPED", Duration::from_secs(60)),
            "{:?}",
            c.tasks()
        );
        let r = c.ctr(&["task", "rm", &id2]);
        assert!(
            r.code == 0 && r.err().contains("exit code 137"),
            "exit status after the outage: {}",
            r.brief()
        );
    }
    assert!(!cgroup_dir(&c, &id2).exists());
    c.ctr(&["c", "rm", &id2]);
    remove(&c, &id);
    assert_clean_v2(&c);
}

/// Checkpoint a running task with CRIU (to a directory) and restore it into a new task of the
/// same container: the process continues from its saved state.
fn checkpoint_restore(v: Variant) {
    let Some((c, _t)) = begin(v, "checkpoint_restore") else {
        return;
    };
    let id = c.id("ckpt");
    // A counter only the checkpointed memory knows: a restart would begin again at 1.
    run_detached(
        &c,
        v,
        &id,
        &[],
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /run/n; sleep 0.2; done",
        ],
    );
    let count = |c: &Ctd, exec_id: &str| -> u64 {
        let e = exec(c, &id, exec_id, &["cat", "/run/n"]);
        assert_eq!(e.code, 0, "{}", e.brief());
        e.text().trim().parse().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&c, "n0") < 5 {
        assert!(Instant::now() < deadline, "counter does not run");
        std::thread::sleep(Duration::from_millis(200));
    }
    let images = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let r = c.ctr_timeout(
        &[
            "task",
            "checkpoint",
            "--exit",
            "--image-path",
            &images.path().display().to_string(),
            "--work-path",
            &work.path().display().to_string(),
            &id,
        ],
        Duration::from_secs(180),
    );
    let dump_log = std::fs::read_to_string(work.path().join("dump.log")).unwrap_or_default();
    assert_eq!(
        r.code,
        0,
        "checkpoint: {}\ndump.log tail:\n{}",
        r.brief(),
        tail(&dump_log, 30)
    );
    assert!(
        c.wait_status(&id, "STOPPED", Duration::from_secs(30)),
        "--exit: {:?}",
        c.tasks()
    );
    let saved = std::fs::read_dir(images.path())
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(saved > 0, "no CRIU images written");
    let r = c.ctr(&["task", "rm", &id]);
    assert_eq!(r.code, 0, "{}", r.brief());

    // Restore: Tasks.Create naming the image directory in the runc options, then Start.
    let (status, msg) = grpc::unary(
        &c.addr,
        &c.ns,
        "/containerd.services.tasks.v1.Tasks/Create",
        grpc::create_task_request(&id, &restore_options(v, images.path())),
    );
    assert_eq!(status, 0, "restore (Create): {msg}\n{}", c.log_tail(30));
    let (status, msg) = grpc::unary(
        &c.addr,
        &c.ns,
        "/containerd.services.tasks.v1.Tasks/Start",
        grpc::start_task_request(&id),
    );
    assert_eq!(status, 0, "restore (Start): {msg}\n{}", c.log_tail(30));
    assert!(
        c.wait_status(&id, "RUNNING", Duration::from_secs(30)),
        "{:?}",
        c.tasks()
    );
    let at_restore = count(&c, "n1");
    assert!(at_restore >= 5, "counter restarted: {at_restore}");
    std::thread::sleep(Duration::from_secs(2));
    let later = count(&c, "n2");
    assert!(later > at_restore, "restored counter is not running");
    assert!(cgroup_dir(&c, &id).exists(), "restored task's cgroup");
    remove(&c, &id);
    assert_clean_v2(&c);
}

/// `containerd.runc.v1.Options` as an Any: the runtime binary and the CRIU image directory.
fn restore_options(v: Variant, images: &Path) -> Vec<u8> {
    let mut o = Vec::new();
    if let Some(b) = v.binary {
        grpc::field(6, b.as_bytes(), &mut o);
    }
    grpc::field(10, images.display().to_string().as_bytes(), &mut o);
    let mut any = Vec::new();
    grpc::field(1, b"containerd.runc.v1.Options", &mut any);
    grpc::field(2, &o, &mut any);
    any
}

fn tail(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

/// Checkpoint where the runtime has no CRIU support (Debian's crun 1.8.1 is built without
/// it): a clear error and the task keeps running.
fn checkpoint_unsupported(v: Variant) {
    let Some((c, _t)) = begin(v, "checkpoint_unsupported") else {
        return;
    };
    let id = c.id("ckpt");
    run_detached(&c, v, &id, &[], &["sleep", "300"]);
    let images = tempfile::tempdir().unwrap();
    let r = c.ctr_timeout(
        &[
            "task",
            "checkpoint",
            "--image-path",
            &images.path().display().to_string(),
            &id,
        ],
        Duration::from_secs(120),
    );
    assert_ne!(r.code, 0, "{}", r.brief());
    assert!(r.err().contains("checkpoint"), "{}", r.brief());
    assert!(c.wait_status(&id, "RUNNING", Duration::from_secs(30)));
    let e = exec(&c, &id, "after", &["true"]);
    assert_eq!(e.code, 0, "{}", e.brief());
    remove(&c, &id);
    assert_clean_v2(&c);
}

/// runc.v2 groups: one shim for a group, a cgroup per container, each removed with its task.
fn grouping(v: Variant) {
    let Some((c, _t)) = begin(v, "grouping") else {
        return;
    };
    let group = c.id("grp");
    let ann = format!("io.containerd.runc.v2.group={group}");
    let ids: Vec<String> = (0..2).map(|_| c.id("grpc")).collect();
    for id in &ids {
        run_detached(&c, v, id, &["--annotation", &ann], &["sleep", "300"]);
    }
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the group: {shims:?}");
    for id in &ids {
        let pid = c.tasks()[id].0;
        assert_eq!(
            read(Path::new(&format!("/proc/{pid}/cgroup"))),
            format!("0::/{}/{id}", c.ns)
        );
        let m = metrics_json(&c, id);
        assert_eq!(num(&m, "pids.current"), 1, "{m}");
    }
    // The shim itself stays out of its containers' cgroups.
    let shim_cg = read(Path::new(&format!("/proc/{}/cgroup", shims[0])));
    assert!(
        !ids.iter().any(|id| shim_cg.ends_with(&format!("/{id}"))),
        "shim inside a container's cgroup: {shim_cg}"
    );
    remove(&c, &ids[0]);
    let e = exec(&c, &ids[1], "g1", &["sh", "-c", "echo still"]);
    assert!(e.code == 0 && e.stdout == b"still\n", "{}", e.brief());
    remove(&c, &ids[1]);
    assert_clean_v2(&c);
}

/// The systemd cgroup driver (`SystemdCgroup = true`, ctr's `--runc-systemd-cgroup`): the
/// runtime asks systemd (PID 1 in the guest) for a transient scope; the shim finds the cgroup
/// there for metrics, OOM events, update and pause, and the scope goes with the task.
fn systemd_driver(v: Variant) {
    let Some((c, _t)) = begin(v, "systemd_driver") else {
        return;
    };
    assert!(
        Path::new("/run/systemd/system").is_dir(),
        "systemd is not PID 1 here: the systemd cgroup driver needs it"
    );
    let ev = Events::watch(&c);
    let id = c.id("sd");
    // runc and crun map `slice:prefix:name` to `<slice>/<prefix>-<name>.scope`.
    let spec = format!("system.slice:{}:{id}", c.ns);
    let unit = format!("{}-{id}.scope", c.ns);
    let limit: u64 = 96 << 20;
    let limit_s = limit.to_string();
    let sd = ["--runc-systemd-cgroup", "--cgroup", spec.as_str()];
    let mut flags = sd.to_vec();
    flags.extend(["--memory-limit", limit_s.as_str()]);
    run_detached(&c, v, &id, &flags, &["sleep", "300"]);
    let pid = c.tasks()[&id].0;
    // runc puts the container in the scope itself; crun in a `container` cgroup inside it
    // (the scope's own cgroup then holds nothing, as cgroup v2 delegation wants).
    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    let scope = format!("0::/system.slice/{unit}");
    assert!(
        own == scope || own == format!("{scope}/container"),
        "init's cgroup {own}, scope {scope}"
    );
    let dir = Path::new("/sys/fs/cgroup").join(own.trim_start_matches("0::/"));
    let active = run_cmd(
        Command::new("systemctl").args(["is-active", &unit]),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(active.text().trim(), "active", "{}", active.brief());
    assert_eq!(read(&dir.join("memory.max")), limit_s);
    let m = metrics_json(&c, &id);
    assert_eq!(num(&m, "memory.usage_limit"), limit, "{m}");
    assert_eq!(
        num(&m, "pids.current"),
        read(&dir.join("pids.current")).parse::<u64>().unwrap(),
        "{m}"
    );
    let new_limit: u64 = 80 << 20;
    let (status, msg) = grpc::unary(
        &c.addr,
        &c.ns,
        "/containerd.services.tasks.v1.Tasks/Update",
        grpc::update_task_request(&id, &format!(r#"{{"memory":{{"limit":{new_limit}}}}}"#)),
    );
    assert_eq!(status, 0, "Update: {msg}");
    assert_eq!(read(&dir.join("memory.max")), new_limit.to_string());
    assert_eq!(c.ctr(&["task", "pause", &id]).code, 0);
    assert!(c.wait_status(&id, "PAUSED", Duration::from_secs(30)));
    assert_eq!(kv(&dir.join("cgroup.events"), "frozen"), 1);
    assert_eq!(c.ctr(&["task", "resume", &id]).code, 0);
    assert!(c.wait_status(&id, "RUNNING", Duration::from_secs(30)));
    let e = exec(&c, &id, "x", &["sh", "-c", "cat /proc/self/cgroup; exit 3"]);
    assert_eq!(e.code, 3, "{}", e.brief());
    assert_eq!(e.text().trim(), own);
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(30)));
    assert_eq!(c.ctr(&["task", "rm", &id]).code, 0);
    assert_eq!(c.ctr(&["c", "rm", &id]).code, 0);
    let scope_dir = Path::new("/sys/fs/cgroup/system.slice").join(&unit);
    assert!(!scope_dir.exists(), "scope left: {}", scope_dir.display());

    // An OOM kill inside a systemd scope: one /tasks/oom, before the exit.
    let id = c.id("sdoom");
    let spec = format!("system.slice:{}:{id}", c.ns);
    let unit = format!("{}-{id}.scope", c.ns);
    let flags = [
        "--runc-systemd-cgroup",
        "--cgroup",
        spec.as_str(),
        "--memory-limit",
        "33554432",
    ];
    let r = run(
        &c,
        v,
        &id,
        &[&["--rm"][..], &flags[..]].concat(),
        &["sh", "-c", "cat /dev/zero | tail"],
    );
    assert_eq!(r.code, 137, "{}", r.brief());
    ev.wait_until("oom and exit", Duration::from_secs(30), |_| {
        !ev.of("/tasks/oom", &id).is_empty() && !ev.of("/tasks/exit", &id).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let all = ev.all();
    let at = |topic: &str| {
        all.iter()
            .position(|e| e.topic == topic && e.str("container_id") == id)
            .unwrap()
    };
    assert!(at("/tasks/oom") < at("/tasks/exit"), "{}", ev.dump());
    assert_eq!(ev.of("/tasks/oom", &id).len(), 1, "{}", ev.dump());
    assert!(!Path::new("/sys/fs/cgroup/system.slice")
        .join(&unit)
        .exists());
    assert_clean_v2(&c);
}

/// Debian's crun 1.8.1 knows OCI runtime spec 1.0 only and refuses the spec containerd 2.3
/// writes (runtime-spec 1.3): every create fails in crun, whatever the shim. What the shim owes
/// then: crun's own words to the client, and nothing left behind. (A crun that accepts the
/// spec fails this test: then the full crun scenarios belong here.)
fn spec_too_new(v: Variant) {
    let Some((c, _t)) = begin(v, "spec_too_new") else {
        return;
    };
    let id = c.id("spec");
    let r = run(&c, v, &id, &["--rm"], &["echo", "ran"]);
    assert!(
        r.code != 0 && r.err().contains("unknown version specified"),
        "crun was expected to refuse containerd 2.3's spec: {}",
        r.brief()
    );
    assert!(!cgroup_dir(&c, &id).exists());
    assert!(!Path::new("/run/containerd/runc")
        .join(&c.ns)
        .join(&id)
        .exists());
    c.ctr(&["c", "rm", &id]);
    assert_clean_v2(&c);
}

/// The legacy runtime (`io.containerd.runtime.v1.linux`) cannot run on cgroup v2: containerd's
/// v1 runtime loads the task's cgroup as v1 after the shim created it and fails. The create must
/// fail with a clear error and leave nothing behind: no shim, bundle, runc state, process or
/// cgroup.
fn legacy_runtime(v: Variant) {
    let Some((c, _t)) = begin(v, "legacy_runtime") else {
        return;
    };
    let id = c.id("legacy");
    let r = run(
        &c,
        v,
        &id,
        &["--rm"],
        &["sh", "-c", "echo should-not-run; sleep 300"],
    );
    assert_ne!(r.code, 0, "{}", r.brief());
    assert!(
        r.err().contains("cgroup v2") && r.err().contains("io.containerd.runc.v2"),
        "the reason and the way out: {}",
        r.brief()
    );
    assert!(!r.text().contains("should-not-run"), "{}", r.brief());
    let state = Path::new("/run/containerd/runc").join(&c.ns).join(&id);
    let cg = cgroup_dir(&c, &id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while (state.exists() || cg.exists() || !c.shim_pids().is_empty()) && Instant::now() < deadline
    {
        reap_orphans();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!state.exists(), "runc state left: {}", state.display());
    assert!(
        !cg.exists(),
        "cgroup left: {} procs {:?}",
        cg.display(),
        std::fs::read_to_string(cg.join("cgroup.procs"))
    );
    assert!(c.shim_pids().is_empty(), "shims left: {:?}", c.shim_pids());
    assert!(!c.bundle_v1(&id).exists() && !c.workdir_v1(&id).exists());
    c.ctr(&["c", "rm", &id]);
    // doctor says so before anyone meets it: this daemon offers the legacy runtime.
    let d = run_cmd(
        Command::new(shimgate_bin()).args(["doctor", "--json"]),
        None,
        Duration::from_secs(120),
    );
    // By id and subject, the stable interface (only offered, not configured: info).
    let report: serde_json::Value = serde_json::from_slice(&d.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", d.brief()));
    let none = Vec::new();
    let ours: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap_or(&none)
        .iter()
        .filter(|f| f["id"] == "legacy-runtime-on-cgroup-v2" && f["subject"]["pid"] == c.pid())
        .collect();
    assert!(
        ours.len() == 1 && ours[0]["severity"] == "info",
        "doctor: {}",
        d.brief()
    );
    assert_clean_v2(&c);
}

// ---------------------------------------------------------------------------------------------
// The variants
// ---------------------------------------------------------------------------------------------

/// `variant!(module, SERIES, RUNTIME, binary, scenario...)`: a module of tests, each calling
/// its scenario with that variant.
macro_rules! variant {
    ($m:ident, $series:ident, $rt:ident, $bin:expr, $($scenario:ident),* $(,)?) => {
        mod $m {
            const V: crate::Variant = crate::Variant {
                series: crate::common::Series::$series,
                rt: crate::common::$rt,
                binary: $bin,
            };
            $( #[test] fn $scenario() { crate::$scenario(V) } )*
        }
    };
}

/// Debian's containerd 1.6: both task API personalities with runc, runc.v2 with crun (ctr 1.6
/// sets `BinaryName` for runc.v2 only), and the legacy runtime.
mod ctd16 {
    variant!(
        runcv1_runc,
        V1_6,
        RUNC_V1,
        None,
        lifecycle,
        resources,
        oom,
        containerd_restart,
        checkpoint_restore,
    );
    variant!(
        runcv2_runc,
        V1_6,
        RUNC_V2,
        None,
        lifecycle,
        resources,
        oom,
        containerd_restart,
        checkpoint_restore,
        grouping,
        systemd_driver,
    );
    variant!(
        runcv2_crun,
        V1_6,
        RUNC_V2,
        Some("crun"),
        lifecycle,
        resources,
        oom,
        containerd_restart,
        checkpoint_unsupported,
        grouping,
        systemd_driver,
    );
    variant!(v1linux_runc, V1_6, V1_LINUX, None, legacy_runtime);
}

/// containerd 2.3.4 (peers): runc.v2 with runc. Debian's crun 1.8.1 cannot run containerd
/// 2.3's OCI spec at all (see [`spec_too_new`]).
mod ctd23 {
    variant!(
        runcv2_runc,
        V2_3,
        RUNC_V2,
        None,
        lifecycle,
        resources,
        oom,
        containerd_restart,
        checkpoint_restore,
        grouping,
        systemd_driver,
    );
    variant!(runcv2_crun, V2_3, RUNC_V2, Some("crun"), spec_too_new);
}

// ---------------------------------------------------------------------------------------------
// The VM
// ---------------------------------------------------------------------------------------------

/// The release build of shimgate the guest runs. `cargo test` holds the lock of the profile it
/// builds (`target/debug`), not `target/release`, so building the release profile of the same
/// target directory from here cannot deadlock; under `cargo test --release` the binary cargo
/// built for this run is already the release one.
fn release_binary() -> PathBuf {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        if !cfg!(debug_assertions) {
            return PathBuf::from(env!("CARGO_BIN_EXE_shimgate"));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = run_cmd(
            Command::new(cargo).current_dir(root).args([
                "build",
                "--release",
                "--quiet",
                "--bin",
                "shimgate",
            ]),
            None,
            Duration::from_secs(1800),
        );
        assert_eq!(out.code, 0, "cargo build --release: {}", out.err());
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("release/shimgate")
    })
    .clone()
}

/// Boot the cgroup v2 guest and run this test binary's scenarios in it (see the module doc).
#[test]
fn cgv2_guest() {
    if on_v2() {
        eprintln!("pure cgroup v2 host: the scenarios run directly");
        return;
    }
    if !prerequisites() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/cgv2-vm.sh");
    let mut missing = Vec::new();
    if which("qemu-system-x86_64").is_none() {
        missing.push("qemu-system-x86_64 (qemu-system-x86)");
    }
    let kernel = std::fs::read_dir("/boot").ok().and_then(|d| {
        d.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("vmlinuz-") && n.ends_with("-amd64"))
    });
    if kernel.is_none() {
        missing.push("/boot/vmlinuz-*-amd64 (linux-image-amd64)");
    }
    for tool in ["crun", "criu", "cpio"] {
        if which(tool).is_none() {
            missing.push(tool);
        }
    }
    assert!(
        missing.is_empty(),
        "the cgroup v2 guest needs {missing:?} (set SHIMGATE_SKIP_INTEGRATION=1 to skip)"
    );
    let bin = release_binary();
    // Built and unpacked here, so the guest (which sees this filesystem) finds them complete.
    let _ = rootfs();
    if Series::V2_3.containerd().is_none() {
        eprintln!("SKIP: no containerd 2.3 peers: the guest runs the containerd 1.6 part only");
    }
    let results = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cgv2");
    let _ = std::fs::remove_dir_all(&results);
    std::fs::create_dir_all(&results).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(&script);
    cmd.args(["--systemd", "--timeout", "1500", "--results"])
        .arg(&results)
        .arg("--env")
        .arg(format!("SHIMGATE_BIN={}", bin.display()))
        .arg("--env")
        .arg(format!("SHIMGATE_CGV2_RESULTS={}", results.display()));
    for var in ["SHIMGATE_PEERS", "SHIMGATE_REQUIRE_PEERS"] {
        if let Ok(v) = std::env::var(var) {
            cmd.arg("--env").arg(format!("{var}={v}"));
        }
    }
    cmd.arg("--").arg(&exe).args(["--test-threads", "2"]);
    if let Ok(f) = std::env::var("SHIMGATE_CGV2_FILTER") {
        cmd.args(f.split_whitespace());
    }
    let t = Instant::now();
    let out = run_cmd(&mut cmd, None, Duration::from_secs(1600));
    let took = t.elapsed().as_secs_f64();
    let console = std::fs::read_to_string(results.join("console.log")).unwrap_or_default();
    let mut times: Vec<String> = std::fs::read_to_string(results.join("times"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    times.sort();
    let facts: Vec<&str> = console
        .lines()
        .filter(|l| l.starts_with("cgv2-vm: guest up") || l.starts_with("test result:"))
        .collect();
    eprintln!(
        "cgroup v2 guest: {took:.0} s in all\n{}\n{}",
        facts.join("\n"),
        times.join("\n")
    );
    assert!(
        out.code == 0 && console.contains("test result: ok."),
        "cgroup v2 guest suite failed ({}); console {}:\n{}",
        out.brief(),
        results.join("console.log").display(),
        console
    );
}
