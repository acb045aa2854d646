# Sourced by scripts/test.sh and scripts/demo.sh: install Debian packages that are missing,
# without starting any service. Needs root and apt (Debian 12 or a derivative).
#
#   need_pkg PACKAGE TEST...   # queue PACKAGE unless the command TEST... succeeds
#   install_needed             # apt-get update + install of everything queued (if any)

SHIMGATE_NEED=()

need_pkg() {
  local pkg=$1
  shift
  if ! "$@" >/dev/null 2>&1; then
    case " ${SHIMGATE_NEED[*]} " in *" $pkg "*) ;; *) SHIMGATE_NEED+=("$pkg") ;; esac
  fi
}

# A static /bin/busybox: the tests copy it into container root filesystems, which have no
# libc (Debian's plain `busybox` package is dynamically linked).
static_busybox() {
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1
}

have_kernel_image() {
  compgen -G '/boot/vmlinuz-*' >/dev/null
}

install_needed() {
  [ ${#SHIMGATE_NEED[@]} -gt 0 ] || return 0
  command -v apt-get >/dev/null || {
    echo "missing: ${SHIMGATE_NEED[*]}; install them with your package manager (this script knows apt only)" >&2
    return 1
  }
  echo "installing: ${SHIMGATE_NEED[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Packages must start no services here (containerd, dockerd): the tests run private
  # instances of their own. policy-rc.d answering 101 tells invoke-rc.d and
  # deb-systemd-invoke "not now". An existing policy is left as it is.
  local guard=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# shimgate scripts/lib/deps.sh: start no services while installing\nexit 101\n' \
      >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    guard=1
  fi
  local rc=0
  # A fresh machine's package lists may be empty, and its first boot may still hold the apt
  # lock (unattended-upgrades): update first, and wait for the lock instead of failing.
  apt-get -q -o DPkg::Lock::Timeout=600 update || rc=$?
  if [ $rc -eq 0 ]; then
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 \
      "${SHIMGATE_NEED[@]}" || rc=$?
  fi
  [ -z "$guard" ] || rm -f /usr/sbin/policy-rc.d
  return $rc
}
