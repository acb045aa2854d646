#!/usr/bin/env bash
# The test command (README's second command; .ci/run runs exactly this): as root on Debian 12,
# install what the tests need if it is missing, build, and run every test binary, then print a
# summary per test binary.
#
#   sudo scripts/test.sh                 # install what is missing, build, cargo test
#   sudo scripts/test.sh --deps-only     # only install what is missing
#   sudo scripts/test.sh --no-deps ...   # install nothing (a developer machine)
#   sudo scripts/test.sh --test docker   # further arguments go to `cargo test`
#
# Installs (Debian packages, only those missing, starting no service): containerd (with ctr),
# runc, busybox-static, criu, docker.io (tests/docker.rs), crun, qemu-system-x86 and
# linux-image-amd64 (the cgroup v2 guest, with systemd and dbus inside), cpio and xz-utils (its
# initramfs), python3-minimal (tests' helpers), gcc and libc6-dev (cargo links with cc),
# ca-certificates (cargo fetches crates over https). Rust itself (1.85 or newer) comes from
# rustup: Debian 12's rustc is too old.
#
# `cargo fmt --check` and `cargo clippy -D warnings` run after the build, before the tests.
# Every cargo command names `--workspace` (`--all` for fmt): the engine's and the protocol
# crate's own unit tests and lints live in crates/, which a plain `cargo test` at the root
# would skip.
# `cargo test --no-fail-fast`: one failing test binary does not hide the others; the summary
# names each binary with its counts and the failing ones. The log of the whole run is kept in
# target/test-logs/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

deps=1
only_deps=
while [ $# -gt 0 ]; do
  case "$1" in
    --deps-only) only_deps=1 ;;
    --no-deps) deps= ;;
    -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
  shift
done

[ "$(id -u)" = 0 ] || {
  echo "scripts/test.sh: run as root (the integration tests start containerd, runc and dockerd): sudo $0 $*" >&2
  exit 2
}

# shellcheck source=scripts/lib/deps.sh
. "$here/scripts/lib/deps.sh"
if [ -n "$deps" ]; then
  need_pkg containerd command -v containerd
  need_pkg containerd command -v ctr
  need_pkg runc command -v runc
  need_pkg busybox-static static_busybox
  need_pkg criu command -v criu
  need_pkg docker.io test -x /usr/sbin/dockerd -a -x /usr/bin/docker
  need_pkg crun command -v crun
  need_pkg qemu-system-x86 command -v qemu-system-x86_64
  need_pkg linux-image-amd64 have_kernel_image
  need_pkg cpio command -v cpio
  # tests/cgroup_v2.rs boots the guest with systemd as PID 1 (the systemd cgroup driver is
  # tested there), which needs its D-Bus daemon.
  need_pkg systemd test -x /lib/systemd/systemd
  need_pkg dbus command -v dbus-daemon
  need_pkg xz-utils command -v xz
  need_build_pkgs
  need_pkg python3-minimal test -x /usr/bin/python3
  install_needed
  echo "scripts/test.sh: every package the tests need is installed"
fi
[ -z "$only_deps" ] || exit 0

use_cargo || exit 2

# Build first: a compile error is reported as such, not as failing tests. `--features fuzz`:
# tests/fuzz_corpus.rs runs the fuzz target bodies, which only that feature compiles in.
cargo test --workspace --features fuzz --no-run "$@"

# The code rules the tools keep: formatted, and clippy-clean in every target, both without
# features (the binary operators run) and with all of them (fuzz bodies, test faults).
# A rustup "minimal" profile lacks both tools: add them if rustup can; if it cannot (no
# network to rust-lang.org), say loudly that the checks were skipped and run the tests anyway.
have_lint_tools() { cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; }
if have_lint_tools || { rustup component add rustfmt clippy >/dev/null 2>&1 && have_lint_tools; }; then
  cargo fmt --all --check
  cargo clippy --workspace --all-targets -- -D warnings
  cargo clippy --workspace --all-targets --all-features -- -D warnings
else
  echo "scripts/test.sh: SKIPPED cargo fmt --check and cargo clippy: rustfmt/clippy are not installed and rustup could not add them (rustup component add rustfmt clippy)" >&2
fi

mkdir -p target/test-logs
log=target/test-logs/cargo-test-$(date +%Y%m%d-%H%M%S).log
set +e
cargo test --workspace --features fuzz --no-fail-fast "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# Per test binary: its counts, from libtest's "test result:" line after each "Running" line.
# A binary that printed no result line crashed (or was killed) before it finished. Every
# member's unit tests run from a src/lib.rs, so those are named with their crate as well
# ("unittests src/lib.rs (target/debug/deps/shimgate_engine-<hash>)" -> "src/lib.rs shimgate_engine").
awk -v rc="$rc" '
  function flush() {
    if (name == "") return
    if (result == "") { printf "  %-44s %s\n", name, "NO RESULT (crashed or killed)"; crashed++ }
    else printf "  %-44s %s\n", name, result
    name = ""; result = ""
  }
  /^ *Running / {
    flush()
    if ($2 == "unittests") { crate = $4; sub(/.*\//, "", crate); sub(/-[0-9a-f]*\)$/, "", crate); name = $3 " " crate }
    else name = $2
    next
  }
  /^ *Doc-tests / { flush(); name = "doc-tests " $2; next }
  /^test result: / {
    ok = ($3 == "ok.") ? "ok    " : "FAILED"
    p = $4; f = $6; i = $8; secs = $NF
    passed += p; failed += f; ignored += i
    result = sprintf("%s %5d passed %4d failed %4d ignored  %s", ok, p, f, i, secs)
    next
  }
  END {
    flush()
    print ""
    if (crashed) failed += crashed
    printf "summary: %d passed, %d failed, %d skipped\n", passed, failed, ignored
  }
' "$log" | { echo; echo "test binaries (log: $log):"; cat; }
if [ "$rc" -ne 0 ]; then
  grep -A50 '^error: [0-9]* targets\? failed' "$log" | sed -n '1,50p' || true
fi
exit "$rc"
