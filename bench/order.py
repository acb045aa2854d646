#!/usr/bin/env python3
"""Write a symbol-ordering file: the functions a serving shim runs, in first-use order.

Usage (root, from the repository root):
    CARGO_PROFILE_RELEASE_STRIP=none cargo build --release --target-dir target/prof
    python3 bench/order.py target/prof/release/shimgate /tmp/symbol-order.txt

It puts a uprobe on every function symbol of the unstripped binary (tracefs), starts a private
containerd 2.3 (the bench's set-up, shimbench.env) with that binary as runc.v2 shim, runs one
container through a serving workload (exec, task ls, metrics, pause/resume, ps, kill, delete)
and records which functions each shimgate process entered. The list is the daemon's functions,
then those only the short-lived `start`/`delete` invocations ran, for LLD's
`--symbol-ordering-file` (bench/README.md: measured, not adopted; the build does not use it).
The layout only differs in the order of functions, so the profile of one build is valid for
the next as long as the names exist (a stale name is ignored: regenerate after changes).
"""
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shimbench import cgroup, env as envmod, series as seriesmod  # noqa: E402

TRACEFS = "/sys/kernel/tracing"
GROUP = "shimgate_order"


def functions(binary):
    """(file offset, mangled name) of every function symbol with a size."""
    segs = []
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True).stdout
    for ln in out.splitlines():
        f = ln.split()
        if f and f[0] == "LOAD":
            segs.append((int(f[2], 16), int(f[1], 16), int(f[4], 16)))  # vaddr, offset, filesz
    syms = {}
    out = subprocess.run(["nm", "--defined-only", "-S", binary], capture_output=True, text=True, check=True).stdout
    for ln in out.splitlines():
        f = ln.split()
        if len(f) == 4 and f[2] in "tTwW" and int(f[1], 16):
            syms.setdefault(int(f[0], 16), f[3])
    res = []
    for addr, name in sorted(syms.items()):
        for va, off, size in segs:
            if va <= addr < va + size:
                res.append((addr - va + off, name))
                break
    return res


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, out = os.path.abspath(sys.argv[1]), sys.argv[2]
    if not os.path.exists(TRACEFS + "/uprobe_events"):
        print(f"no {TRACEFS}/uprobe_events: mount tracefs there first", file=sys.stderr)
        return 2
    funcs = functions(binary)
    if not funcs:
        print("no function symbols: build with CARGO_PROFILE_RELEASE_STRIP=none", file=sys.stderr)
        return 2
    fd = os.open(TRACEFS + "/uprobe_events", os.O_WRONLY | os.O_APPEND)
    for i, (off, _) in enumerate(funcs):
        os.write(fd, f"p:{GROUP}/f{i} {binary}:0x{off:x}\n".encode())
    os.close(fd)
    hits, order_lock = {}, threading.Lock()

    def reader():
        with open(TRACEFS + "/trace_pipe") as pipe:
            for ln in pipe:
                try:
                    head, rest = ln.split(": f", 1)
                    idx = int(rest.split(":", 1)[0])
                    pid = int(head.split("[")[0].strip().rsplit("-", 1)[1])
                except (ValueError, IndexError):
                    continue
                with order_lock:
                    hits.setdefault((pid, idx), len(hits))

    with open(TRACEFS + "/buffer_size_kb", "w") as f:
        f.write("65536")
    threading.Thread(target=reader, daemon=True).start()
    with open(f"{TRACEFS}/events/{GROUP}/enable", "w") as f:
        f.write("1")
    bins = seriesmod.resolve(seriesmod.SERIES["2.3"], os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             log=lambda *a: None)
    tag = f"shimorder-{os.getpid()}"
    base = f"/tmp/{tag}.common"
    tools = envmod.Tools(base, tag, bins)
    tools.prepare()
    e = envmod.Env(tools, "shimgate", {n: binary for n in envmod.SHIM_NAMES}, "order")
    daemon = None
    try:
        e.start()
        cid = e.new_id("c")
        e.start_detached("runc.v2", cid)
        daemon = e.shim_pids()[0]
        for i in range(5):
            e.ctr("task", "exec", "--fifo-dir", e.fifo, "--exec-id", f"o{i}", cid, "/bin/true").check()
            e.ctr("task", "ls").check()
            e.ctr("task", "metrics", cid).check()
        e.ctr("task", "pause", cid).check()
        e.ctr("task", "resume", cid).check()
        e.ctr("task", "ps", cid).check()
        time.sleep(1)
    finally:
        try:
            e.remove_all()
        finally:
            leaks = e.close()
            time.sleep(2)
            with open(f"{TRACEFS}/events/{GROUP}/enable", "w") as f:
                f.write("0")
            fd = os.open(TRACEFS + "/uprobe_events", os.O_WRONLY | os.O_APPEND)
            for i in range(len(funcs)):
                try:
                    os.write(fd, f"-:{GROUP}/f{i}\n".encode())
                except OSError:
                    pass
            os.close(fd)
            shutil.rmtree(base, ignore_errors=True)
            root = cgroup.V1_ROOT if cgroup.mode() == "v1-cpuacct" else cgroup.V2_ROOT
            cgroup.remove_tree(os.path.join(root, tag))
    if leaks:
        print(f"left over: {leaks}", file=sys.stderr)
    with order_lock:
        ranked = sorted(hits.items(), key=lambda kv: kv[1])
    names, seen = [], set()
    for want_daemon in (True, False):
        for (pid, idx), _ in ranked:
            if (pid == daemon) == want_daemon and idx not in seen:
                seen.add(idx)
                names.append(funcs[idx][1])
    with open(out, "w") as f:
        f.write("".join(n + "\n" for n in names))
    print(f"{len(names)} functions ({sum(1 for (p, _) in hits if p == daemon)} in the daemon) -> {out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
