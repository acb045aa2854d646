"""The measurements, each against one Env (one side's private containerd) and one runtime."""
from __future__ import annotations

import copy
import fcntl
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter

from . import cgroup, proc
from .env import RUNTIMES, Env

F_SETPIPE_SZ = 1031
MIB = 1 << 20
STDOUT_BYTES = 256 * MIB


def p90(xs):
    if len(xs) < 2:
        return xs[0]
    return statistics.quantiles(xs, n=10, method="inclusive")[8]


def dist(xs) -> dict:
    return {"samples": xs, "median": statistics.median(xs), "p90": p90(xs)}


def _inv_counts(lines) -> dict:
    """Invocations seen by the wrappers, by program and subcommand (shim start/delete/daemon,
    runc create/start/exec/delete/..., containerd publish)."""
    c = Counter()
    for line in lines:
        argv = line.split()[2:]  # pid, CLOCK_MONOTONIC time, argv
        if not argv:
            continue
        prog = os.path.basename(argv[0])
        if prog == "runc":
            sub = next((a for i, a in enumerate(argv[1:], 1)
                        if not a.startswith("-") and not argv[i - 1] in ("--root", "--log", "--log-format")), "?")
        elif prog.startswith("containerd-shim"):
            sub = argv[-1] if argv[-1] in ("start", "delete") else "daemon"
        elif "publish" in argv:
            prog, sub = "containerd", "publish"
        else:
            sub = ""
        c[f"{prog} {sub}".strip()] += 1
    return dict(c)


def lifecycles(env: Env, rt: str, n: int, warm: int = 2) -> dict:
    """`ctr run --rm /bin/true`: latency, ctr's own CPU, and the CPU of every shim process
    (cgroup `shim`), runc (cgroup `runc`) and publish helper over the n lifecycles."""
    for _ in range(warm):
        proc.run(env.run_argv(rt, env.new_id("warm"), ["/bin/true"]), env=env.tools.ctr_env).check()
    env.wait_shims(0)
    inv0 = len(env.invocations())
    u0 = env.usage()
    walls, ctr_cpu, shim_each, starts = [], [], [], []
    for _ in range(n):
        s0 = env.cg["shim"].usage_ns()
        starts.append(time.monotonic())
        r = proc.run(env.run_argv(rt, env.new_id("life"), ["/bin/true"]), env=env.tools.ctr_env).check()
        walls.append(r.wall * 1e3)
        ctr_cpu.append(r.cpu_ns / 1e6)
        shim_each.append((env.cg["shim"].usage_ns() - s0) / 1e6)
    left = env.wait_shims(0)
    u1 = env.usage()
    inv = env.invocations()[inv0:]
    return {
        "run_ms": dist(walls),
        "ctr_cpu_ms": dist(ctr_cpu),
        "cpu_lifecycle_ms": (u1["shim"] - u0["shim"]) / n / 1e6,
        "cpu_lifecycle_each_ms": shim_each,  # per run, read when ctr returned (shim may still be exiting)
        "runc_cpu_lifecycle_ms": (u1["runc"] - u0["runc"]) / n / 1e6,
        "publish_cpu_lifecycle_ms": (u1["publish"] - u0["publish"]) / n / 1e6,
        "invocations_per_lifecycle": {k: v / n for k, v in _inv_counts(inv).items()},
        "shims_left_after": len(left),
        # timeline: ctr start times (CLOCK_MONOTONIC) and the wrapper log lines (pid, time, argv)
        "ctr_starts": starts,
        "invocation_log": inv,
    }


def runc_baseline(env: Env, config: dict, n: int, warm: int = 2) -> dict:
    """Bare `runc run` of the spec ctr generated (process /bin/true), no shim, no containerd."""
    spec = copy.deepcopy(config)
    spec["process"]["args"] = ["/bin/true"]
    spec["process"]["terminal"] = False
    spec.setdefault("linux", {})["cgroupsPath"] = f"/{env.ns}/runc-baseline"
    bundle = os.path.join(env.work, "runc-bundle")
    os.makedirs(bundle, exist_ok=True)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    root = os.path.join(env.work, "runc-root")
    walls = []
    for i in range(warm + n):
        r = proc.run([env.tools.runc, "--root", root, "run", "--bundle", bundle, f"rb-{i}"]).check()
        if i >= warm:
            walls.append(r.wall * 1e3)
    return {"runc_run_ms": dist(walls)}


