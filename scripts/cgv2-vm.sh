#!/usr/bin/env bash
# Boot a throwaway virtual machine with a pure cgroup v2 hierarchy over this machine's own
# filesystem, run one command in it, and exit with that command's status.
#
#   scripts/cgv2-vm.sh [--timeout SECS] [--results DIR] [--log FILE] [--mem MIB] [--cpus N]
#                      [--systemd] [--env NAME=VALUE]... -- COMMAND [ARG...]
#
# The guest is Debian's kernel (/boot/vmlinuz-*) under QEMU's software emulation (TCG: the
# /dev/kvm of these machines runs only kernels built for it), booted with
# `cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1`. Its root is the host's `/`, shared
# read-only over virtio-9p with a tmpfs overlay above it, so the guest sees the host's binaries
# and build trees but writes nothing back; `/run`, `/tmp` and `/var/lib/containerd` are fresh
# tmpfs. One directory is shared read-write: RESULTS (default: a new temporary directory),
# mounted in the guest at the same path, where the guest writes COMMAND's exit status.
#
# With --systemd, Debian's systemd is the guest's PID 1 (as on a real host; the systemd cgroup
# driver needs it) and COMMAND runs as the one service of the target it boots into.
#
# COMMAND runs as root in the guest, in the current directory, with PATH, HOME and the
# `--env` variables; its output goes to the guest console, which is LOG (default
# RESULTS/console.log) on the host. Exit status: COMMAND's; 124 when the guest did not finish
# within --timeout (QEMU is killed); 125 when the VM could not be set up or the guest ended
# without a status (kernel panic, init failure: see LOG).
#
# Debian's initrd has no 9p, so the script builds its own small initramfs: a static busybox
# and the virtio-pci, 9p and overlay modules of the chosen kernel; its /init mounts the root,
# then hands over to this same script (`--guest`, from the shared root) as the guest's PID 1.
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")

# ---------------------------------------------------------------------------------------------
# Guest side. Without --systemd this script is the guest's PID 1 (`--guest`): it mounts what an
# init would and runs the command. With --systemd, Debian's systemd is PID 1 and runs this script
# as the one service of its boot target (`--guest-service`); systemd mounted the API filesystems.
# ---------------------------------------------------------------------------------------------
guest_mounts() { # the API filesystems, as an init would mount them
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
  mkdir -p /dev/pts /dev/shm /dev/mqueue
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
  ln -sf pts/ptmx /dev/ptmx 2>/dev/null || true
  # What udev/systemd create on a real host (runtimes read `--resources -` as /dev/stdin).
  ln -sfn /proc/self/fd /dev/fd
  ln -sf /proc/self/fd/0 /dev/stdin
  ln -sf /proc/self/fd/1 /dev/stdout
  ln -sf /proc/self/fd/2 /dev/stderr
  mount -t tmpfs -o mode=1777 tmpfs /dev/shm
  mount -t mqueue mqueue /dev/mqueue 2>/dev/null || true
  # The unified hierarchy alone, with every controller offered to the first level (what
  # systemd does on such hosts; runc enables them further down itself).
  mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
  local ctrls= c
  for c in $(cat /sys/fs/cgroup/cgroup.controllers); do ctrls="$ctrls +$c"; done
  echo "$ctrls" > /sys/fs/cgroup/cgroup.subtree_control
  mount -t tmpfs -o mode=0755 tmpfs /run
  mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
  mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
  ip link set lo up 2>/dev/null || busybox ip link set lo up 2>/dev/null || true
  hostname cgv2-guest 2>/dev/null || true
}

guest_run() { # guest_run RESULTS: private tmpfs, the results share, the command; then power off
  local results=$1 rc=0 up
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  read -r up _ < /proc/uptime
  echo "cgv2-vm: guest up ${up}s after boot; running the command"
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  mkdir -p /var/lib/containerd
  mount -t tmpfs -o mode=0711 tmpfs /var/lib/containerd
  mkdir -p "$results"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,access=any results "$results"
  ulimit -n 1048576 2>/dev/null || true
  # shellcheck disable=SC1091
  ( . "$results/command.sh" ) </dev/null || rc=$?
  echo "cgv2-vm: guest command exited with status $rc"
  echo "$rc" > "$results/status.tmp"
  mv "$results/status.tmp" "$results/status"
  sync
  umount "$results" 2>/dev/null || true
  echo o > /proc/sysrq-trigger
  # Wait for the power-off without starting a program (the root may already be going away).
  read -r -t 60 _ || true
}

