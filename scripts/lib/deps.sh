# Sourced by scripts/test.sh and scripts/demo.sh: install Debian packages that are missing,
# without starting any service, and find the Rust toolchain. Needs root and apt (Debian 12 or a
# derivative).
#
#   need_pkg PACKAGE TEST...   # queue PACKAGE unless the command TEST... succeeds
#   need_build_pkgs            # queue what cargo needs besides Rust (linker, libc, CA bundle)
#   install_needed             # apt-get update + install of everything queued (if any)
#   use_cargo                  # put cargo on PATH (also under sudo) and check rust-version

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

# Both scripts build: rustup brings Rust but not the C linker cargo calls (`cc`) nor libc's
# development files, and a fresh machine may lack the CA bundle cargo fetches crates with.
need_build_pkgs() {
  need_pkg gcc command -v cc
  need_pkg libc6-dev test -e /usr/include/stdio.h
  need_pkg ca-certificates test -e /etc/ssl/certs/ca-certificates.crt
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

# cargo: in $PATH, or rustup's in root's home, or (under sudo, whose secure_path leaves it out)
# in the invoking user's home, with that user's toolchain. Then the rustc it runs must be at
# least Cargo.toml's rust-version (Debian 12's own rustc is too old). Run from the repository.
use_cargo() {
  local me h user_home= want have
  me=$(basename "$0")
  if ! command -v cargo >/dev/null; then
    [ -n "${SUDO_USER:-}" ] && user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    for h in "$HOME" $user_home; do
      if [ -x "$h/.cargo/bin/cargo" ]; then
        export PATH="$h/.cargo/bin:$PATH"
        [ -n "${CARGO_HOME:-}" ] || export CARGO_HOME="$h/.cargo"
        [ -n "${RUSTUP_HOME:-}" ] || [ ! -d "$h/.rustup" ] || export RUSTUP_HOME="$h/.rustup"
        break
      fi
    done
  fi
  command -v cargo >/dev/null || {
    echo "$me: cargo not found. Install Rust 1.85 or newer with rustup (Debian 12's rustc 1.63 is too old), then run this again." >&2
    return 2
  }
  want=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
  have=$(rustc --version | awk '{print $2}')
  if [ -n "$want" ] && [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
    echo "$me: rustc $have is older than $want (Cargo.toml rust-version); rustup update" >&2
    return 2
  fi
}
