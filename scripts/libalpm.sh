#!/usr/bin/env bash
# Provide libalpm 16 (pacman 7.1) for building and testing pacfleet.
#
# On Arch (or anything whose system libalpm is already >= 16) this does nothing but print the
# environment to use. On Debian 12, whose libalpm is 13, it builds pacman 7.1.0 from Debian's
# source package `pacman-package-manager` into a cached prefix, once:
#
#   $PACFLEET_TOOLCHAIN (default ~/.cache/pacfleet/pacman-7.1.0)
#
# Usage:  eval "$(scripts/libalpm.sh env)"     # build if needed, then export the variables
#         scripts/libalpm.sh build             # build if needed
#
# The mirror is taken from the machine's own apt configuration; no host is named here.
set -euo pipefail

version=7.1.0
prefix=${PACFLEET_TOOLCHAIN:-${XDG_CACHE_HOME:-$HOME/.cache}/pacfleet/pacman-$version}

log() { printf 'libalpm.sh: %s\n' "$*" >&2; }

system_ok() {
  command -v pkg-config >/dev/null 2>&1 || return 1
  local v
  v=$(PKG_CONFIG_PATH='' pkg-config --modversion libalpm 2>/dev/null) || return 1
  [ "${v%%.*}" -ge 16 ] 2>/dev/null
}

prefix_ok() {
  [ -f "$prefix/.complete" ] && [ -f "$prefix/lib/pkgconfig/libalpm.pc" ]
}

apt_mirror() {
  # First debian mirror URI in the machine's apt configuration (deb822 or one-line style).
  local f uri
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    uri=$(awk '
      /^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }
      /^deb(-src)? / { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|ftp):\/\/.*\/debian\/?$/) { print $i; exit } }
    ' "$f")
    if [ -n "$uri" ]; then printf '%s\n' "${uri%/}"; return 0; fi
  done
  return 1
}

build_deps() {
  local need=()
  for p in meson ninja-build pkg-config gcc libarchive-dev libcurl4-openssl-dev libgpgme-dev libssl-dev xz-utils; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "installing build dependencies: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

fetch_source() {
  local work=$1 mirror
  mirror=$(apt_mirror) || { log "no Debian mirror found in /etc/apt; cannot fetch pacman source"; exit 2; }
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  printf 'deb-src %s sid main\n' "$mirror" > "$work/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$work/lists" -o "APT::Get::List-Cleanup=0")
  log "fetching pacman-package-manager source from $mirror (sid)"
  apt-get "${opts[@]}" update -qq >/dev/null 2>&1 || apt-get "${opts[@]}" update
  (cd "$work" && apt-get "${opts[@]}" source --download-only pacman-package-manager >/dev/null 2>&1) || true
  local tarball
  tarball=$(ls "$work"/pacman-package-manager_${version}.orig.tar.* 2>/dev/null | head -n1 || true)
  if [ -z "$tarball" ]; then
    log "pacman-package-manager_${version}.orig.tar.* was not downloaded; sid may have moved on"
    ls "$work" >&2
    exit 2
  fi
  printf '%s\n' "$tarball"
}

build() {
  if system_ok; then log "system libalpm is >= 16; nothing to build"; return 0; fi
  if prefix_ok; then return 0; fi
  build_deps
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  local tarball
  tarball=$(fetch_source "$work")
  mkdir -p "$work/src"
  tar -xf "$tarball" -C "$work/src" --strip-components=1
  log "building pacman $version into $prefix"
  rm -rf "$prefix"
  (cd "$work/src" &&
    meson setup build --prefix="$prefix" --libdir=lib --buildtype=release \
      -Ddoc=disabled -Di18n=false -Dscriptlet-shell=/bin/bash >"$work/meson.log" 2>&1 &&
    ninja -C build >>"$work/meson.log" 2>&1 &&
    ninja -C build install >>"$work/meson.log" 2>&1) || { cat "$work/meson.log" >&2; exit 2; }
  touch "$prefix/.complete"
  log "done: $prefix"
}

print_env() {
  if system_ok; then return 0; fi
  printf 'export PACFLEET_TOOLCHAIN=%q\n' "$prefix"
  printf 'export PKG_CONFIG_PATH=%q\n' "$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  printf 'export LD_LIBRARY_PATH=%q\n' "$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  printf 'export PATH=%q\n' "$prefix/bin:$PATH"
}

case "${1:-env}" in
  build) build ;;
  env) build; print_env ;;
  prefix) printf '%s\n' "$prefix" ;;
  *) echo "usage: $0 [env|build|prefix]" >&2; exit 2 ;;
esac