case "${1:-}" in
  --guest)
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    guest_mounts
    guest_run "$2"
    exit 0
    ;;
  --guest-service)
    guest_run "$2"
    exit 0
    ;;
esac

# ---------------------------------------------------------------------------------------------
# Host side.
# ---------------------------------------------------------------------------------------------
timeout_s=1500
results=
log=
mem=3072
cpus=2
systemd=
envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout_s=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --log) log=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --systemd) systemd=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cgv2-vm: unknown option $1 (see --help)" >&2; exit 125 ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "cgv2-vm: no command (see --help)" >&2
  exit 125
fi

fail() { echo "cgv2-vm: $*" >&2; exit 125; }
[ "$(id -u)" = 0 ] || fail "needs root (the guest shares / with root's file ownership)"
qemu=$(command -v qemu-system-x86_64) || fail "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
busybox=/bin/busybox
case " $("$busybox" --list 2>/dev/null | tr '\n' ' ') " in *" switch_root "*) ;; *) fail "$busybox is not a static busybox (apt-get install busybox-static)" ;; esac
kernel=${CGV2_KERNEL:-$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n1)}
[ -n "$kernel" ] && [ -r "$kernel" ] || fail "no /boot/vmlinuz-*-amd64 (apt-get install linux-image-amd64)"
kver=${kernel##*/vmlinuz-}
moddir=/lib/modules/$kver
[ -r "$moddir/modules.dep" ] || fail "no $moddir/modules.dep for $kernel"

if [ -z "$results" ]; then
  results=$(mktemp -d /tmp/cgv2-vm.XXXXXX)
fi
mkdir -p "$results"
results=$(readlink -f "$results")
rm -f "$results/status" "$results/status.tmp"
log=${log:-$results/console.log}
: > "$log"

# The command, as the guest's PID 1 will source it.
{
  echo "cd $(printf '%q' "$PWD")"
  echo "export HOME=/root TERM=dumb"
  for e in "${envs[@]}"; do echo "export $(printf '%q' "$e")"; done
  printf '%q ' "$@"
  echo
} > "$results/command.sh"

# The initramfs: busybox, the modules for virtio-pci, 9p and overlay (with their dependencies,
# in load order), and an /init that mounts the shared root and switches to it.
work=$(mktemp -d /tmp/cgv2-initramfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/root/mods" "$work/root/proc" "$work/root/sys" "$work/root/dev" \
  "$work/root/lower" "$work/root/upper" "$work/root/newroot"
cp "$busybox" "$work/root/bin/busybox"
order=()
declare -A seen=()
add_module() { # add_module NAME: the module and what it needs, dependencies first
  local name=$1 line path dep
  line=$(grep -E "(^|/)${name}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -n1) || true
  [ -n "$line" ] || return 0 # built into this kernel
  path=${line%%:*}
  [ -z "${seen[$path]:-}" ] || return 0
  seen[$path]=1
  # modules.dep lists every (transitive) dependency, last loaded first.
  local deps=(${line#*:})
  local i
  for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
    dep=${deps[$i]}
    [ -n "${seen[$dep]:-}" ] && continue
    seen[$dep]=1
    order+=("$dep")
  done
  order+=("$path")
}
for m in virtio_pci 9pnet_virtio 9p overlay; do add_module "$m"; done
n=0
for p in "${order[@]}"; do
  n=$((n + 1))
  f=$(printf '%02d-%s' "$n" "${p##*/}")
  case "$p" in
    *.ko) cp "$moddir/$p" "$work/root/mods/$f" ;;
    *.ko.xz) xz -dc "$moddir/$p" > "$work/root/mods/${f%.xz}" ;;
    *.ko.zst) zstd -qdc "$moddir/$p" > "$work/root/mods/${f%.zst}" ;;
    *.ko.gz) gzip -dc "$moddir/$p" > "$work/root/mods/${f%.gz}" ;;
    *) fail "unknown module format $p" ;;
  esac
