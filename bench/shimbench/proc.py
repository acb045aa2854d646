"""Processes: spawning with exact CPU (wait4), /proc readers, the child-subreaper supervisor."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Result:
    argv: list
    rc: int
    out: bytes
    err: bytes
    wall: float  # seconds, spawn to reaped
    cpu_ns: int  # utime+stime of the process (and children it waited for), from wait4

    def check(self) -> "Result":
        if self.rc != 0:
            raise RuntimeError(
                f"{' '.join(map(str, self.argv))}: exit {self.rc}: {self.err.decode(errors='replace').strip()}"
            )
        return self


def _rusage_ns(ru) -> int:
    return int(round((ru.ru_utime + ru.ru_stime) * 1e9))


def wait_exact(p: subprocess.Popen, timeout: float | None) -> tuple[int, int]:
    """Reap p with wait4 (exact CPU), killing it after timeout. Returns (exit code, cpu ns)."""
    timer = None
    if timeout:
        def kill():
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
    try:
        while True:
            try:
                _, status, ru = os.wait4(p.pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        if timer:
            timer.cancel()
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc
    return rc, _rusage_ns(ru)


def run(argv, *, timeout: float = 120, stdin=subprocess.DEVNULL, env=None, capture=True) -> Result:
    """Run argv to completion; stdout/stderr go to temporary files (no pipe-reading threads)."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            [str(a) for a in argv], stdin=stdin, stdout=out if capture else subprocess.DEVNULL,
            stderr=err, env=env, close_fds=True,
        )
        rc, cpu = wait_exact(p, timeout)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return Result(list(argv), rc, out.read(), err.read(), wall, cpu)


def set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def children_of(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(b")") + 2:].split()
        if int(rest[1]) == pid:
            kids.append(int(d))
    return kids


def supervise(worker_argv: list[str]) -> int:
    """Be a child subreaper: run the worker, reap everything re-parented to us (shims whose
    starter exited, containerd's orphans), kill by pid whatever of ours outlives the worker."""
    set_subreaper()
    worker = subprocess.Popen(worker_argv)

    def forward(sig, _frame):
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    code = None
    while code is None:
        try:
            pid, status = os.wait()
        except InterruptedError:
            continue
        except ChildProcessError:
            break
        if pid == worker.pid:
            code = os.waitstatus_to_exitcode(status)
            worker.returncode = code
    # Anything still re-parented to us was started (transitively) by this bench.
    deadline = time.time() + 10
    while time.time() < deadline:
        kids = children_of(os.getpid())
        if not kids:
            break
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.1)
    if code is None:
        code = 1
    return code if code >= 0 else 128 - code


# ---- /proc readers ----------------------------------------------------------------------

def smaps_rollup(pid: int) -> dict[str, int]:
    """KiB values of /proc/PID/smaps_rollup."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def smaps_by_mapping(pid: int) -> dict[str, dict[str, int]]:
    """Pss/Rss/Private_Dirty (KiB) per mapping name ([heap], [stack], anon, file path)."""
    res: dict[str, dict[str, int]] = {}
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                cur = parts[5] if len(parts) >= 6 else "[anon]"
                if cur.startswith("[stack:"):
                    cur = "[stack]"
                res.setdefault(cur, {"Rss": 0, "Pss": 0, "Private_Dirty": 0, "Anonymous": 0, "Size": 0})
            elif cur and first.rstrip(":") in ("Rss", "Pss", "Private_Dirty", "Anonymous", "Size"):
                res[cur][first.rstrip(":")] += int(line.split()[1])
    return res


def status_field(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def sched_runtime_ns(pid: int) -> dict[int, int]:
    """se.sum_exec_runtime (ns) of every live thread of pid."""
    res = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return res
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/sched") as f:
                for line in f:
                    if line.startswith("se.sum_exec_runtime"):
                        ms = line.split(":")[1].strip()
                        whole, _, frac = ms.partition(".")
                        res[int(t)] = int(whole) * 1_000_000 + int((frac + "000000")[:6])
                        break
        except OSError:
            pass
    return res


def proc_cpu_ns(pid: int) -> int | None:
    """Total on-CPU time of a live process: the sum of its threads' se.sum_exec_runtime."""
    r = sched_runtime_ns(pid)
    return sum(r.values()) if r else None


def exe_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def kill_pids(pids, sig=signal.SIGKILL) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


if __name__ == "__main__":  # pragma: no cover
    print(sched_runtime_ns(int(sys.argv[1])))
