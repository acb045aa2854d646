"""CPU accounting cgroups: cpuacct (cgroup v1) or cpu.stat (cgroup v2).

Every process that runs in a cgroup is charged there by the scheduler (ns, at every accounting
update), and the charge stays after the process exits or leaves. So the usage of a cgroup that
only shim processes ever join is the exact CPU of all shim processes, short-lived ones included.
"""
from __future__ import annotations

import os
import time

V1_ROOT = "/sys/fs/cgroup/cpuacct"
V2_ROOT = "/sys/fs/cgroup"


def mode() -> str:
    if os.path.exists(os.path.join(V1_ROOT, "cpuacct.usage")):
        return "v1-cpuacct"
    if os.path.exists(os.path.join(V2_ROOT, "cgroup.controllers")):
        return "v2"
    raise RuntimeError("no cpuacct (cgroup v1) or cgroup v2 hierarchy found")


class CpuGroup:
    def __init__(self, rel: str):
        self.mode = mode()
        root = V1_ROOT if self.mode == "v1-cpuacct" else V2_ROOT
        self.path = os.path.join(root, rel)
        os.makedirs(self.path, exist_ok=True)

    @property
    def procs_file(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def usage_ns(self) -> int:
        if self.mode == "v1-cpuacct":
            with open(os.path.join(self.path, "cpuacct.usage")) as f:
                return int(f.read())
        with open(os.path.join(self.path, "cpu.stat")) as f:
            for line in f:
                k, v = line.split()
                if k == "usage_usec":
                    return int(v) * 1000
        raise RuntimeError("cpu.stat without usage_usec")

    def user_sys_ns(self) -> tuple[int, int]:
        if self.mode == "v1-cpuacct":
            vals = []
            for n in ("cpuacct.usage_user", "cpuacct.usage_sys"):
                with open(os.path.join(self.path, n)) as f:
                    vals.append(int(f.read()))
            return vals[0], vals[1]
        u = s = 0
        with open(os.path.join(self.path, "cpu.stat")) as f:
            for line in f:
                k, v = line.split()
                if k == "user_usec":
                    u = int(v) * 1000
                elif k == "system_usec":
                    s = int(v) * 1000
        return u, s

    def procs(self) -> list[int]:
        try:
            with open(self.procs_file) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def join(self, pid: int) -> None:
        with open(self.procs_file, "w") as f:
            f.write(str(pid))

    def remove(self, timeout: float = 5) -> bool:
        deadline = time.time() + timeout
        while True:
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.time() > deadline:
                    return False
                time.sleep(0.1)


def remove_tree(path: str) -> None:
    """rmdir a cgroup directory and its children (deepest first); ignores what is busy."""
    if not os.path.isdir(path):
        return
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
