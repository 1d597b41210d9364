#!/usr/bin/env bash
# Install what building and testing pacfleet needs from the distribution, if it is missing.
# Debian 12: apt packages (as root). Arch: pacman provides libalpm; the rest is listed for you.
# Idempotent and quiet when everything is there.
set -euo pipefail

log() { printf 'deps.sh: %s\n' "$*" >&2; }

# Tools the tests drive for real: git (and its daemon), bsdtar for repo-add, minisign for
# signature interoperability, python3 for the smart-HTTP test server, systemd-analyze for units,
# gnupg for the test packager's key and pacman-key's host keyrings, zstd to check the .pkg.tar.zst
# packages, busybox-static for a /bin/sh inside test roots (HostDir::with_shell), openssh for
# fetching over ssh against a real sshd on loopback (tests/it/ssh.rs), jq and curl for the example
# fleet's CI script run against a fake GitHub API (tests/it/ci_workflow.rs), chromium to render
# `fleetctl fleet status --html` headless (tests/it/fleet_status.rs), prometheus for promtool to
# check and unit-test monitoring/'s alerting rules (tests/it/monitoring.rs), iproute2's `ip` to give
# a test's own network namespace multicast on lo for mDNS peer discovery (tests/it/peer_discover.rs).
debian_pkgs=(git libarchive-tools pkg-config gcc python3 minisign systemd gnupg zstd busybox-static openssh-client openssh-server jq curl fakeroot binutils chromium prometheus iproute2)

if [ -r /etc/debian_version ]; then
  missing=()
  for p in "${debian_pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      log "missing Debian packages: ${missing[*]}; run: sudo apt-get install ${missing[*]}"
      exit 2
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
elif [ -r /etc/arch-release ]; then
  for t in git bsdtar minisign pacman-conf gpg zstd ssh ssh-keygen jq curl chromium promtool ip; do
    command -v "$t" >/dev/null 2>&1 || { log "missing $t: pacman -S --needed git libarchive minisign pacman gnupg zstd openssh jq curl chromium prometheus iproute2"; exit 2; }
  done
  # HostDir::with_shell copies /bin/busybox into test roots: it must be statically linked.
  [ -x /bin/busybox ] || { log "missing /bin/busybox (statically linked): pacman -S --needed busybox"; exit 2; }
fi

# Rust: pacfleet is edition 2024 (rust-version in Cargo.toml). Debian's rustc is too old.
need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml")
have=$(rustc --version 2>/dev/null | awk '{print $2}' || true)
if [ -z "$have" ] || [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
  log "Rust ${need} or newer is needed (found: ${have:-none}): install it with rustup (rustup.rs: \`rustup toolchain install stable\`), or on Arch: pacman -S rust"
  exit 2
fi
