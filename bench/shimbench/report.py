"""Aggregation over rounds (medians), the markdown table and the SVG chart of the ratios."""
from __future__ import annotations

import math
import os
import statistics
from xml.sax.saxutils import escape


def _g(*path):
    def get(r):
        for k in path:
            if r is None or k not in r:
                return None
            r = r[k]
        return r
    return get


def _med_of(key, field):
    def get(r):
        xs = r.get(key)
        if not xs:
            return None
        return statistics.median(x[field] for x in xs)
    return get


def _grouped(r):
    a, b = _g("mem_20g", "pss_kib")(r), _g("mem_1", "pss_kib")(r)
    return None if a is None or b is None else (a - b) / 19


def _net(key, field, base):
    def get(r):
        v = _med_of(key, field)(r)
        b = base(r)
        return None if v is None or b is None else v - b
    return get


def _per_exec(field):
    def get(r):
        xs = r.get("burst")
        if not xs:
            return None
        return statistics.median(x[field] / x["execs"] for x in xs)
    return get


def _burst_floor(r):
    """The burst's CPU of every role together, spread over the machine's CPUs: the wall time it
    cannot go below (other work on the machine adds to it)."""
    xs = r.get("burst")
    if not xs:
        return None
    return statistics.median((x["shim_cpu_ms"] + x["runc_cpu_ms"] + x["publish_cpu_ms"] + x["ctr_cpu_ms"]
                              + x["containerd_cpu_ms"]) / (x.get("cpus") or os.cpu_count() or 1) for x in xs)


def _idle_all(r):
    """Sum of every idle window of the round (each normalised to 10 s): 0 only if all are 0."""
    xs = [r[k]["idle_cpu_ms_per_10s"] for k in ("idle_1", "idle_20", "idle_20g", "idle_100", "idle_100g")
          if k in r]
    return sum(xs) if xs else None


def _overhead(r):
    a, b = _g("run_ms", "median")(r), _g("runc_run_ms", "median")(r)
    return None if a is None or b is None else a - b


