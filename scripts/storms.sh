#!/usr/bin/env bash
# Full-size storms (issue 4): hundreds of runs with random exit codes and signal deaths, 300
# concurrent execs killed with their container, every output size 2^n-1..2^n+1 for n <= 24 on
# stdout, stderr and a terminal, 128 MiB of output, 32 MiB of stdin, for every personality.
# CI runs the same tests at reduced sizes. Needs root. Prints the seed of each random storm;
# replay one with SHIMGATE_STORM_SEED=<seed>.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHIMGATE_STORM_FULL=1 cargo test --release --test storms -- --test-threads=1 --nocapture "$@" 2>&1 |
  grep -E '^test |storm seed|mismatches|duplicates|wrong|test result|panicked' || true
