//! Storms: many runs, many execs, many sizes, through a real containerd, for every
//! personality. Every exit status must be exact, every exit reported exactly once, every output
//! byte delivered. CI runs reduced sizes; `SHIMGATE_STORM_FULL=1` (see `scripts/storms.sh`) runs
//! the full ones.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;

fn full() -> bool {
    std::env::var_os("SHIMGATE_STORM_FULL").is_some()
}

/// A small deterministic generator (xorshift), seeded per test run and printed, so a failing
/// sequence can be replayed with `SHIMGATE_STORM_SEED`.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("SHIMGATE_STORM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("storm seed {seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Sequential runs with random exit codes, and execs dying of random signals.
fn exit_status_storm(rt: Runtime) {
    let Some(c) = Ctd::start() else { return };
    let mut rng = Rng::new();
    let runs = if full() { 300 } else { 30 };
    let mut mismatches = Vec::new();
    for i in 0..runs {
        let code = rng.below(256) as i32;
        let id = c.id("st");
        let r = c.run(rt, &id, &["--rm"], &["sh", "-c", &format!("exit {code}")]);
        if r.code != code {
            mismatches.push(format!("run {i}: want {code}, got {}", r.brief()));
        }
    }
    // Signal deaths of exec processes, sent through the shim's Kill (a shell would ignore
    // some signals sent to itself, e.g. SIGQUIT).
    let ev = Events::watch(&c);
    let holder = c.id("holder");
    c.run_detached(rt, &holder, &[], &["sleep", "3600"]);
    const SIGNALS: [i32; 11] = [1, 2, 3, 6, 9, 10, 11, 12, 13, 14, 15];
    let execs = if full() { 200 } else { 20 };
    for i in 0..execs {
        let sig = SIGNALS[rng.below(SIGNALS.len() as u64) as usize];
        let exec = format!("s{i}");
        let r = c.ctr(&[
            "task",
            "exec",
            "-d",
            "--exec-id",
            &exec,
            &holder,
            "sleep",
            "3600",
        ]);
        assert_eq!(r.code, 0, "{}", r.brief());
        let k = c.ctr(&[
            "task",
            "kill",
            "--exec-id",
            &exec,
            "-s",
            &sig.to_string(),
            &holder,
        ]);
        assert_eq!(k.code, 0, "{}", k.brief());
        ev.wait_until("exec exit", Duration::from_secs(20), |all| {
            all.iter()
                .any(|e| e.topic == "/tasks/exit" && e.str("id") == exec)
        });
        let got: Vec<u64> = ev
            .of("/tasks/exit", &holder)
            .iter()
            .filter(|e| e.str("id") == exec)
            .map(|e| e.num("exit_status"))
            .collect();
        if got != [128 + sig as u64] {
            mismatches.push(format!("exec {i}: signal {sig}, exit statuses {got:?}"));
        }
    }
    // Exactly once: counted after the holder is deleted and its shim is gone, when no
    // further exit can be published.
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &holder]).code, 0);
    assert!(c.wait_status(&holder, "STOPPED", Duration::from_secs(10)));
    assert_eq!(c.ctr(&["task", "rm", &holder]).code, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.shim_pids().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the shim did not exit after the delete"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ev.barrier(&c);
    let exits = ev.of("/tasks/exit", &holder);
    for i in 0..execs {
        let exec = format!("s{i}");
        let n = exits.iter().filter(|e| e.str("id") == exec).count();
        if n != 1 {
            mismatches.push(format!("exec {i}: {n} exits"));
        }
    }
    eprintln!(
        "{}: {} runs + {} signal deaths, {} mismatches",
        rt.short,
        runs,
        execs,
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    c.assert_clean();
}

/// Many concurrent execs, then SIGKILL of init while they run: every exec reports exactly one
/// exit, init reports 137 and last, the task can be deleted, and no zombie is left.
fn exec_storm_then_kill_init(rt: Runtime) {
    let Some(c) = Ctd::start() else { return };
    let ev = Events::watch(&c);
    let id = c.id("storm");
    c.run_detached(rt, &id, &[], &["sleep", "3600"]);
    // More than the 64 requests a connection may have in flight: every running exec holds
    // an open Wait (parked, so not counted), and the starts queue behind the limit.
    let n = if full() { 1000 } else { 300 };
    // Start them from a few threads at once.
    std::thread::scope(|s| {
        for t in 0..4 {
            let c = &c;
            let id = &id;
            s.spawn(move || {
                for i in (t..n).step_by(4) {
                    let r = c.ctr(&[
                        "task",
                        "exec",
                        "-d",
                        "--exec-id",
                        &format!("x{i}"),
                        id,
                        "sleep",
                        "3600",
                    ]);
                    assert_eq!(r.code, 0, "exec x{i}: {}", r.brief());
                }
            });
        }
    });
    ev.wait_until("all execs started", Duration::from_secs(60), |_| {
        ev.of("/tasks/exec-started", &id).len() >= n
    });
    let shim = c.shim_pids();
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).code, 0);
    ev.wait_until("every exit", Duration::from_secs(60), |_| {
        ev.of("/tasks/exit", &id).len() > n
    });
    // No zombie children under the shim(s).
    for p in &shim {
        let zombies = zombie_children(*p);
        assert!(zombies.is_empty(), "zombies under shim {p}: {zombies:?}");
    }
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    let r = c.ctr(&["task", "rm", &id]);
    assert!(r.code == 0 || r.code == 137, "{}", r.brief());
    // Count once the shim is gone: nothing can publish another exit for these processes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.shim_pids().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the shim did not exit after the delete"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ev.barrier(&c);
    let exits = ev.of("/tasks/exit", &id);
    assert_eq!(
        exits.len(),
        n + 1,
        "exactly one exit per process:\n{}",
        ev.dump()
    );
    let mut ids: Vec<&str> = exits.iter().map(|e| e.str("id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n + 1, "an id reported twice");
    let last = exits.last().unwrap();
    assert_eq!(
        (last.str("id"), last.num("exit_status")),
        (id.as_str(), 137),
        "init last"
    );
    assert!(exits.iter().all(|e| e.num("exit_status") == 137));
    eprintln!(
        "{}: {n} execs + init, {} exits, 0 duplicates",
        rt.short,
        exits.len()
    );
    c.assert_clean();
}

/// The rootfs blob twice over: the source of every output check.
fn blob2() -> Vec<u8> {
    let b = std::fs::read(rootfs().join("data/blob")).unwrap();
    let mut v = b.clone();
    v.extend_from_slice(&b);
    v
}

fn sizes() -> Vec<usize> {
    let max_n = 24;
    let step = if full() { 1 } else { 3 };
    let mut v = Vec::new();
    for n in (0..=max_n).step_by(step) {
        let p = 1usize << n;
        v.extend([p.saturating_sub(1), p, p + 1]);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// stdout and stderr of many sizes around powers of two, byte-exact, plus 128 MiB.
fn output_sizes(rt: Runtime) {
    let Some(c) = Ctd::start() else { return };
    let data = blob2();
    let mut bad = Vec::new();
    for n in sizes() {
        let id = c.id("size");
        // Different bytes on each stream (stderr starts 1 MiB into the blob).
        let script = format!(
            "cat /data/blob /data/blob | head -c {n}; cat /data/blob /data/blob | tail -c +1048577 | head -c {n} >&2"
        );
        let r = c.run(rt, &id, &["--rm"], &["sh", "-c", &script]);
        let want_err = &data[1 << 20..(1 << 20) + n];
        if r.code != 0 || r.stdout != data[..n] || r.stderr != want_err {
            bad.push(format!(
                "size {n}: rc {} stdout {} stderr {}",
                r.code,
                r.stdout.len(),
                r.stderr.len()
            ));
        }
    }
    // 128 MiB on stdout.
    let id = c.id("huge");
    let r = c.ctr_timeout(
        &c.run_args(
            rt,
            &id,
            &["--rm"],
            &[
                "sh",
                "-c",
                "for i in 1 2 3 4 5 6 7 8; do cat /data/blob; done",
            ],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
        Duration::from_secs(300),
    );
    let one = &data[..16 << 20];
    if r.stdout.len() != 128 << 20 || r.stdout.chunks(16 << 20).any(|ch| ch != one) {
        bad.push(format!(
            "128 MiB: got {} bytes, rc {}",
            r.stdout.len(),
            r.code
        ));
    }
    eprintln!(
        "{}: {} sizes + 128 MiB, {} wrong",
        rt.short,
        sizes().len(),
        bad.len()
    );
    assert!(bad.is_empty(), "{bad:#?}");
    c.assert_clean();
}

/// The same through a terminal. The container's terminal and ctr's terminal each translate
/// `\n` to `\r\n` (onlcr; busybox's `stty` cannot switch it off reliably, and ctr keeps
/// output processing on), so the check undoes exactly that mapping twice, which is
/// invertible; everything else must pass unchanged.
fn tty_output_sizes(rt: Runtime) {
    let Some(c) = Ctd::start() else { return };
    let data = blob2();
    let ns: Vec<usize> = if full() {
        sizes()
    } else {
        vec![0, 1, 4095, 4096, 4097, 65537, 1 << 20, (1 << 22) + 1]
    };
    let mut bad = Vec::new();
    for n in ns {
        let id = c.id("ttysz");
        // Print a marker after raw mode is on, so only the payload follows it.
        let script = format!("printf MARK; cat /data/blob /data/blob | head -c {n}; sleep 0.2");
        let args = c.run_args(rt, &id, &["--rm", "-t"], &["sh", "-c", &script]);
        let mut cmd = c.ctr_cmd();
        cmd.args(&args);
        let (code, out) = common::pty::pty_run_with(cmd, b"", Duration::from_secs(120), true);
        let raw = out
            .windows(4)
            .position(|w| w == b"MARK")
            .map(|i| &out[i + 4..])
            .unwrap_or(&[]);
        // Two terminals translate: the container's and ctr's own (ctr keeps OPOST on).
        let got = &undo_onlcr(&undo_onlcr(raw))[..];
        if code != 0 || got != &data[..n] {
            let diff = got
                .iter()
                .zip(&data[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(n.min(got.len()));
            bad.push(format!(
                "tty size {n}: rc {code}, got {} bytes, first difference at {diff}: {:?}",
                got.len(),
                String::from_utf8_lossy(&got[diff..(diff + 40).min(got.len())])
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
    c.assert_clean();
}

fn undo_onlcr(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// 32 MiB of stdin, then end of file: all of it reaches the container, including what is
/// still buffered when containerd closes stdin (CloseIO), and the container then sees EOF.
fn stdin_32mib(rt: Runtime) {
    let Some(c) = Ctd::start() else { return };
    let mut payload = blob2();
    payload.truncate(32 << 20);
    // The container only starts reading after a pause, so most of the input is still queued
    // in the FIFO when ctr has written it all and sent CloseIO.
    let id = c.id("stdin32");
    let args = c.run_args(rt, &id, &["--rm"], &["sh", "-c", "sleep 1; cat"]);
    let (code, timed_out, got) = c.run_with_stdin(
        &id,
        &args,
        payload.clone(),
        Duration::from_secs(10),
        Duration::from_secs(120),
    );
    assert!(!timed_out, "EOF never reached the container");
    assert_eq!(code, 0);
    assert_eq!(got.len(), payload.len());
    assert!(got == payload);
    c.assert_clean();
}

personalities!(
    exit_status_storm,
    exec_storm_then_kill_init,
    output_sizes,
    tty_output_sizes,
    stdin_32mib,
);

#[allow(dead_code)]
fn elapsed(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