# key, label, unit, getter(per-round result of one runtime), target
# targets: ("le", x): ratio <= x; ("ge", x): ratio >= x; ("abs_le", x): shimgate value <= x;
#          ("zero",): shimgate value == 0. Issue 14's targets unless a third element names the
#          issue an older target comes from (kept as a regression guard, marked in the table).
# "{burst}" in a label is the number of concurrent execs of the burst (--burst).
METRICS = [
    ("run_med", "`ctr run --rm /bin/true` latency, median", "ms", _g("run_ms", "median"), ("le", 0.8)),
    ("run_p90", "`ctr run --rm /bin/true` latency, p90", "ms", _g("run_ms", "p90"), None),
    ("runc_med", "bare `runc run` of the same spec, median", "ms", _g("runc_run_ms", "median"), None),
    ("runc_p90", "bare `runc run` of the same spec, p90", "ms", _g("runc_run_ms", "p90"), None),
    ("overhead", "ctr run median − runc run median", "ms", _overhead, None),
    ("exec_med", "`ctr task exec /bin/true` latency, median", "ms", _g("exec_ms", "median"), None),
    ("exec_p90", "`ctr task exec /bin/true` latency, p90", "ms", _g("exec_ms", "p90"), None),
    ("burst_wall", "{burst} concurrent `ctr task exec /bin/true` on one container, wall time", "ms",
     _med_of("burst", "wall_ms"), ("le", 0.2)),
    ("burst_each", "  one exec's wall time within the burst, median", "ms",
     lambda r: statistics.median(x["each_ms"]["median"] for x in r["burst"]) if r.get("burst") else None, None),
    ("burst_shim", "  shim CPU per exec in the burst", "ms", _per_exec("shim_cpu_ms"), None),
    ("burst_runc", "  runc CPU per exec in the burst (not shim)", "ms", _per_exec("runc_cpu_ms"), None),
    ("burst_ctr", "  ctr CPU per exec in the burst (not shim)", "ms", _per_exec("ctr_cpu_ms"), None),
    ("burst_ctd", "  containerd CPU per exec in the burst (not shim)", "ms", _per_exec("containerd_cpu_ms"), None),
    ("burst_floor", "  all of it (shim + runc + ctr + containerd) / CPUs: the wall's floor", "ms", _burst_floor, None),
    ("pss_1", "shim PSS, 1 container", "KiB", _g("mem_1", "pss_kib"), ("le", 0.2)),
    ("rss_1", "shim RSS, 1 container", "KiB", _g("mem_1", "rss_kib"), None),
    ("thr_1", "shim threads, 1 container", "", _g("mem_1", "threads"), None),
    ("pss_20", "shim PSS total, 20 containers (20 shims)", "KiB", _g("mem_20", "pss_kib"), ("le", 0.15)),
    ("rss_20", "shim RSS total, 20 containers (20 shims)", "KiB", _g("mem_20", "rss_kib"), None),
    ("pss_20g", "shim PSS, 20 containers in one group", "KiB", _g("mem_20g", "pss_kib"), None),
    ("rss_20g", "shim RSS, 20 containers in one group", "KiB", _g("mem_20g", "rss_kib"), None),
    ("per_grp", "PSS per additional grouped container", "KiB", _grouped, ("abs_le", 150, 7)),
    ("cpu_life", "shim CPU per lifecycle (`run --rm`)", "ms", _g("cpu_lifecycle_ms"), ("le", 0.2)),
    ("cpu_exec", "shim CPU per exec", "ms", _g("cpu_exec_ms"), ("le", 0.25)),
    ("per_child", "shim CPU per forked child (fork until it has exec'd the runc wrapper)", "µs",
     _g("validation", "exec", "diff_per_child_us"), None),
    ("runc_life", "runc CPU per lifecycle (not shim)", "ms", _g("runc_cpu_lifecycle_ms"), None),
    ("pub_life", "`containerd publish` CPU per lifecycle (not shim)", "ms", _g("publish_cpu_lifecycle_ms"), None),
    ("pub_exec", "`containerd publish` CPU per exec (not shim)", "ms", _g("publish_cpu_exec_ms"), None),
    ("ctr_life", "ctr CPU per `run --rm /bin/true`", "ms", _g("ctr_cpu_ms", "median"), None),
    ("idle_1", "idle CPU, 1 shim, per 10 s", "ms", _g("idle_1", "idle_cpu_ms_per_10s"), ("zero",)),
    ("idle_20", "idle CPU, 20 shims, per 10 s", "ms", _g("idle_20", "idle_cpu_ms_per_10s"), ("zero",)),
    ("idle_20g", "idle CPU, 20 containers in one group, per 10 s", "ms", _g("idle_20g", "idle_cpu_ms_per_10s"), ("zero",)),
    ("pss_100", "shim PSS total, 100 containers (100 shims)", "KiB", _g("mem_100", "pss_kib"), None),
    ("idle_100", "idle CPU, 100 shims, per 10 s", "ms", _g("idle_100", "idle_cpu_ms_per_10s"), ("zero",)),
    ("pss_100g", "shim PSS, 100 containers in one group", "KiB", _g("mem_100g", "pss_kib"), None),
    ("idle_100g", "idle CPU, 100 containers in one group, per 10 s", "ms", _g("idle_100g", "idle_cpu_ms_per_10s"), ("zero",)),
    ("idle_all", "idle CPU, sum of the windows above (each per 10 s)", "ms", _idle_all, ("zero",)),
    ("tp_ctr", "stdout 256 MiB read via `ctr run`", "MiB/s", _med_of("stdout_ctr", "mibs"), ("ge", 3, 7)),
    ("tp_ctr_shim", "  shim CPU for it (minus one lifecycle)", "ms",
     _net("stdout_ctr", "shim_cpu_ms", _g("cpu_lifecycle_ms")), None),
    ("tp_ctr_ctr", "  ctr CPU for it (minus one /bin/true run)", "ms",
     _net("stdout_ctr", "ctr_cpu_ms", _g("ctr_cpu_ms", "median")), None),
    ("tp_direct", "stdout 256 MiB, ctr's FIFO read by the bench (ctr stopped)", "MiB/s",
     _med_of("stdout_direct", "mibs"), ("ge", 3, 7)),
    ("tp_direct_shim", "  shim CPU for it (minus one lifecycle)", "ms",
     _net("stdout_direct", "shim_cpu_ms", _g("cpu_lifecycle_ms")), None),
]