done
cat > "$work/root/init" <<EOF
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in /mods/*.ko; do /bin/busybox insmod "\$m" || echo "cgv2-vm: insmod \$m failed"; done
/bin/busybox mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /lower \\
  || { echo "cgv2-vm: cannot mount the shared root"; /bin/busybox poweroff -f; }
/bin/busybox mount -t tmpfs -o mode=0755 tmpfs /upper
/bin/busybox mkdir -p /upper/data /upper/work
/bin/busybox mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot \\
  || { echo "cgv2-vm: cannot mount the overlay"; /bin/busybox poweroff -f; }
/bin/busybox umount /proc
/bin/busybox umount /dev
EOF
if [ -z "$systemd" ]; then
  cat >> "$work/root/init" <<EOF
exec /bin/busybox switch_root /newroot /bin/bash $(printf '%q' "$self") --guest $(printf '%q' "$results")
EOF
  append=
else
  # systemd boots straight into a target of our own: basic.target (sockets, dbus, udev) and
  # the command's service, nothing of the host's enabled units. The files go into the
  # overlay's tmpfs, never to the host: the unit, the target, masks, an empty fstab (the
  # host's names disks the guest does not have), and no container marker (/.dockerenv: a
  # systemd that believes it runs in a container ignores the kernel command line).
  # Masked: tmpfiles' boot setup (its recursive ownership fixes copy whole host trees up into
  # the overlay: minutes), timers and the host's docker socket.
  masked="systemd-tmpfiles-setup.service timers.target docker.socket"
  [ -x /lib/systemd/systemd ] || fail "--systemd: /lib/systemd/systemd missing (apt-get install systemd)"
  units="$work/root/units"
  mkdir -p "$units"
  cat > "$units/cgv2.target" <<EOF
[Unit]
Description=cgroup v2 guest command
Requires=basic.target cgv2-guest.service
After=basic.target cgv2-guest.service
AllowIsolate=yes
EOF
  cat > "$units/cgv2-guest.service" <<EOF
[Unit]
Description=cgroup v2 guest command
Requires=basic.target dbus.socket
After=basic.target dbus.socket
[Service]
Type=oneshot
ExecStart=/bin/bash "$self" --guest-service "$results"
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
TimeoutStartSec=infinity
LimitNOFILE=1048576
EOF
  cat >> "$work/root/init" <<EOF
/bin/busybox mkdir -p /newroot/etc/systemd/system
/bin/busybox cp /units/cgv2.target /units/cgv2-guest.service /newroot/etc/systemd/system/
/bin/busybox rm -f /newroot/etc/fstab /newroot/.dockerenv /newroot/run/.containerenv
/bin/busybox touch /newroot/etc/fstab
for u in $masked; do /bin/busybox ln -sf /dev/null /newroot/etc/systemd/system/\$u; done
exec /bin/busybox switch_root /newroot /lib/systemd/systemd --unit=cgv2.target --show-status=error
EOF
  append="systemd.unit=cgv2.target systemd.show_status=error"
fi
chmod 0755 "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.gz"

start=$(date +%s)
rc=0
timeout --kill-after=10 "$timeout_s" "$qemu" \
  -machine q35 -accel tcg,thread=multi -cpu max -smp "$cpus" -m "$mem" \
  -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$log" \
  -kernel "$kernel" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=4 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 $append" \
  -fsdev "local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap" \
  -device "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot" \
  -fsdev "local,id=results,path=$results,security_model=passthrough,multidevs=remap" \
  -device "virtio-9p-pci,fsdev=results,mount_tag=results" \
  </dev/null || rc=$?
elapsed=$(($(date +%s) - start))
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "cgv2-vm: guest did not finish within ${timeout_s}s (killed); console: $log" >&2
  exit 124
fi
if [ ! -s "$results/status" ]; then
  echo "cgv2-vm: guest ended without a status after ${elapsed}s (qemu status $rc); console: $log" >&2
  exit 125
fi
status=$(cat "$results/status")
echo "cgv2-vm: guest command status $status after ${elapsed}s; console: $log" >&2
exit "$status"