def execs(env: Env, cid: str, n: int, warm: int = 2) -> dict:
    for i in range(warm):
        env.ctr("task", "exec", "--fifo-dir", env.fifo, "--exec-id", f"w{i}", cid, "/bin/true").check()
    inv0 = len(env.invocations())
    u0 = env.usage()
    walls = []
    for i in range(n):
        r = env.ctr("task", "exec", "--fifo-dir", env.fifo, "--exec-id", f"x{i}", cid, "/bin/true").check()
        walls.append(r.wall * 1e3)
    u1 = env.usage()
    inv = env.invocations()[inv0:]
    return {
        "exec_ms": dist(walls),
        "cpu_exec_ms": (u1["shim"] - u0["shim"]) / n / 1e6,
        "runc_cpu_exec_ms": (u1["runc"] - u0["runc"]) / n / 1e6,
        "publish_cpu_exec_ms": (u1["publish"] - u0["publish"]) / n / 1e6,
        "invocations_per_exec": {k: v / n for k, v in _inv_counts(inv).items()},
    }


def exec_burst(env: Env, cid: str, k: int = 100, tag: str = "b") -> dict:
    """k `ctr task exec /bin/true` on one container at once. The helper `burst` (c/burst.c)
    forks k copies that wait on one start gate, opens it, and reaps them: all k requests are in
    flight together. Wall time from the gate to the last exit; each ctr's wall and CPU (wait4);
    over the burst, the CPU of every shim process (cgroup `shim`), of runc, and of containerd
    (its /proc stat): the wall time is bounded below by all of them together on the machine's
    cores, most of which is the same for both sides (ctr, runc, containerd)."""
    argv = env.ctr_argv("task", "exec", "--fifo-dir", env.fifo, "--exec-id", f"{tag}{{}}", cid, "/bin/true")
    u0 = env.usage()
    c0 = env.containerd_cpu_ns()
    inv0 = len(env.invocations())
    r = proc.run([env.tools.burst, str(k), *argv], timeout=1800, env=env.tools.ctr_env).check()
    # Exit events may still be on their way (the legacy shim publishes them through `containerd
    # publish` helpers): count the CPU and the processes once no runc or publish process is left.
    deadline = time.time() + 60
    while (env.cg["runc"].procs() or env.cg["publish"].procs()) and time.time() < deadline:
        time.sleep(0.05)
    u1 = env.usage()
    c1 = env.containerd_cpu_ns()
    inv = env.invocations()[inv0:]
    vals, kids = {}, []
    for line in r.out.decode().splitlines():
        f = line.split()
        if f[0] == "child":
            kids.append([int(x) for x in f[1:]])
        elif len(f) == 2:
            vals[f[0]] = int(f[1])
    failed = [c for c in kids if c[1] != 0]
    if len(kids) != k or failed:
        raise RuntimeError(f"exec burst: {len(failed)} of {k} ctr task exec failed "
                           f"({len(kids)} reported): {r.err.decode(errors='replace').strip()[:400]}")
    return {
        "execs": k,
        "cpus": os.cpu_count(),
        "wall_ms": vals["wall_ns"] / 1e6,
        "fork_ms": vals["fork_ns"] / 1e6,
        "each_ms": dist([c[4] / 1e6 for c in kids]),
        "shim_cpu_ms": (u1["shim"] - u0["shim"]) / 1e6,
        "runc_cpu_ms": (u1["runc"] - u0["runc"]) / 1e6,
        "publish_cpu_ms": (u1["publish"] - u0["publish"]) / 1e6,
        "containerd_cpu_ms": (c1 - c0) / 1e6,
        "ctr_cpu_ms": sum(c[2] + c[3] for c in kids) / 1e6,
        "invocations": _inv_counts(inv),
    }


def memory(env: Env, rt: str, expect: int, detail: bool = False) -> dict:
    pids = env.wait_shims(expect)
    if len(pids) != expect:
        raise RuntimeError(f"expected {expect} shim processes, found {len(pids)}")
    want = os.path.realpath(env.shims[RUNTIMES[rt][1]])
    exes = {proc.exe_of(p) for p in pids}
    if exes != {want}:
        raise RuntimeError(f"shim processes run {exes}, expected {want}")
    per = []
    for p in pids:
        r = proc.smaps_rollup(p)
        per.append({"pid": p, "pss": r["Pss"], "rss": r["Rss"],
                    "threads": int(proc.status_field(p, "Threads") or 0),
                    "hwm": int((proc.status_field(p, "VmHWM") or "0 kB").split()[0])})
    out = {
        "pss_kib": sum(x["pss"] for x in per),
        "rss_kib": sum(x["rss"] for x in per),
        "threads": sum(x["threads"] for x in per),
        "procs": len(per),
        "per_process": per,
    }
    if detail and pids:
        p = pids[0]
        out["rollup"] = proc.smaps_rollup(p)
        maps = proc.smaps_by_mapping(p)
        out["by_mapping"] = dict(sorted(maps.items(), key=lambda kv: -kv[1]["Pss"])[:12])
    return out