def summarize(rounds: list[dict], runtimes: list[str], sides=("go", "shimgate"), burst: int = 100) -> dict:
    """Per runtime and metric: the per-round values of each side, their medians, the ratio."""
    out = {}
    for rt in runtimes:
        out[rt] = {}
        for key, label, unit, get, target in METRICS:
            label = label.replace("{burst}", str(burst))
            per = {s: [] for s in sides}
            for rd in rounds:
                r = rd["results"].get(rt)
                if r is None:
                    continue
                v = get(r)
                if v is not None:
                    per[rd["side"]].append(v)
            if not any(per.values()):
                continue
            med = {s: statistics.median(per[s]) if per[s] else None for s in sides}
            a, b = med[sides[0]], med[sides[1]]
            ratio = b / a if a not in (None, 0) and b is not None else None
            met = None
            if target and b is not None:
                kind = target[0]
                if kind == "le" and ratio is not None:
                    met = ratio <= target[1]
                elif kind == "ge" and ratio is not None:
                    met = ratio >= target[1]
                elif kind == "abs_le":
                    met = b <= target[1]
                elif kind == "zero":
                    met = b == 0
            out[rt][key] = {"label": label, "unit": unit, "per_round": per, "median": med,
                            "ratio": ratio, "target": list(target) if target else None, "met": met}
    return out


def _fmt(v, unit=""):
    if v is None:
        return "–"
    if v == 0:
        return f"0{' ' + unit if unit else ''}"
    if unit == "KiB" and abs(v) >= 10240:
        return f"{v / 1024:.1f} MiB"
    if abs(v) >= 100:
        return f"{v:.0f}{' ' + unit if unit else ''}"
    if abs(v) >= 10:
        return f"{v:.1f}{' ' + unit if unit else ''}"
    return f"{v:.2f}{' ' + unit if unit else ''}"


def _target_str(t, source=True):
    if not t:
        return ""
    s = {"le": lambda: f"≤ {t[1]}×", "ge": lambda: f"≥ {t[1]}×", "abs_le": lambda: f"≤ {t[1]} KiB",
         "zero": lambda: "0"}[t[0]]()
    if source and t[0] != "zero" and len(t) > 2:
        s += f" (issue {t[2]})"
    return s


RT_NAMES = {"runc.v2": ("io.containerd.runc.v2", "containerd-shim-runc-v2"),
            "runc.v1": ("io.containerd.runc.v1", "containerd-shim-runc-v1"),
            "v1linux": ("io.containerd.runtime.v1.linux", "containerd-shim")}


def not_available(rounds: list[dict]) -> dict:
    """runtime -> {side: why}, for runtimes a side could not run (2.x ships no Go runc.v1)."""
    out: dict = {}
    for rd in rounds:
        for rt, r in rd["results"].items():
            if r.get("na"):
                out.setdefault(rt, {})[rd["side"]] = r["na"]
    return out


# Issue 14's target table, in its order: (metric key, the issue's wording).
HEADLINE = [
    ("pss_1", "shim PSS, 1 container"),
    ("pss_20", "total shim PSS, 20 containers"),
    ("cpu_life", "shim CPU per `ctr run --rm` lifecycle (start + daemon + delete)"),
    ("cpu_exec", "shim CPU per exec"),
    ("run_med", "`ctr run --rm` latency (median)"),
    ("burst_wall", "{burst} concurrent execs on one container, wall time"),
    ("idle_all", "idle CPU (sum of every idle window, per 10 s each)"),
]


def headline(summary: dict, where: str, na: dict | None = None, burst: int = 100) -> str:
    """Issue 14's table for runc.v2 (the runtime it names), then the µs-per-child figure."""
    rt = "runc.v2" if "runc.v2" in summary else next(iter(summary), None)
    if rt is None:
        return "No results.\n"
    rows = summary[rt]
    rtn, goname = RT_NAMES[rt]
    out = [f"## Issue 14 targets on {where}\n",
           f"{rtn}: shimgate vs Go `{goname}` of the same series; ratio = shimgate / Go "
           "(medians over rounds).\n"]
    if na and na.get(rt):
        out.append(f"Not measured: {'; '.join(f'{s}: {w}' for s, w in na[rt].items())}.\n")
    out += ["| metric | Go | shimgate | ratio | target | met |", "|---|---:|---:|---:|---|---|"]
    burst = str(burst)
    for key, label in HEADLINE + [("per_child", None)]:
        row = rows.get(key)
        if row is None:
            out.append(f"| {label.replace('{burst}', burst) if label else key} | – | – | – | | not measured |")
            continue
        label = (label or row["label"]).replace("{burst}", burst)
        u = row["unit"]
        met = {True: "yes", False: "**no**", None: ""}[row["met"]]
        ratio = f"{row['ratio']:.2f}×" if row["ratio"] is not None else "–"
        out.append(f"| {label} | {_fmt(row['median']['go'], u)} | {_fmt(row['median']['shimgate'], u)} "
                   f"| {ratio} | {_target_str(row['target'])} | {met} |")
    out.append("")
    return "\n".join(out)


