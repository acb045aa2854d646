#!/usr/bin/env bash
# Full-size leak soak (issue 5): 500 `ctr run --rm` and 3000 execs on one container per
# personality, checking that sockets, mounts, cgroups, runc state and zombies return to
# baseline and that the long-lived shim's fd count and RSS do not grow. Needs root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHIMGATE_SOAK_FULL=1 cargo test --release --test soak -- --test-threads=1 --nocapture "$@" 2>&1 |
  grep -E '^test |runs, |test result|panicked' || true
