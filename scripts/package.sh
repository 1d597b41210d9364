#!/usr/bin/env bash
# Build the pacfleet package (packaging/arch/PKGBUILD) from this checkout with makepkg:
#   scripts/package.sh [OUTDIR]      (default target/pkg; prints the package's path)
# On Arch: the system's makepkg and makepkg.conf; `cargo` must be installed. Elsewhere (Debian
# 12 CI): the pacman toolchain scripts/libalpm.sh builds, packaging/arch/makepkg-nonarch.conf,
# and --nodeps (there is no pacman database to check makedepends against). makepkg refuses to
# run as root; as root it runs in a user namespace where root appears as an unprivileged user
# (files stay root's: the kernel sees root), so CI machines need no build user.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "${1:-$top/target/pkg}" && cd "${1:-$top/target/pkg}" && pwd)
eval "$("$top/scripts/libalpm.sh" env)"
args=(--noconfirm --force --cleanbuild)
if [ ! -r /etc/arch-release ]; then
  args+=(--nodeps)
  export MAKEPKG_CONF="$top/packaging/arch/makepkg-nonarch.conf"
fi
export PKGDEST="$out" BUILDDIR="$out/build" SRCDEST="$out/src" LOGDEST="$out"
mkdir -p "$BUILDDIR" "$SRCDEST"
cd "$top/packaging/arch"
run=(makepkg "${args[@]}")
if [ "$(id -u)" -eq 0 ]; then
  run=(unshare --user --map-user=1000 --map-group=1000 "${run[@]}")
fi
"${run[@]}" >&2
ls -t "$out"/pacfleet-*.pkg.tar.zst | head -n1
