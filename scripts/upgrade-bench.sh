#!/bin/sh
# Live-upgrade hand-over time of a release build: a runc.v2 group shim with 1 and with 20
# containers upgraded to the installed binary (itself) several times; prints the medians.
set -eu
cd "$(dirname "$0")/.."
exec cargo test --release --test upgrade -- --ignored --nocapture --test-threads 1 handover_duration
