#!/usr/bin/env bash
# shimgate beside the Go shims, one run, alternating rounds, each side through its own private
# containerd. See bench/README.md for what is measured and how.
#   sudo bench/run.sh [--series 1.6|1.7|2.2|2.3] [--rounds N] [--out DIR] [--quick]
#                     [--runtimes runc.v2,runc.v1,v1linux] [--shim PATH] [-n SAMPLES]
#                     [--idle SECONDS] [--no-scale] [--burst K] [--burst-reps N] [--no-build]
# Series other than 1.6 come from $SHIMGATE_PEERS (default <repo>/../shared/peers).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
[ "$(id -u)" = 0 ] || { echo "bench: must run as root (containerd, runc and cgroups need it)" >&2; exit 2; }

build=1
args=()
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    *) args+=("$a") ;;
  esac
  case "$a" in --shim|--shim=*) build=0 ;; esac
done

need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v python3 >/dev/null || need+=(python3)
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -n "$(find /usr/lib -name libc.a -print -quit 2>/dev/null)" ] || need+=(libc6-dev)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
if [ "$build" = 1 ]; then
  echo "bench: cargo build --release" >&2
  (cd "$repo" && cargo build --release -q)
fi
cd "$here"
exec python3 -m shimbench ${args[@]+"${args[@]}"}
