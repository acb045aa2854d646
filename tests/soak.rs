//! Leak soak: many `run --rm`, then thousands of execs on one container, for every
//! personality. Afterwards sockets, mounts, cgroups, runc state, zombies are back to where
//! they started, and the long-lived shim's fd count and memory did not grow. CI runs a reduced
//! size; `SHIMGATE_SOAK_FULL=1` (see `scripts/soak.sh`) the full one.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn full() -> bool {
    std::env::var_os("SHIMGATE_SOAK_FULL").is_some()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident KiB of `pid`'s code: its executable mappings of its own binary.
fn code_rss_kib(pid: u32) -> u64 {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let exe = exe.to_string_lossy();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside =
                f.next().is_some_and(|perms| perms.starts_with("r-x")) && line.ends_with(&*exe);
        } else if inside && first == "Rss:" {
            total += f.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

/// Things that must come back to baseline.
#[derive(Debug, PartialEq, Eq)]
struct Residue {
    sockets: usize,
    mounts: usize,
    cgroups: usize,
    runc_state: usize,
    zombies: usize,
}

fn residue(c: &Ctd, ids: &[String]) -> Residue {
    let sockets = ids.iter().filter(|id| c.socket_for(id).exists()).count();
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = c.dir.display().to_string();
    let mounts = mi
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|m| m.starts_with(&prefix))
        })
        .count();
    let cgroups = std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join(&c.ns))
                .filter_map(|p| std::fs::read_dir(p).ok())
                .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
                .sum()
        })
        .unwrap_or(0);
    let runc_state = std::fs::read_dir(Path::new("/run/containerd/runc").join(&c.ns))
        .map(|d| d.count())
        .unwrap_or(0);
    let zombies = c
        .shim_pids()
        .iter()
        .map(|p| zombie_children(*p).len())
        .sum();
    Residue {
        sockets,
        mounts,
        cgroups,
        runc_state,
        zombies,
    }
}

fn soak(rt: Runtime) {
    let Some(c) = Ctd::start() else { return };
    let runs = if full() { 500 } else { 40 };
    let execs = if full() { 3000 } else { 300 };
    let empty = Residue {
        sockets: 0,
        mounts: 0,
        cgroups: 0,
        runc_state: 0,
        zombies: 0,
    };

    // Phase 1: containers come and go.
    let mut ids = Vec::new();
    for i in 0..runs {
        let id = c.id("soak");
        let r = c.run(rt, &id, &["--rm"], &["sh", "-c", "echo x"]);
        assert!(r.code == 0 && r.stdout == b"x\n", "run {i}: {}", r.brief());
        ids.push(id);
    }
    std::thread::sleep(Duration::from_secs(1));
    reap_orphans();
    assert!(c.shim_pids().is_empty(), "shims left: {:?}", c.shim_pids());
    assert_eq!(residue(&c, &ids), empty, "after {runs} runs");

    // Phase 2: one long-lived container, many execs; its shim must not grow.
    let id = c.id("soakhold");
    c.run_detached(rt, &id, &[], &["sleep", "3600"]);
    let shim = c.shim_pids()[0];
    let exec = |i: usize| {
        let r = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &format!("e{i}"),
            &id,
            "sh",
            "-c",
            "echo y",
        ]);
        assert!(r.code == 0 && r.stdout == b"y\n", "exec {i}: {}", r.brief());
    };
    for i in 0..20 {
        exec(i);
    }
    let (fd0, rss0) = (fd_count(shim), rss_kib(shim));
    for i in 20..execs {
        exec(i);
    }
    let (fd1, rss1) = (fd_count(shim), rss_kib(shim));
    eprintln!(
        "{}: {runs} runs, {execs} execs; shim fds {fd0} -> {fd1}, RSS {rss0} -> {rss1} KiB",
        rt.short
    );
    assert_eq!(fd1, fd0, "fd leak over {execs} execs");
    assert!(
        rss1 <= rss0 + 512,
        "RSS grew {rss0} -> {rss1} KiB over {execs} execs"
    );
    assert_eq!(zombie_children(shim), Vec::<u32>::new());
    // Quiet for longer than SHIMGATE_TRIM_AFTER_MS (1 s): the shim lets go of the code it ran
    // (startup/resident.rs) and serves on, mapping back what it needs.
    let busy_code = code_rss_kib(shim);
    std::thread::sleep(Duration::from_millis(2500));
    let quiet_code = code_rss_kib(shim);
    eprintln!(
        "{}: code resident {busy_code} KiB busy, {quiet_code} KiB quiet",
        rt.short
    );
    assert!(
        quiet_code * 2 < busy_code,
        "a quiet shim keeps {quiet_code} of {busy_code} KiB of code mapped"
    );
    // Nor does it keep helper threads (they end 1 s after their last job, not 10 s later
    // while the shim is idle): the serving thread is all that is left.
    assert_eq!(thread_count(shim), 1, "threads of a quiet shim");
    exec(execs);
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_status(&id, "STOPPED", Duration::from_secs(10)));
    c.ctr(&["task", "rm", &id]);
    c.ctr(&["c", "rm", &id]);
    std::thread::sleep(Duration::from_secs(1));
    ids.push(id);
    assert_eq!(residue(&c, &ids), empty, "after the exec soak");
    c.assert_clean();
}

/// The binary is linked position-dependent (build.rs), as the Go shims are: nothing relocates
/// its `.data.rel.ro` at start, so those pages stay shared by every shim instead of being
/// copied into each. ELF header: `e_type` (2 bytes at offset 16) is ET_EXEC (2), not ET_DYN.
#[test]
fn the_shim_binary_is_position_dependent() {
    let bin = shimgate_bin();
    let head = std::fs::read(&bin).expect("read the shim binary");
    assert_eq!(&head[..4], b"\x7fELF", "{}", bin.display());
    let e_type = u16::from_le_bytes([head[16], head[17]]);
    assert_eq!(e_type, 2, "{}: e_type {e_type} (3 = PIE)", bin.display());
}

#[test]
fn soak_runcv1() {
    soak(RUNC_V1);
}

#[test]
fn soak_runcv2() {
    soak(RUNC_V2);
}

#[test]
fn soak_v1linux() {
    soak(V1_LINUX);
}