def idle(env: Env, seconds: float) -> dict:
    u0 = env.cg["shim"].usage_ns()
    t0 = time.monotonic()
    time.sleep(seconds)
    u1 = env.cg["shim"].usage_ns()
    dt = time.monotonic() - t0
    return {"idle_cpu_ms": (u1 - u0) / 1e6, "window_s": dt, "idle_cpu_ms_per_10s": (u1 - u0) / 1e6 * 10 / dt}


def validate(env: Env, ids: list[str]) -> dict:
    """The method check, on long-lived shims: the shim cgroup's CPU beside the sum of
    se.sum_exec_runtime over every thread of every shim process, across
    - `ctr task metrics` on each container: served by the shims without child processes (the
      invocation log shows none), so both must agree;
    - `ctr task exec /bin/true` on each container: the cgroup also holds the shims' forked
      children until they exec runc (the wrapper then moves them to the runc cgroup), which
      the threads' counters do not; the difference is that per-child cost (real shim cost:
      without the wrappers the whole runc would run in the shim's cgroup)."""
    def snap():
        return {p: proc.sched_runtime_ns(p) for p in env.shim_pids()}

    def window(args_of):
        inv0 = len(env.invocations())
        a = snap()
        u0 = env.cg["shim"].usage_ns()
        for i, cid in enumerate(ids):
            env.ctr(*args_of(i, cid)).check()
        u1 = env.cg["shim"].usage_ns()
        b = snap()
        sched = 0
        gone = 0
        for p, threads in b.items():
            for t, ns in threads.items():
                sched += ns - a.get(p, {}).get(t, 0)
        for p, threads in a.items():
            gone += sum(1 for t in threads if t not in b.get(p, {}))
        cg = u1 - u0
        children = len(env.invocations()) - inv0
        return {"cgroup_ms": cg / 1e6, "threads_ms": sched / 1e6,
                "diff_pct": (cg - sched) / sched * 100 if sched else None,
                "diff_per_child_us": (cg - sched) / children / 1e3 if children else None,
                "children": children, "threads_exited": gone, "processes": len(b), "requests": len(ids)}

    return {
        "metrics": window(lambda i, cid: ("task", "metrics", cid)),
        "exec": window(lambda i, cid: ("task", "exec", "--fifo-dir", env.fifo, "--exec-id", f"v{i}", cid, "/bin/true")),
    }


def _pipe_size(fd: int, size: int = MIB) -> None:
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except OSError:
        pass


def _reader(fd: int, nbytes: int | None, res: dict) -> None:
    buf = bytearray(MIB)
    mv = memoryview(buf)
    total = 0
    first = last = None
    while nbytes is None or total < nbytes:
        k = os.readv(fd, [mv])
        if k == 0:
            break
        now = time.perf_counter()
        if first is None:
            first = now
        last = now
        total += k
    res.update(total=total, first=first, last=last)


DD = ["/bin/sh", "-c", f"dd if=/dev/zero bs=1M count={STDOUT_BYTES // MIB} 2>/dev/null"]


def stdout_via_ctr(env: Env, rt: str) -> dict:
    """256 MiB through the container's stdout, read from `ctr run`'s stdout (a 1 MiB pipe)."""
    u0 = env.usage()
    argv = env.run_argv(rt, env.new_id("tp"), DD)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env=env.tools.ctr_env)
    _pipe_size(p.stdout.fileno())
    res: dict = {}
    th = threading.Thread(target=_reader, args=(p.stdout.fileno(), None, res))
    th.start()
    rc, ctr_cpu = proc.wait_exact(p, 300)
    th.join()
    p.stdout.close()
    env.wait_shims(0)
    u1 = env.usage()
    if rc != 0 or res["total"] != STDOUT_BYTES:
        raise RuntimeError(f"stdout via ctr: exit {rc}, {res.get('total')} bytes")
    secs = res["last"] - res["first"]
    return {"mibs": STDOUT_BYTES / MIB / secs, "seconds": secs,
            "shim_cpu_ms": (u1["shim"] - u0["shim"]) / 1e6, "ctr_cpu_ms": ctr_cpu / 1e6,
            "runc_cpu_ms": (u1["runc"] - u0["runc"]) / 1e6}