def table(summary: dict, sizes: dict, rounds_per_side: dict, na: dict | None = None) -> str:
    lines = []
    na = na or {}
    n = min(rounds_per_side.values()) if rounds_per_side else 0
    lines.append(f"Medians over {n} alternating rounds per side (Go, shimgate, Go, shimgate, …); "
                 "ratio = shimgate / Go. Targets are issue 14's unless marked.\n")
    for rt, rows in summary.items():
        rtn, goname = RT_NAMES[rt]
        gone = na.get(rt, {})
        if gone.get("go"):
            lines.append(f"### {rtn} (shimgate alone: {gone['go']})\n")
        else:
            lines.append(f"### {rtn} (shimgate vs Go `{goname}`)\n")
        lines.append("| metric | Go | shimgate | ratio | target | met |")
        lines.append("|---|---:|---:|---:|---|---|")
        for key, row in rows.items():
            u = row["unit"]
            met = {True: "yes", False: "**no**", None: ""}[row["met"]]
            ratio = f"{row['ratio']:.2f}×" if row["ratio"] is not None else "–"
            go = "n/a" if gone.get("go") else _fmt(row['median']['go'], u)
            lines.append(f"| {row['label']} | {go} | {_fmt(row['median']['shimgate'], u)} "
                         f"| {ratio} | {_target_str(row['target'])} | {met} |")
        lines.append("")
    if sizes:
        lines.append("### Binaries\n")
        lines.append("| binary | size |")
        lines.append("|---|---:|")
        for k, v in sizes.items():
            lines.append(f"| `{k}` | {v / 1024 / 1024:.2f} MiB ({v} bytes) |")
        lines.append("")
    return "\n".join(lines)


def svg(summary: dict) -> str:
    """Horizontal bars: shimgate/Go per targeted metric on a log axis, the target as a tick.
    Absolute targets are drawn as value/target (≤ 150 KiB → 1); `idle 0` rows as the ratio to
    Go with the target at the left edge (met only when the value is exactly 0)."""
    rows = []
    for rt, ms in summary.items():
        for key, row in ms.items():
            t = row["target"]
            if not t:
                continue
            b = row["median"]["shimgate"]
            if t[0] in ("le", "ge"):
                val, tgt, note = row["ratio"], t[1], _target_str(t)
            elif t[0] == "abs_le":
                val, tgt, note = (b / t[1] if b is not None else None), 1.0, f"value/{t[1]} KiB ≤ 1"
            else:
                g = row["median"]["go"]
                val, tgt = row["ratio"], None
                note = f"{_fmt(b, row['unit'])} vs Go {_fmt(g, row['unit'])}; target 0"
            rows.append((f"{rt}: {row['label'].replace('`', '').strip()}", val, tgt, note, row["met"], t[0]))
    lo, hi = 0.01, 10.0
    W, left, right, top, rh = 1250, 430, 300, 50, 22
    H = top + rh * len(rows) + 50
    pw = W - left - right

    def x(v):
        v = min(max(v, lo), hi)
        return left + pw * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
         'shimgate / Go shim, per metric (log scale); black tick = target; green = met, red = missed</text>']
    for d in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 3, 5, 10):
        o.append(f'<line x1="{x(d):.1f}" y1="{top - 6}" x2="{x(d):.1f}" y2="{H - 40}" stroke="#ddd"/>')
        o.append(f'<text x="{x(d):.1f}" y="{H - 25}" text-anchor="middle" fill="#555">{d:g}×</text>')
    o.append(f'<line x1="{x(1):.1f}" y1="{top - 6}" x2="{x(1):.1f}" y2="{H - 40}" stroke="#888" stroke-dasharray="4 3"/>')
    for i, (label, val, tgt, note, met, kind) in enumerate(rows):
        y = top + i * rh
        o.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{escape(label[:70])}</text>')
        colour = {True: "#3a9d3a", False: "#d33", None: "#999"}[met]
        if val is not None and val > 0:
            x0 = x(1)
            x1 = x(val)
            o.append(f'<rect x="{min(x0, x1):.1f}" y="{y + 4}" width="{max(abs(x1 - x0), 1.5):.1f}" height="{rh - 8}" fill="{colour}"/>')
            o.append(f'<text x="{W - right + 6}" y="{y + 14}" fill="{colour}">{val:.3g}× ({escape(note)})</text>')
        else:
            o.append(f'<circle cx="{x(lo):.1f}" cy="{y + rh / 2}" r="4" fill="{colour}"/>')
            o.append(f'<text x="{W - right + 6}" y="{y + 14}" fill="{colour}">{"0×" if val == 0 else "–"} ({escape(note)})</text>')
        if tgt is not None:
            o.append(f'<line x1="{x(tgt):.1f}" y1="{y + 1}" x2="{x(tgt):.1f}" y2="{y + rh - 1}" stroke="black" stroke-width="2.5"/>')
        else:
            o.append(f'<line x1="{x(lo):.1f}" y1="{y + 1}" x2="{x(lo):.1f}" y2="{y + rh - 1}" stroke="black" stroke-width="2.5"/>')
    o.append("</svg>")
    return "\n".join(o)


