#!/usr/bin/env bash
# Demonstrate shimgate on this machine: install what is missing (Debian), build the release
# binary, start a private containerd whose shims are shimgate, run one container through each
# personality, and print: personality, shim pid, shim memory, output, exit code.
# Everything lives under a temporary directory and is removed at the end.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "demo: must run as root (containerd and runc need it)" >&2; exit 2; }

# shellcheck source=scripts/lib/deps.sh
. "$here/scripts/lib/deps.sh"
need_pkg containerd command -v containerd
need_pkg containerd command -v ctr
need_pkg runc command -v runc
need_pkg busybox-static static_busybox
need_build_pkgs
install_needed >/dev/null

cd "$here"
use_cargo || exit 2
echo "demo: building release binary"
(cd "$here" && cargo build --release -q)
bin="$here/target/release/shimgate"

work=$(mktemp -d /tmp/shimgate-demo.XXXXXX)
ns="demo$$"
addr="$work/containerd.sock"
ctd_pid=""
cleanup() {
  set +e
  if [ -n "$ctd_pid" ]; then
    for id in $(ctr -a "$addr" -n "$ns" task ls -q 2>/dev/null); do
      ctr -a "$addr" -n "$ns" task kill -s SIGKILL "$id" >/dev/null 2>&1
      ctr -a "$addr" -n "$ns" task rm -f "$id" >/dev/null 2>&1
    done
    for id in $(ctr -a "$addr" -n "$ns" c ls -q 2>/dev/null); do
      ctr -a "$addr" -n "$ns" c rm "$id" >/dev/null 2>&1
    done
    kill "$ctd_pid" 2>/dev/null; wait "$ctd_pid" 2>/dev/null
  fi
  rmdir "/run/containerd/runc/$ns" 2>/dev/null
  for d in /sys/fs/cgroup/*/"$ns" /sys/fs/cgroup/"$ns"; do rmdir "$d" 2>/dev/null; done
  grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bin" "$work/rootfs/bin" "$work/rootfs/proc" "$work/rootfs/dev" "$work/rootfs/sys" "$work/fifo"
for n in containerd-shim containerd-shim-runc-v1 containerd-shim-runc-v2; do ln -s "$bin" "$work/bin/$n"; done
cp /bin/busybox "$work/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$work/rootfs/bin/$a"; done
cat > "$work/containerd.toml" <<EOF
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$addr"
[ttrpc]
  address = "$addr.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/opt"
[plugins."io.containerd.runtime.v1.linux"]
  shim = "$work/bin/containerd-shim"
  runtime = "runc"
EOF
PATH="$work/bin:$PATH" containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
ctd_pid=$!
for _ in $(seq 100); do ctr -a "$addr" version >/dev/null 2>&1 && break; sleep 0.1; done
echo "demo: private containerd $(containerd --version | awk '{print $3}') (pid $ctd_pid) at $addr"
echo

shim_of() { # shim process serving our containerd (our socket address in its argv)
  for p in /proc/[0-9]*; do
    args=$(tr '\0' ' ' 2>/dev/null < "$p/cmdline") || continue
    case "$args" in *"-address $addr "*) ;; *) continue ;; esac
    case "$args" in *" start "|*" delete ") continue ;; esac
    [ "$(readlink "$p/exe" 2>/dev/null)" = "$(readlink -f "$bin")" ] && { basename "$p"; return; }
  done
}

printf '%-32s %-9s %-10s %-28s %s\n' PERSONALITY "SHIM PID" "SHIM PSS" OUTPUT "EXIT CODE"
failed=()
for rt in io.containerd.runtime.v1.linux io.containerd.runc.v1 io.containerd.runc.v2; do
  id="demo-${rt##*.}-$$"
  out="$work/out-$id"
  ctr -a "$addr" -n "$ns" run --rm --runtime "$rt" --fifo-dir "$work/fifo" --env PATH=/bin \
    --rootfs "$work/rootfs" "$id" sh -c "echo hello from shimgate; sleep 1; exit 3" >"$out" 2>&1 &
  cpid=$!
  pid=""; pss=""
  for _ in $(seq 40); do pid=$(shim_of); [ -n "$pid" ] && break; sleep 0.05; done
  [ -n "$pid" ] && pss="$(awk '/^Pss:/{print $2" KiB"}' /proc/$pid/smaps_rollup 2>/dev/null)"
  set +e; wait "$cpid"; rc=$?; set -e
  first=$(head -n1 "$out" | cut -c1-28)
  printf '%-32s %-9s %-10s %-28s %s\n' "$rt" "${pid:--}" "${pss:--}" "${first:--}" "$rc"
  # The container says hello and exits 3: anything else means this personality did not work.
  if [ "$rc" != 3 ] || [ "$(head -n1 "$out")" != "hello from shimgate" ]; then
    failed+=("$rt")
    sed 's/^/    /' "$out"
  fi
done
echo
if [ ${#failed[@]} -gt 0 ]; then
  # The log goes with the temporary directory: show its end before the clean-up removes it.
  echo "demo: FAILED for ${failed[*]}; the end of containerd's log:" >&2
  tail -n 20 "$work/containerd.log" | sed 's/^/    /' >&2
  exit 1
fi
echo "demo: done"
