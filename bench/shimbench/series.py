"""containerd series the bench runs on, and where their binaries come from.

| series | containerd and ctr | Go shims | config | runtimes |
|---|---|---|---|---|
| 1.6 | Debian's `/usr/bin/containerd`, `ctr` | `/usr/bin` (all three) | version 2 | runc.v2, runc.v1, v1linux |
| 1.7 | peers' 1.7.34 | peers' 1.7.34 (all three) | version 2, NRI off | runc.v2, runc.v1, v1linux |
| 2.2 | peers' 2.2.7 | peers' 2.2.7 (runc.v2 only) | version 3, NRI off | runc.v2, runc.v1 |
| 2.3 | peers' 2.3.4 | peers' 2.3.4 (runc.v2 only) | version 4, NRI off | runc.v2, runc.v1 |

containerd 2.x still starts `containerd-shim-runc-v1` by name, but ships no Go binary of that
name: on 2.x runc.v1 is measured for shimgate alone (the Go side is "n/a"). The legacy
`io.containerd.runtime.v1.linux` is a containerd plugin that 2.x no longer has.

The peers ("upstream containerd releases", see ../shared/peers/README.md) are found and
unpacked exactly as the project's tests do it (tests/common/peers.rs): `SHIMGATE_PEERS` names
the directory with the archives, `SHA256SUMS` and `CONTENTS.sha256` (default
`<repo>/../shared/peers`); they are unpacked once into `<target>/tmp/peers/<key>/` (key: the
first 16 hex digits of sha256(SHA256SUMS)), checked against CONTENTS.sha256 and published by a
rename under an exclusive flock of `<target>/tmp/peers/.lock`, so the bench and the tests share
one tree and never see a half-unpacked one.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Series:
    name: str            # "1.6"
    peer_dir: str | None  # directory inside the unpacked peers; None: the host's Debian packages
    version: str         # what `ctr version` says the server is (prefix, no leading v)
    config_version: int
    runtimes: tuple      # short runtime names this series starts, bench order

    @property
    def is_2x(self) -> bool:
        return self.name.startswith("2.")

    @property
    def origin(self) -> str:
        if self.peer_dir is None:
            return "Debian's containerd package (/usr/bin)"
        return f"upstream {self.peer_dir} (peers)"


SERIES = {
    "1.6": Series("1.6", None, "1.6.", 2, ("runc.v2", "runc.v1", "v1linux")),
    "1.7": Series("1.7", "containerd-1.7.34", "1.7.34", 2, ("runc.v2", "runc.v1", "v1linux")),
    "2.2": Series("2.2", "containerd-2.2.7", "2.2.7", 3, ("runc.v2", "runc.v1")),
    "2.3": Series("2.3", "containerd-2.3.4", "2.3.4", 4, ("runc.v2", "runc.v1")),
}


def peers_source(repo: str) -> str:
    """Where the peer archives are: $SHIMGATE_PEERS, else <repo>/../shared/peers (as the tests)."""
    p = os.environ.get("SHIMGATE_PEERS")
    return p if p else os.path.join(repo, "..", "shared", "peers")


def _target_dir(repo: str) -> str:
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target")


def _run(argv, cwd, what):
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"{what}: {(r.stdout + r.stderr).strip()[:500]}")


def unpack_peers(repo: str, log=print) -> str:
    """The checked, unpacked peers directory (unpacking it on first use, as the tests do)."""
    src = peers_source(repo)
    sums = os.path.join(src, "SHA256SUMS")
    contents = os.path.join(src, "CONTENTS.sha256")
    try:
        with open(sums) as f:
            sums_text = f.read()
    except OSError:
        raise RuntimeError(f"containerd peers not found: no {sums} (set SHIMGATE_PEERS)") from None
    if not os.path.isfile(contents):
        raise RuntimeError(f"containerd peers not found: no {contents} (set SHIMGATE_PEERS)")
    key = hashlib.sha256(sums_text.encode()).hexdigest()[:16]
    base = os.path.join(_target_dir(repo), "tmp", "peers")
    os.makedirs(base, exist_ok=True)
    dest = os.path.join(base, key)
    if os.path.exists(os.path.join(dest, ".complete")):
        return dest
    with open(os.path.join(base, ".lock"), "w") as lock:
        # Parallel test binaries (and benches) unpack under this lock; wait, then look again.
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if os.path.exists(os.path.join(dest, ".complete")):
            return dest
        log(f"unpacking containerd peers from {src} into {dest}")
        _run(["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"], src, "archives do not match SHA256SUMS")
        tmp = os.path.join(base, f".{key}.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            for line in sums_text.splitlines():
                parts = line.split()
                if len(parts) < 2:
                    continue
                archive = os.path.join(os.path.abspath(src), parts[1].lstrip("*"))
                _run(["tar", "-xJf", archive], tmp, f"unpack {archive}")
            _run(["sha256sum", "--quiet", "--strict", "-c", os.path.abspath(contents)], tmp,
                 "unpacked files do not match CONTENTS.sha256")
            with open(os.path.join(tmp, ".complete"), "w") as f:
                f.write(sums_text)
            # Under the lock nobody else publishes; an incomplete leftover would block the rename.
            shutil.rmtree(dest, ignore_errors=True)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


@dataclass
class Binaries:
    """The resolved binaries of one series on this machine."""
    series: Series
    containerd: str
    ctr: str
    go_shims: dict  # shim name -> Go binary; names the series does not ship are absent
    peers: str | None  # the unpacked peers directory, if used


def resolve(s: Series, repo: str, log=print) -> Binaries:
    names = ("containerd-shim", "containerd-shim-runc-v1", "containerd-shim-runc-v2")
    if s.peer_dir is None:
        containerd = shutil.which("containerd") or "/usr/bin/containerd"
        ctr = shutil.which("ctr") or "/usr/bin/ctr"
        go = {n: shutil.which(n, path="/usr/bin:/usr/local/bin") for n in names}
        missing = [n for n, p in go.items() if not p]
        if missing:
            raise RuntimeError(f"Go shims missing in /usr/bin: {missing}")
        return Binaries(s, containerd, ctr, go, None)
    peers = unpack_peers(repo, log)
    bindir = os.path.join(peers, s.peer_dir, "bin")
    containerd, ctr = os.path.join(bindir, "containerd"), os.path.join(bindir, "ctr")
    for p in (containerd, ctr):
        if not os.path.isfile(p):
            raise RuntimeError(f"peers lack {p}")
    go = {n: os.path.join(bindir, n) for n in names if os.path.isfile(os.path.join(bindir, n))}
    if "containerd-shim-runc-v2" not in go:
        raise RuntimeError(f"peers lack {bindir}/containerd-shim-runc-v2")
    return Binaries(s, containerd, ctr, go, peers)


def config(s: Series, work: str, addr: str, shim_dir: str) -> str:
    """A private ctr-only daemon of series s (CRI and NRI off), as tests/common/series.rs writes it."""
    if s.is_2x:
        disabled = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images",
                    "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox"]
    else:
        disabled = ["io.containerd.grpc.v1.cri"]
    out = (f"version = {s.config_version}\n"
           f'root = "{work}/root"\nstate = "{work}/state"\n'
           "disabled_plugins = [" + ", ".join(f'"{d}"' for d in disabled) + "]\n")
    if s.config_version >= 4:
        out += (f'[plugins."io.containerd.server.v1.grpc"]\n  address = "{addr}"\n'
                f'[plugins."io.containerd.server.v1.ttrpc"]\n  address = "{addr}.ttrpc"\n')
    else:
        out += f'[grpc]\n  address = "{addr}"\n[ttrpc]\n  address = "{addr}.ttrpc"\n'
    out += f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{work}/opt"\n'
    if s.name != "1.6":
        # 1.7 has NRI off by default, 2.x on (on the machine-wide /var/run/nri/nri.sock).
        out += '[plugins."io.containerd.nri.v1.nri"]\n  disable = true\n'
    if "v1linux" in s.runtimes:
        out += (f'[plugins."io.containerd.runtime.v1.linux"]\n  shim = "{shim_dir}/containerd-shim"\n'
                '  runtime = "runc"\n')
    return out