def scaling_table(summary: dict) -> str:
    rows = summary.get("runc.v2")
    if not rows:
        return ""
    pts = [("1", "pss_1", "idle_1"), ("20 separate", "pss_20", "idle_20"), ("20 grouped", "pss_20g", "idle_20g"),
           ("100 separate", "pss_100", "idle_100"), ("100 grouped", "pss_100g", "idle_100g")]
    out = ["### Scaling (io.containerd.runc.v2): total shim PSS and idle CPU per 10 s\n",
           "| containers | Go PSS | shimgate PSS | ratio | Go idle CPU | shimgate idle CPU |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, pk, ik in pts:
        if pk not in rows:
            continue
        p, i = rows[pk], rows.get(ik)
        ratio = f"{p['ratio']:.2f}×" if p["ratio"] is not None else "–"
        out.append(f"| {name} | {_fmt(p['median']['go'], 'KiB')} | {_fmt(p['median']['shimgate'], 'KiB')} | {ratio} "
                   f"| {_fmt(i['median']['go'], 'ms') if i else '–'} | {_fmt(i['median']['shimgate'], 'ms') if i else '–'} |")
    return "\n".join(out) + "\n"


def notes(rounds: list[dict], calibration: dict) -> str:
    """Method figures: invocations per lifecycle/exec, the validation windows, the wrapper."""
    out = ["### Method checks\n"]
    w = calibration.get("wrapper")
    if w:
        out.append(f"- Wrapper: {w['overhead_us']:.0f} µs CPU per wrapped invocation in all (static no-op "
                   f"fork+exec {w['direct']:.0f} µs direct, {w['wrapped']:.0f} µs wrapped); when the wrapper "
                   f"moves to another cgroup, {w['split_caller']:.0f} µs stay with the caller (fork included) "
                   f"and {w['split_target']:.0f} µs land in the target (exec of the no-op included).")
    seen = set()
    for rd in rounds:
        for rt, r in rd["results"].items():
            key = (rd["side"], rt)
            if key in seen:
                continue
            seen.add(key)
            if r.get("na"):
                out.append(f"- {rd['side']} {rt}: not measured ({r['na']})")
                continue
            inv = ", ".join(f"{k} {v:g}" for k, v in sorted(r.get("invocations_per_lifecycle", {}).items()))
            out.append(f"- {rd['side']} {rt}: processes per `run --rm` lifecycle: {inv}")
            inv = ", ".join(f"{k} {v:g}" for k, v in sorted(r.get("invocations_per_exec", {}).items()))
            out.append(f"- {rd['side']} {rt}: processes per `task exec`: {inv}")
            for b in r.get("burst", [])[:1]:
                inv = ", ".join(f"{k} {v / b['execs']:g}" for k, v in sorted(b["invocations"].items()))
                out.append(f"- {rd['side']} {rt}: exec burst of {b['execs']} ({b['fork_ms']:.0f} ms to fork the "
                           f"waiting clients before the gate opened): processes per exec: {inv}")
    for rt in sorted({rt for rd in rounds for rt in rd["results"]}):
        for side in ("go", "shimgate"):
            met, exe, per_child = [], [], []
            for rd in rounds:
                v = rd["results"].get(rt, {}).get("validation") if rd["side"] == side else None
                if v:
                    met.append(v["metrics"]["diff_pct"])
                    exe.append(v["exec"]["diff_pct"])
                    if v["exec"]["diff_per_child_us"] is not None:
                        per_child.append(v["exec"]["diff_per_child_us"])
            if met:
                out.append(f"- Validation {side} {rt} (20 long-lived shims): cgroup vs sum of threads' "
                           f"se.sum_exec_runtime over 20 `task metrics`: {', '.join(f'{x:+.2f}%' for x in met)}; "
                           f"over 20 `task exec`: {', '.join(f'{x:+.1f}%' for x in exe)} = "
                           f"{statistics.median(per_child):.0f} µs per child process (the forked child until "
                           "it has exec'd the runc wrapper, which the threads' counters do not include)")
    return "\n".join(out) + "\n"