def stdout_direct(env: Env, rt: str, pipe_size: int | None = None) -> dict:
    """256 MiB through the container's stdout over exactly the path `ctr run` sets up (ctr
    creates the FIFOs, the shim opens and writes them as usual), but read by the bench instead
    of ctr: once the task runs (the container sleeps 1 s before dd starts), the bench opens
    ctr's stdout FIFO as a second reader and stops ctr (SIGSTOP), so every byte comes to the
    bench's 1 MiB reads instead of ctr's 32 KiB copies; ctr is continued after end of file
    and finishes the run (--rm) normally. Tells the shim's own rate from ctr's ceiling."""
    fdir = os.path.join(env.work, f"fifo-direct-{env.counter}")
    os.makedirs(fdir)
    cid = env.new_id("tpd")
    cmd = ["/bin/sh", "-c", f"sleep 1; dd if=/dev/zero bs=1M count={STDOUT_BYTES // MIB} 2>/dev/null"]
    argv = env.run_argv(rt, cid, cmd, fifo_dir=fdir)
    u0 = env.usage()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=env.tools.ctr_env)
    fd = None
    stopped = False
    res: dict = {}
    try:
        deadline = time.time() + 20
        while True:
            r = env.ctr("task", "ls")
            if any(line.split()[:1] == [cid] and "RUNNING" in line for line in r.out.decode().splitlines()):
                break
            if time.time() > deadline or p.poll() is not None:
                raise RuntimeError(f"stdout direct: task {cid} did not start")
            time.sleep(0.02)
        fifo = None
        for sub in os.listdir(fdir):
            cand = os.path.join(fdir, sub, f"{cid}-stdout")
            if os.path.exists(cand):
                fifo = cand
        if fifo is None:
            raise RuntimeError("stdout direct: no stdout FIFO found")
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.kill(p.pid, signal.SIGSTOP)
        stopped = True
        os.set_blocking(fd, True)
        if pipe_size:
            _pipe_size(fd, pipe_size)
        _reader(fd, None, res)
    finally:
        if stopped:
            os.kill(p.pid, signal.SIGCONT)
        if fd is not None:
            os.close(fd)
        rc, ctr_cpu = proc.wait_exact(p, 300)
        err = p.stderr.read()
        p.stderr.close()
    env.wait_shims(0)
    u1 = env.usage()
    if rc != 0 or res.get("total") != STDOUT_BYTES:
        raise RuntimeError(f"stdout direct: exit {rc} {err[:200]!r}, {res.get('total')} bytes")
    secs = res["last"] - res["first"]
    return {"mibs": STDOUT_BYTES / MIB / secs, "seconds": secs, "pipe_size": pipe_size,
            "shim_cpu_ms": (u1["shim"] - u0["shim"]) / 1e6, "ctr_cpu_ms": ctr_cpu / 1e6}


def wrapper_overhead(tools, n: int = 1000, reps: int = 4) -> dict:
    """CPU of one wrapper invocation. A static no-op is fork+exec'd n times by spawnloop, which
    sits in cgroup A: directly, and through a wrapper (with its log line) joining A too; the
    difference is the wrapper's whole cost. A third series has the wrapper join cgroup B: what
    lands in B is the part charged to the measured cgroup when containerd starts a wrapped
    shim (the rest stays with the caller, e.g. the shim that runs a wrapped runc)."""
    a = cgroup.CpuGroup(f"{tools.cg_base}/calibration-a")
    b = cgroup.CpuGroup(f"{tools.cg_base}/calibration-b")
    wa = os.path.join(tools.base, "wrap-nop-a")
    wb = os.path.join(tools.base, "wrap-nop-b")
    logf = os.path.join(tools.base, "calibration.log")
    tools.wrapper(wa, tools.nop, a, logf)
    tools.wrapper(wb, tools.nop, b, logf)
    series = {"direct": [], "wrapped": [], "split_caller": [], "split_target": []}
    try:
        for _ in range(reps):
            for label, prog in (("direct", tools.nop), ("wrapped", wa), ("split", wb)):
                a0, b0 = a.usage_ns(), b.usage_ns()
                proc.run([tools.spawnloop, a.procs_file, str(n), prog], timeout=300).check()
                da, db = (a.usage_ns() - a0) / n / 1e3, (b.usage_ns() - b0) / n / 1e3
                if label == "split":
                    series["split_caller"].append(da)
                    series["split_target"].append(db)
                else:
                    series[label].append(da)
            try:
                os.unlink(logf)
            except OSError:
                pass
    finally:
        a.remove()
        b.remove()
    res = {k: statistics.median(v) for k, v in series.items()}
    res["samples_us"] = series
    res["overhead_us"] = res["wrapped"] - res["direct"]
    return res
