#!/usr/bin/env bash
# Build the Debian package: shimgate_<version>_<arch>.deb with /usr/bin/shimgate, a man page
# per command and bash/zsh/fish completions (generated from the clap definition by
# examples/gen-docs.rs, outside the binary), and a prerm that undoes every `shimgate install`
# before the binary goes away. Only dpkg-deb is needed (part of dpkg, on every Debian): no
# packaging tool to install in CI.
#
#   scripts/build-deb.sh                      # release build, docs generated, into target/deb
#   scripts/build-deb.sh --binary FILE --docs DIR --out DIR [--fast]
#
# --fast compresses with gzip -1 instead of xz (the tests package an unstripped debug build).
#
# Installing the package switches no shim (`shimgate install` stays the operator's choice).
# Removing or purging it first runs `shimgate uninstall --all`, which restores every prefix
# recorded in /var/lib/shimgate; if that fails, the removal stops, so a host never keeps shim
# names pointing at a binary that is gone. The scripts honour DPKG_ROOT (dpkg --root with
# --force-script-chrootless), which is how the tests install it into a throwaway root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

bin=
docs=
out="$here/target/deb"
compress=(-Zxz)
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin=$2; shift ;;
    --docs) docs=$2; shift ;;
    --out) out=$2; shift ;;
    --fast) compress=(-Zgzip -z1) ;;
    -h | --help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb: unknown argument $1" >&2; exit 64 ;;
  esac
  shift
done

if [ -z "$bin" ]; then
  (cd "$here" && cargo build --release --bin shimgate)
  bin="$here/target/release/shimgate"
fi
stage=$(mktemp -d "${TMPDIR:-/tmp}/shimgate-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
if [ -z "$docs" ]; then
  docs="$stage/docs"
  (cd "$here" && cargo run --quiet --example gen-docs -- "$docs")
fi

# The version the binary itself reports (a test build may carry another than Cargo.toml's).
version=$("$bin" version | sed -n 's/^ *Version: *//p')
[ -n "$version" ] || { echo "build-deb: $bin did not report a version" >&2; exit 1; }
arch=$(dpkg --print-architecture)
# The newest glibc symbol version the binary needs.
glibc=$(grep -ao 'GLIBC_[0-9][0-9.]*' "$bin" | sed 's/GLIBC_//' | sort -uV | tail -n1)

root="$stage/root"
install -D -m 0755 "$bin" "$root/usr/bin/shimgate"
for page in "$docs"/man/*.1; do
  install -D -m 0644 "$page" "$root/usr/share/man/man1/$(basename "$page")"
  gzip -9n "$root/usr/share/man/man1/$(basename "$page")"
done
install -D -m 0644 "$docs/completions/shimgate.bash" "$root/usr/share/bash-completion/completions/shimgate"
install -D -m 0644 "$docs/completions/_shimgate" "$root/usr/share/zsh/vendor-completions/_shimgate"
install -D -m 0644 "$docs/completions/shimgate.fish" "$root/usr/share/fish/vendor_completions.d/shimgate.fish"
install -d "$root/usr/share/doc/shimgate"
cat >"$root/usr/share/doc/shimgate/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: shimgate
License: Apache-2.0

Files: *
Copyright: the shimgate developers
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
install -m 0644 "$here/MIGRATION.md" "$root/usr/share/doc/shimgate/MIGRATION.md"
gzip -9n "$root/usr/share/doc/shimgate/MIGRATION.md"
for s in doctor install upgrade; do
  install -D -m 0644 "$here/schema/$s.schema.json" "$root/usr/share/shimgate/schema/$s.schema.json"
done

install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: shimgate
Version: $version
Architecture: $arch
Maintainer: shimgate developers <maintainers@shimgate.invalid>
Installed-Size: $size
Depends: libc6 (>= ${glibc:-2.17}), libgcc-s1
Recommends: runc
Suggests: containerd
Section: admin
Priority: optional
Description: one containerd shim binary for every containerd version
 shimgate serves the legacy shim v1 API (containerd-shim) and the task API of
 containerd-shim-runc-v1 and containerd-shim-runc-v2 from one binary; the
 program name picks the API. As shimgate it is the operator tool: install and
 uninstall the shim names, doctor, live upgrade.
 .
 Installing this package switches no shim: run "shimgate install". Removing
 it first undoes every "shimgate install" (shimgate uninstall --all).
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# Undo every `shimgate install` before the binary goes (remove and purge both come here with
# "remove"). On "upgrade" the new binary takes the same path and the switched names follow it.
set -e
if [ "$1" = remove ]; then
  bin="${DPKG_ROOT:-}/usr/bin/shimgate"
  if [ -x "$bin" ]; then
    rc=0
    "$bin" uninstall --all --root "${DPKG_ROOT:-/}" || rc=$?
    # 1: some names were changed by someone else since install and are left as they are
    # (they do not point at this binary). Anything else: stop, keep the binary.
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
      echo "shimgate: could not undo shimgate install (exit $rc, see above); the package stays installed so no shim name points at a missing binary. Fix that (or run: shimgate uninstall --all --force), then remove the package again." >&2
      exit 1
    fi
  fi
fi
exit 0
EOF
cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# purge: the state directory goes if nothing is recorded in it any more.
set -e
if [ "$1" = purge ]; then
  rmdir "${DPKG_ROOT:-}/var/lib/shimgate" 2>/dev/null || true
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/shimgate_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
