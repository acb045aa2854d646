"""shimbench: shimgate beside the Go shims, through private real containerds, in one run.

Usage (as root; bench/run.sh builds the release binary first):
  python3 -m shimbench [--series 1.6|1.7|2.2|2.3] [--rounds N] [--out DIR] [--quick]
                       [--runtimes runc.v2,runc.v1,v1linux] [--shim PATH] [-n SAMPLES]
                       [--idle SECONDS] [--no-scale] [--burst K] [--burst-reps N]
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback

from . import cgroup, env as envmod, measure as m, proc, report
from . import series as seriesmod

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(argv):
    ap = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__.split("\n")[0])
    ap.add_argument("--series", default="1.6", choices=sorted(seriesmod.SERIES),
                    help="containerd series: 1.6 is Debian's /usr/bin/containerd with the Go shims "
                         "in /usr/bin; 1.7, 2.2 and 2.3 come from the peers ($SHIMGATE_PEERS, default "
                         "<repo>/../shared/peers) with their own Go shims (default 1.6)")
    ap.add_argument("--rounds", type=int, help="rounds per side (default 3, --quick 1)")
    ap.add_argument("--out", help="output directory (default bench/results/<UTC time>)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer samples, 5 s idle windows, no 100-container scaling, 1 round unless --rounds")
    ap.add_argument("--runtimes", help="default: all the series starts (1.x: runc.v2,runc.v1,v1linux; "
                    "2.x: runc.v2,runc.v1, runc.v1 for shimgate alone: 2.x ships no Go runc.v1 shim)")
    ap.add_argument("--shim", default=os.path.join(REPO, "target", "release", "shimgate"),
                    help="the shimgate binary (default target/release/shimgate)")
    ap.add_argument("-n", type=int, help="latency samples per round and metric (default 20, --quick 6)")
    ap.add_argument("--idle", type=float, help="idle window in seconds (default 10, --quick 5)")
    ap.add_argument("--no-scale", action="store_true", help="skip the 100-container scaling points")
    ap.add_argument("--burst", type=int, default=100, help="concurrent execs in the exec burst (default 100)")
    ap.add_argument("--burst-reps", type=int, default=1,
                    help="exec bursts per round and runtime (default 1; the Go 1.x shims take minutes for one)")
    a = ap.parse_args(argv)
    a.series_def = seriesmod.SERIES[a.series]
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.n = a.n or (6 if a.quick else 20)
    a.idle = a.idle or (5.0 if a.quick else 10.0)
    a.scale = not (a.quick or a.no_scale)
    a.tp_reps = 1 if a.quick else 2
    a.runtimes = ([r for r in a.runtimes.split(",") if r] if a.runtimes
                  else list(a.series_def.runtimes))
    for r in a.runtimes:
        if r not in envmod.RUNTIMES:
            ap.error(f"unknown runtime {r}; known: {', '.join(envmod.RUNTIMES)}")
        if r not in a.series_def.runtimes:
            ap.error(f"containerd {a.series} has no {envmod.RUNTIMES[r][0]} (the legacy runtime was "
                     "removed in containerd 2.0)")
    a.out = a.out or os.path.join(REPO, "bench", "results",
                                  dt.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ") + f"-containerd{a.series}")
    return a


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def settle(e: envmod.Env, seconds=1.5):
    time.sleep(seconds)


def bench_env(e: envmod.Env, a) -> dict:
    res = {}
    for rt in a.runtimes:
        r = res[rt] = {}
        if envmod.RUNTIMES[rt][1] not in e.shims:
            r["na"] = (f"containerd {a.series} ships no Go {envmod.RUNTIMES[rt][1]}")
            log(f"  {rt}: n/a ({r['na']})")
            continue
        try:
            bench_runtime(e, a, rt, r)
        except KeyboardInterrupt:
            raise
        except Exception:
            # Keep what was measured, clear the namespace, go on with the next runtime.
            r["error"] = traceback.format_exc()
            log(f"  {rt}: FAILED\n{r['error']}")
            e.remove_all()
            e.wait_shims(0, timeout=30)
    return res


def bench_runtime(e: envmod.Env, a, rt: str, r: dict) -> None:
    """Everything for one runtime, in an order that keeps each measurement alone: lifecycles
    with no other shim alive, exec on a lone container, memory/idle on settled shims."""
    log(f"  {rt}: {a.n} x run --rm /bin/true")
    r.update(m.lifecycles(e, rt, a.n))
    log(f"  {rt}: memory and idle CPU, 1 and 20 containers")
    c1 = e.start_many(rt, 1, "m")
    settle(e)
    r["mem_1"] = m.memory(e, rt, 1, detail=True)
    r["idle_1"] = m.idle(e, a.idle)
    rest = e.start_many(rt, 19, "m")
    settle(e, 2)
    r["mem_20"] = m.memory(e, rt, 20)
    r["idle_20"] = m.idle(e, a.idle)
    r["validation"] = m.validate(e, c1 + rest)
    e.remove(c1 + rest)
    e.wait_shims(0)
    log(f"  {rt}: {a.n} x exec /bin/true")
    cx = e.start_many(rt, 1, "x")
    settle(e, 0.5)
    r.update(m.execs(e, cx[0], a.n))
    log(f"  {rt}: {a.burst} concurrent execs on one container, {a.burst_reps} x")
    r["burst"] = []
    for k in range(a.burst_reps):
        r["burst"].append(m.exec_burst(e, cx[0], a.burst, tag=f"b{k}-"))
        settle(e, 0.5)
    if rt == a.runtimes[0]:
        log(f"  bare runc run, {a.n} x")
        r.update(m.runc_baseline(e, e.bundle_config(cx[0]), a.n))
    e.remove(cx)
    e.wait_shims(0)
    if rt == "runc.v2":
        log(f"  {rt}: 20 containers in one group")
        g = e.start_many(rt, 20, "g", group=e.new_id("grp"))
        settle(e, 2)
        r["mem_20g"] = m.memory(e, rt, 1, detail=True)
        r["idle_20g"] = m.idle(e, a.idle)
        e.remove(g)
        e.wait_shims(0)
        if a.scale:
            log(f"  {rt}: 100 containers, separate")
            ids = e.start_many(rt, 100, "s")
            settle(e, 3)
            r["mem_100"] = m.memory(e, rt, 100)
            r["idle_100"] = m.idle(e, a.idle)
            e.remove(ids)
            e.wait_shims(0, timeout=60)
            log(f"  {rt}: 100 containers in one group")
            ids = e.start_many(rt, 100, "h", group=e.new_id("grp"))
            settle(e, 3)
            r["mem_100g"] = m.memory(e, rt, 1)
            r["idle_100g"] = m.idle(e, a.idle)
            e.remove(ids)
            e.wait_shims(0, timeout=60)
    log(f"  {rt}: 256 MiB through stdout")
    r["stdout_ctr"] = [m.stdout_via_ctr(e, rt) for _ in range(a.tp_reps)]
    r["stdout_direct"] = [m.stdout_direct(e, rt) for _ in range(a.tp_reps)]


def worker(a) -> int:
    if os.geteuid() != 0:
        print("shimbench: must run as root (containerd, runc and cgroups need it)", file=sys.stderr)
        return 2
    shimgate = os.path.realpath(a.shim)
    try:
        bins = seriesmod.resolve(a.series_def, REPO, log=log)
    except (RuntimeError, OSError) as err:
        print(f"shimbench: containerd {a.series}: {err}", file=sys.stderr)
        return 2
    go = bins.go_shims
    if not os.access(shimgate, os.X_OK):
        print(f"shimbench: no shimgate binary at {shimgate} (cargo build --release)", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    tag = f"shimbench-{os.getpid()}"
    base = f"/tmp/{tag}.common"
    tools = envmod.Tools(base, tag, bins)
    # A private copy: another build replacing target/release/shimgate mid-run changes nothing.
    meta = {
        "started": dt.datetime.utcnow().isoformat() + "Z",
        "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
        "cgroup": cgroup.mode(),
        "config": {"rounds": a.rounds, "n": a.n, "idle_s": a.idle, "scale": a.scale,
                   "tp_reps": a.tp_reps, "burst": a.burst, "burst_reps": a.burst_reps,
                   "runtimes": a.runtimes, "quick": a.quick},
        "series": {"name": a.series, "origin": a.series_def.origin, "config_version": a.series_def.config_version,
                   "containerd": bins.containerd, "ctr": bins.ctr, "go_shims": go, "peers": bins.peers},
        "versions": {},
        "binaries": {},
        "load_start": proc.loadavg(),
        "shimgate": shimgate,
    }
    for name, cmd in (("containerd", [bins.containerd, "--version"]), ("runc", [tools.runc, "--version"]),
                      ("ctr", [bins.ctr, "--version"])):
        meta["versions"][name] = proc.run(cmd, env=tools.ctr_env).out.decode().strip().splitlines()[0]
    try:
        meta["bench_git"] = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                                              capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    result = {"meta": meta, "rounds": [], "calibration": {}, "errors": []}
    sizes = {}
    code = 0
    try:
        tools.prepare()
        sg_copy = os.path.join(base, "shimgate")
        shutil.copy2(shimgate, sg_copy)
        # Private copies of the Go shims too: file-backed pages of a binary are shared (and
        # their PSS divided) with every other process mapping the same file, e.g. Go shims
        # that other work on the machine runs from /usr/bin.
        go_copies = {}
        for n, p in go.items():
            go_copies[n] = os.path.join(base, "go", n)
            os.makedirs(os.path.dirname(go_copies[n]), exist_ok=True)
            shutil.copy2(p, go_copies[n])
        sides = {
            "go": go_copies,
            "shimgate": {n: sg_copy for n in envmod.SHIM_NAMES},
        }
        for n, p in go.items():
            sizes[p] = os.path.getsize(p)
            meta["binaries"][p] = {"size": os.path.getsize(p), "sha256": sha256(p)}
        sizes[shimgate] = os.path.getsize(shimgate)
        meta["binaries"][shimgate] = {"size": os.path.getsize(shimgate), "sha256": sha256(shimgate)}
        log("wrapper overhead calibration")
        result["calibration"]["wrapper"] = m.wrapper_overhead(tools)
        log(f"  wrapper: {result['calibration']['wrapper']['overhead_us']:.1f} µs CPU per invocation")
        for rnd in range(1, a.rounds + 1):
            for side in ("go", "shimgate"):
                log(f"round {rnd}/{a.rounds}, {side} (load {proc.loadavg()})")
                e = envmod.Env(tools, side, sides[side], f"{side}-r{rnd}", log=log)
                entry = {"round": rnd, "side": side, "load_before": proc.loadavg(), "results": {}}
                t0 = time.time()
                try:
                    e.start()
                    entry["containerd_version"] = e.version
                    entry["results"] = bench_env(e, a)
                finally:
                    entry["leaks"] = e.close()
                    entry["load_after"] = proc.loadavg()
                    entry["seconds"] = time.time() - t0
                    if entry["leaks"]:
                        log(f"  leaks/cleanup: {entry['leaks']}")
                result["rounds"].append(entry)
                with open(os.path.join(a.out, "results.json"), "w") as f:
                    json.dump(result, f, indent=1)
    except KeyboardInterrupt:
        result["errors"].append("interrupted")
        code = 130
    except Exception:
        result["errors"].append(traceback.format_exc())
        log(traceback.format_exc())
        code = 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
        cgroup.remove_tree(os.path.join(cgroup.V1_ROOT if cgroup.mode() == "v1-cpuacct" else cgroup.V2_ROOT, tag))
    meta["load_end"] = proc.loadavg()
    meta["finished"] = dt.datetime.utcnow().isoformat() + "Z"
    done = [r for r in result["rounds"] if r["results"]]
    summary = report.summarize(done, a.runtimes, burst=a.burst)
    result["summary"] = summary
    per_side = {s: sum(1 for r in done if r["side"] == s) for s in ("go", "shimgate")}
    versions = sorted({r.get("containerd_version", "?") for r in done})
    where = (f"containerd {a.series} ({', '.join(versions) or '?'}: {a.series_def.origin}), "
             f"each runtime against the Go shim of that series")
    md = report.headline(summary, where, report.not_available(done), burst=a.burst)
    md += "\n" + report.table(summary, sizes, per_side, report.not_available(done))
    md += "\n" + report.scaling_table(summary)
    md += "\n" + report.notes(done, result["calibration"])
    loads = [r["load_before"][0] for r in result["rounds"]]
    if loads:
        md += (f"\nLoad average (1 min) before each round: {', '.join(f'{x:.2f}' for x in loads)} "
               f"on {os.cpu_count()} CPUs. Wrapper overhead: "
               f"{result['calibration'].get('wrapper', {}).get('overhead_us', float('nan')):.1f} µs CPU per "
               "wrapped invocation (upper bound; see bench/README.md).\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.out, "ratios.svg"), "w") as f:
        f.write(report.svg(summary))
    print(md)
    print(f"JSON: {a.out}/results.json  table: {a.out}/table.md  chart: {a.out}/ratios.svg")
    return code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if os.environ.get("SHIMBENCH_WORKER") != "1":
        # PID 1 here does not reap orphans: this process becomes the child subreaper for
        # everything the bench starts (shims outlive their `start` parent) and reaps it.
        env = dict(os.environ, SHIMBENCH_WORKER="1")
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = pkg_parent + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        os.environ.update(env)
        return proc.supervise([sys.executable, "-m", "shimbench", *argv])
    return worker(a)


if __name__ == "__main__":
    sys.exit(main())
