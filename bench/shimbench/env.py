"""A private containerd of the chosen series per (side, round): own root/state/sockets in a temp
dir, CRI (and NRI) disabled, PATH leading to a directory of wrappers with the shim names and
`runc`, the v1 runtime's `shim` pointing there (1.x). The wrappers put every shim process in
cgroup `shim`, every runc process in cgroup `runc`, and the v1 shim's `containerd publish`
helper in cgroup `publish`.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time

from . import cgroup, proc
from . import series as seriesmod

SHIM_NAMES = ("containerd-shim", "containerd-shim-runc-v1", "containerd-shim-runc-v2")

# short name -> (containerd runtime, shim binary name)
RUNTIMES = {
    "runc.v2": ("io.containerd.runc.v2", "containerd-shim-runc-v2"),
    "runc.v1": ("io.containerd.runc.v1", "containerd-shim-runc-v1"),
    "v1linux": ("io.containerd.runtime.v1.linux", "containerd-shim"),
}

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "c")


class Tools:
    """Things shared by every environment of one bench run: the series' binaries, compiled
    helpers, the rootfs, a copy of the series' containerd binary (see Env.start for why), the
    cgroup parent."""

    def __init__(self, base: str, cg_base: str, bins: seriesmod.Binaries):
        self.base = base
        self.cg_base = cg_base
        self.bins = bins
        self.series = bins.series
        self.rootfs = os.path.join(base, "rootfs")
        self.containerd_copy = os.path.join(base, "containerd")
        self.runc = shutil.which("runc") or "/usr/sbin/runc"
        self.ctr = bins.ctr
        # ctr 2.x warns about cgroup v1 on every call; stderr should carry only real errors.
        self.ctr_env = dict(os.environ, CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS="1")
        self.nop = os.path.join(base, "nop")
        self.spawnloop = os.path.join(base, "spawnloop")
        self.burst = os.path.join(base, "burst")

    def prepare(self) -> None:
        os.makedirs(self.base, exist_ok=True)
        nolibc = self.NOLIBC if platform.machine() in ("x86_64", "aarch64") else []
        self._gcc(nolibc + ["-o", self.nop, os.path.join(CSRC, "nop.c")])
        self._gcc(["-o", self.spawnloop, os.path.join(CSRC, "spawnloop.c")])
        self._gcc(["-o", self.burst, os.path.join(CSRC, "burst.c")])
        shutil.copy2(self.bins.containerd, self.containerd_copy)
        for d in ("bin", "proc", "dev", "sys", "tmp"):
            os.makedirs(os.path.join(self.rootfs, d), exist_ok=True)
        shutil.copy2("/bin/busybox", os.path.join(self.rootfs, "bin", "busybox"))
        applets = proc.run(["/bin/busybox", "--list"]).check().out.decode().split()
        for a in applets:
            if a != "busybox" and "/" not in a:
                link = os.path.join(self.rootfs, "bin", a)
                if not os.path.lexists(link):
                    os.symlink("busybox", link)

    @staticmethod
    def _gcc(args) -> None:
        proc.run(["gcc", "-static", "-O2", "-s", "-Wall"] + args, timeout=120).check()

    NOLIBC = ["-nostdlib", "-fno-stack-protector", "-fno-builtin"]

    def wrapper(self, out: str, real: str, group: cgroup.CpuGroup, log: str | None) -> None:
        defs = [f'-DREAL="{real}"', f'-DPROCS="{group.procs_file}"']
        if log:
            defs.append(f'-DLOG="{log}"')
        if platform.machine() in ("x86_64", "aarch64"):
            self._gcc(self.NOLIBC + defs + ["-o", out, os.path.join(CSRC, "wrapper.c")])
        else:
            self._gcc(defs + ["-o", out, os.path.join(CSRC, "wrapper_libc.c")])


def socket_name(address: str, ns: str, ident: str) -> str:
    joined = os.path.normpath(f"{address}/{ns}/{ident}")
    return "/run/containerd/s/" + hashlib.sha256(joined.encode()).hexdigest()


class Env:
    def __init__(self, tools: Tools, side: str, shims: dict[str, str], tag: str, log=print):
        self.tools = tools
        self.side = side
        self.shims = shims  # shim name -> real binary (names this side lacks are absent)
        self.tag = tag
        self.log = log
        self.ns = f"shimbench-{os.getpid()}-{tag}"
        self.work = None
        self.ctd = None
        self.ids: list[str] = []  # every container id and group used (for socket cleanup)
        self.counter = 0
        self.cg: dict[str, cgroup.CpuGroup] = {}
        self.leaks: list[str] = []

    # ---- setup -------------------------------------------------------------------------

    def start(self) -> "Env":
        t = self.tools
        self.work = tempfile.mkdtemp(prefix=f"shimbench-{self.tag}.", dir="/tmp")
        w = self.work
        self.addr = os.path.join(w, "containerd.sock")
        self.bin = os.path.join(w, "bin")
        self.fifo = os.path.join(w, "fifo")
        self.invlog = os.path.join(w, "invocations.log")
        for d in (self.bin, self.fifo, os.path.join(w, "ctd")):
            os.makedirs(d)
        for g in ("shim", "runc", "publish"):
            self.cg[g] = cgroup.CpuGroup(f"{t.cg_base}/{self.tag}/{g}")
        for name in SHIM_NAMES:
            if name not in self.shims:
                continue  # 2.x Go side: the series ships no such shim; its runtime is not run
            t.wrapper(os.path.join(self.bin, name), self.shims[name], self.cg["shim"], self.invlog)
        t.wrapper(os.path.join(self.bin, "runc"), t.runc, self.cg["runc"], self.invlog)
        # The legacy shim publishes exits by running `<containerd binary> publish`, where the
        # binary is containerd's os.Executable(), which Go reads once at start-up. So containerd
        # runs from a file of ours, which is then replaced by a wrapper (the running daemon keeps
        # its inode, reachable as containerd.real): publish helpers are charged to `publish`.
        ctd_bin = os.path.join(w, "ctd", "containerd")
        try:
            os.link(t.containerd_copy, ctd_bin)
        except OSError:
            shutil.copy2(t.containerd_copy, ctd_bin)
        cfg = os.path.join(w, "containerd.toml")
        with open(cfg, "w") as f:
            f.write(seriesmod.config(t.series, w, self.addr, self.bin))
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        self.ctd_log = open(os.path.join(w, "containerd.log"), "wb")
        self.ctd = subprocess.Popen([ctd_bin, "--config", cfg], env=env, stdin=subprocess.DEVNULL,
                                    stdout=self.ctd_log, stderr=self.ctd_log)
        deadline = time.time() + 30
        while True:
            if self.ctd.poll() is not None:
                raise RuntimeError(f"containerd exited {self.ctd.returncode}; see {w}/containerd.log")
            v = proc.run([t.ctr, "-a", self.addr, "version"], timeout=10, env=t.ctr_env)
            if v.rc == 0:
                break
            if time.time() > deadline:
                raise RuntimeError("containerd did not come up")
            time.sleep(0.1)
        # The daemon is the series asked for (ctr version's server part).
        server = v.out.decode(errors="replace").split("Server:", 1)[-1]
        self.version = next((ln.split(":", 1)[1].strip().lstrip("v") for ln in server.splitlines()
                             if ln.strip().startswith("Version:")), "")
        if not self.version.startswith(t.series.version):
            raise RuntimeError(f"containerd {t.series.name} expected, the daemon says {self.version!r}")
        real = ctd_bin + ".real"
        os.link(ctd_bin, real)
        t.wrapper(ctd_bin + ".wrap", real, self.cg["publish"], self.invlog)
        os.rename(ctd_bin + ".wrap", ctd_bin)
        return self

    # ---- ctr ---------------------------------------------------------------------------

    def ctr_argv(self, *args) -> list[str]:
        return [self.tools.ctr, "-a", self.addr, "-n", self.ns, *args]

    def ctr(self, *args, timeout=120) -> proc.Result:
        return proc.run(self.ctr_argv(*args), timeout=timeout, env=self.tools.ctr_env)

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        i = f"{prefix}-{self.counter}"
        self.ids.append(i)
        return i

    def run_argv(self, rt: str, cid: str, cmd: list[str], *, rm=True, detach=False,
                 annotations: dict | None = None, extra=(), fifo_dir: str | None = None) -> list[str]:
        a = ["run", "--runtime", RUNTIMES[rt][0], "--fifo-dir", fifo_dir or self.fifo, "--env", "PATH=/bin"]
        if rm:
            a.append("--rm")
        if detach:
            a.append("-d")
        for k, v in (annotations or {}).items():
            a += ["--annotation", f"{k}={v}"]
        a += list(extra)
        a += ["--rootfs", self.tools.rootfs, cid, *cmd]
        return self.ctr_argv(*a)

    def start_detached(self, rt: str, cid: str, group: str | None = None) -> None:
        ann = {"io.containerd.runc.v2.group": group} if group else None
        if group and group not in self.ids:
            self.ids.append(group)
        proc.run(self.run_argv(rt, cid, ["/bin/sleep", "1000000"], rm=False, detach=True,
                               annotations=ann), timeout=60, env=self.tools.ctr_env).check()

    def start_many(self, rt: str, n: int, prefix: str, group: str | None = None,
                   parallel: int = 4) -> list[str]:
        ids = [self.new_id(prefix) for _ in range(n)]
        if group:
            # The first container creates the group's shim; the others join it.
            self.start_detached(rt, ids[0], group)
            rest = ids[1:]
        else:
            rest = ids
        with cf.ThreadPoolExecutor(parallel) as ex:
            list(ex.map(lambda i: self.start_detached(rt, i, group), rest))
        return ids

    def remove(self, ids, parallel: int = 4) -> None:
        def rm(i):
            self.ctr("task", "rm", "-f", i, timeout=60)
            r = self.ctr("container", "rm", i, timeout=60)
            if r.rc != 0 and b"not found" not in r.err:
                # The task may still be going away; try once more.
                time.sleep(0.5)
                self.ctr("task", "rm", "-f", i, timeout=60)
                self.ctr("container", "rm", i, timeout=60)
        with cf.ThreadPoolExecutor(parallel) as ex:
            list(ex.map(rm, ids))

    def remove_all(self) -> None:
        for what in ("task", "container"):
            r = self.ctr(what, "ls", "-q", timeout=30)
            if r.rc == 0 and r.out.split():
                self.remove(r.out.decode().split())

    def bundle_config(self, cid: str) -> dict:
        for sub in ("io.containerd.runtime.v2.task", "io.containerd.runtime.v1.linux"):
            p = os.path.join(self.work, "state", sub, self.ns, cid, "config.json")
            if os.path.exists(p):
                with open(p) as f:
                    return json.load(f)
        raise RuntimeError(f"no bundle config.json for {cid}")

    # ---- observation -------------------------------------------------------------------

    def shim_pids(self) -> list[int]:
        return self.cg["shim"].procs()

    def wait_shims(self, count: int | None = 0, timeout: float = 20) -> list[int]:
        """Wait until the shim cgroup holds `count` processes (0: all gone)."""
        deadline = time.time() + timeout
        while True:
            p = self.shim_pids()
            if len(p) == count or time.time() > deadline:
                return p
            time.sleep(0.02)

    def containerd_cpu_ns(self) -> int:
        """CPU of the daemon so far (utime+stime of /proc/PID/stat: every thread, exited ones
        included; clock-tick resolution)."""
        with open(f"/proc/{self.ctd.pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")

    def usage(self) -> dict[str, int]:
        return {g: c.usage_ns() for g, c in self.cg.items()}

    def invocations(self) -> list[str]:
        try:
            with open(self.invlog) as f:
                return f.read().splitlines()
        except OSError:
            return []

    # ---- teardown ----------------------------------------------------------------------

    def close(self) -> list[str]:
        """Remove everything this environment created; returns what had leaked (if anything)."""
        leaks = []
        if self.ctd and self.ctd.poll() is None:
            r = self.ctr("task", "ls", "-q", timeout=30)
            tasks = r.out.decode().split() if r.rc == 0 else []
            if tasks:
                leaks.append(f"tasks left: {len(tasks)}")
                self.remove(tasks)
            r = self.ctr("container", "ls", "-q", timeout=30)
            ctrs = r.out.decode().split() if r.rc == 0 else []
            if ctrs:
                self.remove(ctrs)
            self.ctd.send_signal(signal.SIGTERM)
            try:
                proc.wait_exact(self.ctd, 15)
            except Exception:
                pass
        if self.ctd and self.ctd.returncode is None:
            proc.kill_pids([self.ctd.pid])
            proc.wait_exact(self.ctd, 10)
        if getattr(self, "ctd_log", None):
            self.ctd_log.close()
        # Processes of ours that are still alive: shims, runc, publish helpers, containers.
        ns_groups = [os.path.join(cgroup.V1_ROOT if os.path.isdir(cgroup.V1_ROOT) else cgroup.V2_ROOT,
                                  self.ns)]
        for _ in range(50):
            left = []
            for g in self.cg.values():
                left += g.procs()
            for d in ns_groups:
                for dirpath, _ds, files in os.walk(d):
                    if "cgroup.procs" in files:
                        try:
                            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                                left += [int(x) for x in f.read().split()]
                        except OSError:
                            pass
            if not left:
                break
            if _ == 0:
                leaks.append(f"processes left: {sorted(set(left))}")
            proc.kill_pids(set(left))
            time.sleep(0.1)
        # Sockets named after our ids, runc state of our namespace.
        for i in self.ids:
            s = socket_name(self.addr, self.ns, i)
            if os.path.exists(s):
                leaks.append(f"socket {s} ({i})")
                try:
                    os.unlink(s)
                except OSError:
                    pass
        runc_state = f"/run/containerd/runc/{self.ns}"
        if os.path.isdir(runc_state):
            if os.listdir(runc_state):
                leaks.append(f"runc state {os.listdir(runc_state)}")
            shutil.rmtree(runc_state, ignore_errors=True)
        # cgroups: our namespace in every hierarchy, our accounting groups.
        for d in ["/sys/fs/cgroup"] + [os.path.join("/sys/fs/cgroup", h) for h in os.listdir("/sys/fs/cgroup")]:
            cgroup.remove_tree(os.path.join(d, self.ns))
        for g in self.cg.values():
            g.remove()
        cgroup.remove_tree(os.path.join(cgroup.V1_ROOT if cgroup.mode() == "v1-cpuacct" else cgroup.V2_ROOT,
                                        self.tools.cg_base, self.tag))
        # Mounts under the work dir (deepest first), then the dir.
        if self.work:
            mnts = []
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    mp = line.split()[4]
                    if mp == self.work or mp.startswith(self.work + "/"):
                        mnts.append(mp)
            for mp in sorted(mnts, key=len, reverse=True):
                leaks.append(f"mount {mp}")
                subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
            shutil.rmtree(self.work, ignore_errors=True)
        self.leaks = leaks
        return leaks
