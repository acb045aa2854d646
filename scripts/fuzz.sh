#!/usr/bin/env bash
# Run every fuzz target (or the ones named) for a set time each and report executions and
# findings.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, all targets)
#
# Uses cargo-fuzz (libFuzzer) on the stable toolchain: RUSTC_BOOTSTRAP=1 unlocks the -Z flags
# cargo-fuzz passes (coverage instrumentation), so no nightly is needed. Sanitizer: none by
# default, since the fuzzed code is safe Rust and ASan would only slow it down; set
# FUZZ_SANITIZER=address to use one anyway.
#
# Each target starts from its seeds (fuzz/seeds/<target>, kept in git) plus what earlier runs
# found (fuzz/corpus/<target>, not kept). A crash is saved under fuzz/artifacts/<target>/;
# logs and the summary go to fuzz/runs/<time>/. Exit status: 0 when no target found anything,
# 1 when one did, 2 when the fuzzers could not be built.
set -uo pipefail

cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-60}
shift || true
all=(frames connection requests goflags stdin stdio identifiers)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
sanitizer=${FUZZ_SANITIZER:-none}

if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]   targets: ${all[*]}" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1

echo "building fuzz targets (sanitizer: $sanitizer)..."
if ! (cd fuzz && cargo fuzz build -s "$sanitizer"); then
    echo "fuzz build failed" >&2
    exit 2
fi

run_dir=fuzz/runs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$run_dir"
summary=$run_dir/summary.txt
printf '%-12s %8s %14s %10s %8s %8s  %s\n' target seconds executions exec/s corpus new findings |
    tee "$summary"
# A libFuzzer final statistic from the log, or "?".
stat() { grep -o "^stat::$1: *[0-9]*" "$log" | tail -1 | grep -o '[0-9]*$' || echo '?'; }
found=0
for t in "${targets[@]}"; do
    if [ ! -d "fuzz/seeds/$t" ]; then
        echo "unknown target $t (targets: ${all[*]})" >&2
        found=1
        continue
    fi
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    log=$run_dir/$t.log
    start=$(date +%s)
    # The first corpus directory receives new inputs; the seeds are read only. nice: the
    # machine is shared, and fuzzing is background work.
    (cd fuzz && nice -n 10 cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/") >"$log" 2>&1
    rc=$?
    # The fuzzing time libFuzzer reports; wall time (including a rebuild) if it has none.
    took=$(grep -o '^Done [0-9]* runs in [0-9]* second' "$log" | grep -o '[0-9]* second' |
        grep -o '[0-9]*') || took=$(($(date +%s) - start))
    execs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    new=$(stat new_units_added)
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    findings=$((after - before))
    note=$findings
    if [ "$rc" -ne 0 ] || [ "$findings" -gt 0 ]; then
        found=1
        note="$findings (exit $rc; see $log and fuzz/artifacts/$t/)"
    fi
    printf '%-12s %8s %14s %10s %8s %8s  %s\n' "$t" "$took" "$execs" "$rate" "$corpus" "$new" "$note" |
        tee -a "$summary"
done
echo "logs: $root/$run_dir"
if [ "$found" -ne 0 ]; then
    echo "FINDINGS: reproduce with (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> artifacts/<target>/<file>)"
    echo "then fix, and add the input as fuzz/seeds/<target>/regress-<what>"
fi
exit "$found"
