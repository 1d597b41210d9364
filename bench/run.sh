#!/usr/bin/env bash
# pacfleet's benchmarks (issue 6; results and how to read them: BENCHMARKS.md).
#
#   bench/run.sh                 # everything, full size (about 25 minutes on 2 cores)
#   bench/run.sh --smoke         # every benchmark at toy size, each command once; checks only
#   bench/run.sh --only noop,agent --runs 20
#
# Benchmarks (--only takes a comma-separated list of these names):
#   noop   `fleetctl reconcile` with nothing new, on a host with --installed packages and the
#          fleet repository served by `git daemon` on loopback, against its floor: `git fetch` of
#          the same repository (nothing new) plus `pacman -Q` on the same root.
#   apply  installing, then removing, --apply packages through `fleetctl reconcile` against
#          `pacman -S` / `pacman -Rs` of the same packages on an identical root.
#   scale  `fleetctl validate` and `fleetctl diff a..b` on generated fleets of 1k/10k/100k hosts,
#          200 pools, 5,000 packages in 100 sets, 2 generations per pool; b touches 10 sets.
#   agent  resident memory of `fleetctl agent` over --passes passes (interval --interval).
#   pass   a host's `fleetctl reconcile` on signed scale fleets of --pass-hosts hosts (fleet
#          repository on `git daemon`): nothing new, the first pass after a change (a..b),
#          a new host's first pass, catching up --chain signed commits; each against `git fetch`
#          of the same refs and objects into a bare mirror. And `fleetctl sign` after --chain
#          signed commits.
#   peers  the peer cache (BENCHMARKS.md §7): --peer-hosts hosts take a change of --peer-packages
#          packages (each about --peer-size bytes) from a counting HTTP mirror limited to
#          --peer-rate bytes/s (a WAN link, shared), all started together, with peers (each
#          host's agent serving its cache to the others) and without: upstream package bytes and
#          wall time; the in-window apply after a `prefetch: true` pass against `pacman -S` from
#          a warm cache; one --big-mib MiB file from a peer agent against the same file from the
#          mirror without a rate limit (curl, loopback).
#
# Options:
#   --smoke           toy sizes, each command run once, no hyperfine needed (CI)
#   --only LIST       benchmarks to run (default: noop,apply,scale,pass,agent,peers)
#   --runs N          timed runs per command (default: noop 30, apply 10, scale 3 to 10)
#   --work DIR        where the worlds live (default: a new temporary directory, removed at the
#                     end unless --keep); reused when it already holds a world
#   --world DIR       a world generated beforehand (by bench_world); nothing is generated
#   --out DIR         results (default target/bench-results/<date>)
#   --fleetctl BIN    the fleetctl to measure (default: built here with --profile dist)
#   --gen BIN         the bench_world generator (default: built here with --profile dist)
#   --hosts LIST      host counts for scale (default 1000,10000,100000; smoke 60)
#   --installed N     packages on the host (default 1500; smoke 30)
#   --apply N         packages to install and remove (default 200; smoke 10)
#   --passes N        agent passes (default 100; smoke 3)
#   --interval D      agent interval (default 1s; smoke 300ms)
#   --pass-hosts LIST host counts for pass (default 1000,10000,100000; smoke 60)
#   --chain LIST      signed commits to catch up, one per --pass-hosts entry (default
#                     5000,1000,200; smoke 5)
#   --peer-hosts N    hosts of the peers benchmark (default 8; smoke 3)
#   --peer-packages N packages of its change (default 200; smoke 10)
#   --peer-size N     bytes of incompressible data per package (default 262144; smoke 32768)
#   --peer-rate N     the mirror's rate in bytes/s, shared (default 20971520; smoke 0: none)
#   --big-mib N       the big file of the throughput figure (default 200; smoke 8)
#   --mirror URL      a counting mirror (pacfleet_support::mirror) already serving
#                     <world>/peers/repo/bench (the smoke test's); default: started here
#                     (examples/counting_mirror), one at --peer-rate and one unlimited
#   --keep            keep the work directory
#
# Needs: root (pacman transactions), git (with git daemon), pacman 7 (scripts/libalpm.sh puts
# it on PATH; this script does that itself when pacman is missing); for full runs hyperfine and
# GNU time (/usr/bin/time). Everything it creates is under the work and out directories.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)

smoke=0
only=noop,apply,scale,pass,agent,peers
runs=
work=
world=
out=
fleetctl=
gen=
hosts=
installed=
apply_n=
passes=
interval=
pass_hosts=
chain=
keep=0
peer_hosts=
peer_pkgs=
peer_size=
peer_rate=
big_mib=
mirror=

die() { printf 'bench: %s\n' "$*" >&2; exit 2; }
log() { printf 'bench: %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1 ;;
    --only) only=$2; shift ;;
    --runs) runs=$2; shift ;;
    --work) work=$2; shift ;;
    --world) world=$2; shift ;;
    --out) out=$2; shift ;;
    --fleetctl) fleetctl=$2; shift ;;
    --gen) gen=$2; shift ;;
    --hosts) hosts=$2; shift ;;
    --installed) installed=$2; shift ;;
    --apply) apply_n=$2; shift ;;
    --passes) passes=$2; shift ;;
    --interval) interval=$2; shift ;;
    --pass-hosts) pass_hosts=$2; shift ;;
    --chain) chain=$2; shift ;;
    --keep) keep=1 ;;
    --peer-hosts) peer_hosts=$2; shift ;;
    --peer-packages) peer_pkgs=$2; shift ;;
    --peer-size) peer_size=$2; shift ;;
    --peer-rate) peer_rate=$2; shift ;;
    --big-mib) big_mib=$2; shift ;;
    --mirror) mirror=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

if [ "$smoke" = 1 ]; then
  : "${hosts:=60}" "${installed:=30}" "${apply_n:=10}" "${passes:=3}" "${interval:=300ms}"
  : "${pass_hosts:=60}" "${chain:=5}"
  : "${peer_hosts:=3}" "${peer_pkgs:=10}" "${peer_size:=32768}" "${peer_rate:=0}" "${big_mib:=8}"
  scale_opts="--pools 6 --packages 300 --sets 10 --touch 2"
  files_opt="--files 3"
  flush=true # no `sync` between runs: nothing is timed
else
  : "${hosts:=1000,10000,100000}" "${installed:=1500}" "${apply_n:=200}" "${passes:=100}" "${interval:=1s}"
  : "${pass_hosts:=1000,10000,100000}" "${chain:=5000,1000,200}"
  : "${peer_hosts:=8}" "${peer_pkgs:=200}" "${peer_size:=262144}" "${peer_rate:=20971520}" "${big_mib:=200}"
  scale_opts=""
  files_opt=""
  flush=sync # before a timed run, so that writing back the restored copy does not overlap it
fi
want() { [[ ",$only," == *",$1,"* ]]; }

[ "$(id -u)" = 0 ] || die "run as root: the apply benchmark runs pacman transactions"
command -v git >/dev/null || die "git is missing"
if ! command -v pacman >/dev/null; then
  eval "$("$top/scripts/libalpm.sh" env)"
fi
command -v pacman >/dev/null || die "pacman is missing; run: eval \"\$(scripts/libalpm.sh env)\""
use_hyperfine=0
if [ "$smoke" = 0 ]; then
  command -v hyperfine >/dev/null || die "hyperfine is missing (apt-get install hyperfine)"
  [ -x /usr/bin/time ] || die "GNU time is missing (apt-get install time)"
  use_hyperfine=1
fi

# --- binaries ---------------------------------------------------------------------------------
if [ -z "$fleetctl" ] || { [ -z "$gen" ] && [ -z "$world" ]; }; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/target/bench}
  log "building fleetctl and bench_world (profile dist) in $CARGO_TARGET_DIR"
  (cd "$top" && cargo build --profile dist --quiet --bin fleetctl --example bench_world --example counting_mirror)
  : "${fleetctl:=$CARGO_TARGET_DIR/dist/fleetctl}"
  : "${gen:=$CARGO_TARGET_DIR/dist/examples/bench_world}"
fi
mirror_bin=
if want peers && [ -z "$mirror" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/target/bench}
  mirror_bin=$CARGO_TARGET_DIR/dist/examples/counting_mirror
  [ -x "$mirror_bin" ] || (cd "$top" && cargo build --profile dist --quiet --example counting_mirror)
fi
fleetctl=$(realpath "$fleetctl")
[ -x "$fleetctl" ] || die "$fleetctl is not executable"
export LC_ALL=C NO_COLOR=1
unset RUST_LOG

# --- directories ------------------------------------------------------------------------------
cleanup_dirs=()
if [ -n "$world" ]; then
  work=$(realpath "$world")
elif [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/pacfleet-bench.XXXXXX")
  [ "$keep" = 1 ] || cleanup_dirs+=("$work")
else
  mkdir -p "$work"; work=$(realpath "$work")
fi
: "${out:=$top/target/bench-results/$(date +%Y%m%d-%H%M%S)$([ "$smoke" = 1 ] && echo -smoke)}"
mkdir -p "$out"; out=$(realpath "$out")
summary=$out/summary.md
daemon_pid=
pass_daemon_pid=
agent_pid=
peer_pids=()
cleanup() {
  if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; fi
  for p in "${peer_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi
  if [ -n "$pass_daemon_pid" ]; then kill "$pass_daemon_pid" 2>/dev/null || true; fi
  for d in "${cleanup_dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

{
  echo "# pacfleet benchmark results ($([ "$smoke" = 1 ] && echo smoke || echo full))"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$top" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  # shellcheck disable=SC1091
  echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $( . /etc/os-release; echo "$PRETTY_NAME")"
  echo "- fs of the work dir: $(df -T "$work" | awk 'NR==2 {print $2}'); pacman $(pacman --version 2>/dev/null | grep -o 'Pacman v[0-9.]*' | head -1), $(git --version)$([ "$use_hyperfine" = 1 ] && echo ", $(hyperfine --version)")"
  echo "- work dir: $work"
  echo
} >"$summary"

# --- helpers ----------------------------------------------------------------------------------
# Timing: with hyperfine, `measure GROUP` benchmarks the commands queued with `queue NAME
# PREPARE CMD [OK1]` (shell command lines); in smoke mode each runs once and must exit 0 (or 1
# when OK1 is 1). Peak RSS: `peak_rss CMD PREPARE` prints the median max RSS (KiB) of 3 runs.
q_names=(); q_preps=(); q_cmds=(); q_ok=()
queue() { q_names+=("$1"); q_preps+=("$2"); q_cmds+=("$3"); q_ok+=("${4:-0}"); }
measure() { # GROUP HYPERFINE-RUN-OPTIONS (used unless --runs is given)
  local group=$1 run_opts=$2 i n=${#q_names[@]}
  [ -n "$runs" ] && run_opts="--warmup 1 --runs $runs"
  if [ "$use_hyperfine" = 1 ]; then
    # shellcheck disable=SC2206
    local args=(--style basic $run_opts
      --export-json "$out/$group.json" --export-markdown "$out/$group.md")
    local any_ok1=0
    for ((i = 0; i < n; i++)); do [ "${q_ok[$i]}" = 1 ] && any_ok1=1; done
    [ "$any_ok1" = 1 ] && args+=(-i)
    for ((i = 0; i < n; i++)); do args+=(--prepare "${q_preps[$i]:-true}"); done
    for ((i = 0; i < n; i++)); do args+=(-n "${q_names[$i]}" "${q_cmds[$i]}"); done
    log "measuring $group: ${q_names[*]}"
    hyperfine "${args[@]}" >"$out/$group.log" 2>&1 || { cat "$out/$group.log" >&2; die "hyperfine failed for $group"; }
    local rss=()
    for ((i = 0; i < n; i++)); do rss+=("$(peak_rss "${q_cmds[$i]}" "${q_preps[$i]}")"); done
    {
      echo "### $group"
      echo
      python3 - "$out/$group.json" "${rss[@]}" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
print("| command | median wall | mean ± σ | min … max | CPU user + sys (mean) | runs | peak RSS (median of 3) |")
print("|:---|---:|---:|---:|---:|---:|---:|")
for r, rss in zip(results, sys.argv[2:]):
    ms = lambda v: f"{v * 1000:.1f} ms" if v < 10 else f"{v:.2f} s"
    print(f"| `{r['command']}` | **{ms(r['median'])}** | {ms(r['mean'])} ± {ms(r['stddev'] or 0)} | "
          f"{ms(r['min'])} … {ms(r['max'])} | {ms(r['user'] + r['system'])} | {len(r['times'])} | {int(rss) / 1024:.1f} MiB |")
PY
      echo
    } >>"$summary"
  else
    echo "### $group (smoke: one run each, times are not measurements)" >>"$summary"
    echo >>"$summary"
    for ((i = 0; i < n; i++)); do
      [ -n "${q_preps[$i]}" ] && sh -c "${q_preps[$i]}"
      local t0=$EPOCHREALTIME code=0
      sh -c "${q_cmds[$i]}" >"$out/$group.$i.out" 2>&1 || code=$?
      local ms=$(( (${EPOCHREALTIME/./} - ${t0/./}) / 1000 ))
      if [ "$code" != 0 ] && ! { [ "${q_ok[$i]}" = 1 ] && [ "$code" = 1 ]; }; then
        cat "$out/$group.$i.out" >&2
        die "$group: \`${q_names[$i]}\` exited $code"
      fi
      echo "- \`${q_names[$i]}\`: exit $code, ${ms} ms" >>"$summary"
    done
    echo >>"$summary"
  fi
  q_names=(); q_preps=(); q_cmds=(); q_ok=()
}
peak_rss() {
  local cmd=$1 prep=$2 i vals=()
  for i in 1 2 3; do
    [ -n "$prep" ] && sh -c "$prep"
    vals+=("$(/usr/bin/time -f '%M' sh -c "$cmd" 2>&1 >/dev/null | tail -1)")
  done
  printf '%s\n' "${vals[@]}" | sort -n | sed -n 2p
}
# The median of `mean`s is hyperfine's; these read single numbers back for the ratios.
median_of() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=[x for x in d["results"] if x["command"]==sys.argv[2]][0]; print("%.4f" % r["median"])' "$1" "$2"; }
ratio() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }

# --- worlds -----------------------------------------------------------------------------------
hw=$work/host
if want noop || want apply || want agent; then
  if [ ! -d "$hw/git/fleet" ]; then
    [ -n "$world" ] && die "$world has no host world (host/)"
    log "generating the host world: $installed packages installed, $apply_n to apply"
    # shellcheck disable=SC2086
    "$gen" host-world --dir "$hw" --installed "$installed" --apply "$apply_n" $files_opt >>"$out/generate.log"
  fi
  # The fleet repository over git:// on loopback.
  for _ in 1 2 3 4 5 6 7 8; do
    port=$(( 20000 + (RANDOM % 20000) ))
    git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$hw/git" --export-all \
      --informative-errors "$hw/git" >"$out/git-daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 50); do
      git ls-remote "git://127.0.0.1:$port/fleet" >/dev/null 2>&1 && break 2
      kill -0 "$daemon_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$daemon_pid" 2>/dev/null || true; daemon_pid=
  done
  [ -n "$daemon_pid" ] || die "git daemon did not start (see $out/git-daemon.log)"
  url="git://127.0.0.1:$port/fleet"
  log "fleet repository served at $url"

  fh=$hw/hosts/fleet ph=$hw/hosts/pacman snap=$hw/snap
  agent_yaml() { # FILE BRANCH [EXTRA]
    cat >"$1" <<EOF
repo: $url
branch: $2
hostname: bench-01
root: $fh/root
dbpath: $fh/root/var/lib/pacman
pacman_conf: $fh/pacman.conf
state_dir: $fh/state
trusted_keys: [$hw/keys/ops.pub]
lock_timeout: 5s
${3:-}
EOF
  }
  mkdir -p "$hw/conf"
  agent_yaml "$hw/conf/base.yaml" base
  agent_yaml "$hw/conf/install.yaml" install
  agent_yaml "$hw/conf/remove.yaml" main
  agent_yaml "$hw/conf/agent.yaml" base "interval: $interval"
  # Reports on: the host's own key and a status repository (a local bare repository; a no-op
  # pass pushes nothing, so where it lives does not enter the figure).
  [ -f "$hw/keys/host.key" ] || "$fleetctl" keygen --unencrypted --out "$hw/keys/host" >/dev/null
  [ -d "$hw/status.git" ] || git init -q --bare "$hw/status.git"
  agent_yaml "$hw/conf/reports.yaml" base "host_key: $hw/keys/host.key
status_repo: $hw/status.git"
  pac() { pacman --config "$1/pacman.conf" --root "$1/root" --dbpath "$1/root/var/lib/pacman" --noconfirm "${@:2}"; }
  count() { pac "$1" -Qq 2>/dev/null | wc -l; }
  restore() { rm -rf "$2" && cp -a "$1" "$2" && $flush; }
  expected=$(( $(find "$hw/repo/bench" -name 'app*.pkg.tar.zst' | wc -l) + $(find "$hw/repo/bench" -name 'lib*.pkg.tar.zst' | wc -l) ))
  new_apps=$(find "$hw/repo/bench" -name 'newapp*.pkg.tar.zst' -printf '%f\n' | sort | sed 's/-1\.0-1-any\.pkg\.tar\.zst$//' | tr '\n' ' ')
  applied=$(find "$hw/repo/bench" -name 'new*.pkg.tar.zst' | wc -l)

  if [ ! -d "$snap/fleet-0" ]; then
    log "first reconcile: installing $expected packages on the host (not timed)"
    start=$EPOCHREALTIME
    "$fleetctl" reconcile --config "$hw/conf/base.yaml" >"$out/setup.log" 2>&1 \
      || { cat "$out/setup.log" >&2; die "the first reconcile failed"; }
    log "  took $(( (${EPOCHREALTIME/./} - ${start/./}) / 1000000 ))s"
    [ "$(count "$fh")" = "$expected" ] || die "the host has $(count "$fh") packages after the first reconcile, expected $expected"
    rm -rf "$ph/root" && cp -a "$fh/root" "$ph/root"
    rm -f "$ph/root/var/lib/pacman/pacfleet.anchor"
    mkdir -p "$snap" && cp -a "$fh" "$snap/fleet-0" && cp -a "$ph" "$snap/pacman-0"
    # The state after installing, for the removal benchmarks.
    "$fleetctl" reconcile --config "$hw/conf/install.yaml" >>"$out/setup.log" 2>&1 || die "install reconcile failed"
    [ "$(count "$fh")" = "$((expected + applied))" ] || die "install reconcile left $(count "$fh") packages"
    # shellcheck disable=SC2086
    pac "$ph" -S $new_apps >>"$out/setup.log" 2>&1 || die "pacman -S failed"
    [ "$(count "$ph")" = "$((expected + applied))" ] || die "pacman -S left $(count "$ph") packages"
    cp -a "$fh" "$snap/fleet-1" && cp -a "$ph" "$snap/pacman-1"
    restore "$snap/fleet-0" "$fh"; restore "$snap/pacman-0" "$ph"
  fi
  echo "World: a host with $expected installed packages (each $(bsdtar -tf "$(ls "$hw"/repo/bench/app0000-*.pkg.tar.zst)" | grep -vc '/$\|^\.') files), fleet repository at $url; $applied packages to apply." >>"$summary"
  echo >>"$summary"
fi

# --- noop -------------------------------------------------------------------------------------
if want noop; then
  restore "$snap/fleet-0" "$fh"
  floor_git=$hw/floor.git
  rm -rf "$floor_git" && git init -q --bare "$floor_git"
  refspecs="+refs/heads/base:refs/remotes/origin/base +refs/notes/pacfleet:refs/notes/pacfleet"
  # shellcheck disable=SC2086 # two refspecs
  git --git-dir="$floor_git" fetch -q "$url" $refspecs
  reconcile="$fleetctl reconcile --config $hw/conf/base.yaml"
  fetch="git --git-dir=$floor_git fetch -q $url $refspecs"
  query="pacman --config $fh/pacman.conf --root $fh/root --dbpath $fh/root/var/lib/pacman -Q >/dev/null"
  # Correctness first: a pass with nothing new converges and changes nothing.
  localdb() { find "$fh/root/var/lib/pacman/local" -type f -printf '%P %s %T@\n' | sort | md5sum; }
  before=$(localdb)
  "$fleetctl" reconcile --config "$hw/conf/base.yaml" --json >"$out/noop.check.json" 2>"$out/noop.check.err" \
    || { cat "$out/noop.check.err" >&2; die "no-op reconcile failed"; }
  grep -q '"outcome": *"converged"' "$out/noop.check.json" || die "no-op reconcile did not converge: $(cat "$out/noop.check.json")"
  [ "$(localdb)" = "$before" ] || die "the no-op reconcile changed the local package database"
  queue "fleetctl reconcile" "" "$reconcile"
  # The same no-op pass with reports on (agent.yaml `status_repo:`): it builds its report and
  # pushes nothing, the last published one saying the same. The first pass publishes (untimed).
  "$fleetctl" reconcile --config "$hw/conf/reports.yaml" >"$out/noop.reports.check" 2>&1 \
    || { cat "$out/noop.reports.check" >&2; die "the reporting reconcile failed"; }
  git --git-dir="$hw/status.git" for-each-ref refs/pacfleet/status | grep -q . \
    || die "the reporting reconcile published no report"
  queue "fleetctl reconcile (reports on)" "" "$fleetctl reconcile --config $hw/conf/reports.yaml"
  # The same pass without the shortcut for unchanged inputs: libalpm reads the local and sync
  # databases and prepares the (empty) transaction, as the first pass after any change does.
  queue "fleetctl reconcile --full-plan" "" "$reconcile --full-plan"
  queue "floor: git fetch + pacman -Q" "" "$fetch && $query"
  queue "git fetch" "" "$fetch"
  queue "pacman -Q" "" "$query"
  # What a floating pool's no-op pass also checks: the sync databases are current and nothing
  # needs upgrading (pacman's own cost of that check, for reference).
  queue "pacman -Syup" "" "pacman --config $fh/pacman.conf --root $fh/root --dbpath $fh/root/var/lib/pacman -Syup >/dev/null"
  measure noop "--warmup 3 --runs 30"
  if [ "$use_hyperfine" = 1 ]; then
    r=$(median_of "$out/noop.json" "fleetctl reconcile") f=$(median_of "$out/noop.json" "floor: git fetch + pacman -Q")
    fp=$(median_of "$out/noop.json" "fleetctl reconcile --full-plan")
    rr=$(median_of "$out/noop.json" "fleetctl reconcile (reports on)")
    echo "No-op reconcile: median ${r}s vs floor ${f}s = **$(ratio "$r" "$f")×** the floor (target ≤ 1.2×); with reports on ${rr}s = $(ratio "$rr" "$f")×; planning in full (\`--full-plan\`, the first pass after any change) ${fp}s = $(ratio "$fp" "$f")×." >>"$summary"
    echo >>"$summary"
  fi
fi

# --- apply ------------------------------------------------------------------------------------
if want apply; then
  fpre0="rm -rf $fh && cp -a $snap/fleet-0 $fh && $flush"
  fpre1="rm -rf $fh && cp -a $snap/fleet-1 $fh && $flush"
  ppre0="rm -rf $ph && cp -a $snap/pacman-0 $ph && $flush"
  ppre1="rm -rf $ph && cp -a $snap/pacman-1 $ph && $flush"
  pacman_h="pacman --config $ph/pacman.conf --root $ph/root --dbpath $ph/root/var/lib/pacman --noconfirm"
  queue "fleetctl reconcile (install)" "$fpre0" "$fleetctl reconcile --config $hw/conf/install.yaml"
  queue "pacman -S (install)" "$ppre0" "$pacman_h -S $new_apps >/dev/null"
  queue "pacman -Syu (install)" "$ppre0" "$pacman_h -Syu $new_apps >/dev/null"
  queue "fleetctl reconcile (remove)" "$fpre1" "$fleetctl reconcile --config $hw/conf/remove.yaml"
  queue "pacman -Rs (remove)" "$ppre1" "$pacman_h -Rs $new_apps >/dev/null"
  measure apply "--warmup 1 --runs 10"
  # Correctness: both ways end in the same place.
  restore "$snap/fleet-0" "$fh"
  "$fleetctl" reconcile --config "$hw/conf/install.yaml" >"$out/apply.check" 2>&1 || die "install reconcile failed"
  [ "$(count "$fh")" = "$((expected + applied))" ] || die "install left $(count "$fh") packages"
  "$fleetctl" reconcile --config "$hw/conf/remove.yaml" >>"$out/apply.check" 2>&1 || die "remove reconcile failed"
  [ "$(count "$fh")" = "$expected" ] || die "remove left $(count "$fh") packages"
  diff <(pac "$fh" -Q) <(pac "$snap/pacman-0" -Q) >/dev/null || die "after install and remove the host differs from where it started"
  if [ "$use_hyperfine" = 1 ]; then
    fi_=$(median_of "$out/apply.json" "fleetctl reconcile (install)") pi=$(median_of "$out/apply.json" "pacman -S (install)")
    fr=$(median_of "$out/apply.json" "fleetctl reconcile (remove)") pr=$(median_of "$out/apply.json" "pacman -Rs (remove)")
    echo "Apply: install $(ratio "$fi_" "$pi")× pacman -S, remove $(ratio "$fr" "$pr")× pacman -Rs, both $(ratio "$(python3 -c "print($fi_+$fr)")" "$(python3 -c "print($pi+$pr)")")× (target ≤ 1.1×)." >>"$summary"
    echo >>"$summary"
  fi
  restore "$snap/fleet-0" "$fh"
fi

# --- scale ------------------------------------------------------------------------------------
if want scale; then
  has_diff=0
  "$fleetctl" diff --help >/dev/null 2>&1 && has_diff=1
  for n in ${hosts//,/ }; do
    sf=$work/scale-$n
    if [ ! -d "$sf/.git" ]; then
      [ -n "$world" ] && die "$world has no scale-$n/"
      log "generating a fleet of $n hosts"
      # shellcheck disable=SC2086
      "$gen" fleet --dir "$sf" --hosts "$n" $scale_opts >>"$out/generate.log"
    fi
    "$fleetctl" validate "$sf" >"$out/scale-$n.validate" 2>&1 || { cat "$out/scale-$n.validate" >&2; die "the $n-host fleet does not validate"; }
    queue "validate ($n hosts)" "" "$fleetctl validate $sf >/dev/null"
    if [ "$has_diff" = 1 ]; then
      code=0
      "$fleetctl" diff --repo "$sf" a..b >"$out/scale-$n.diff" 2>&1 || code=$?
      [ "$code" = 1 ] || { cat "$out/scale-$n.diff" >&2; die "fleetctl diff a..b exited $code, expected 1 (changes)"; }
      queue "diff a..b ($n hosts)" "" "$fleetctl diff --repo $sf a..b >/dev/null" 1
    fi
  done
  [ "$has_diff" = 1 ] || echo "(this fleetctl has no \`diff\` command: only validate is measured)" >>"$summary"
  measure scale "--warmup 1 --min-runs 3 --max-runs 10"
fi

# --- pass -------------------------------------------------------------------------------------
if want pass; then
  IFS=, read -r -a pass_ns <<<"$pass_hosts"
  IFS=, read -r -a chains <<<"$chain"
  for i in "${!pass_ns[@]}"; do
    n=${pass_ns[$i]} k=${chains[$i]:-${chains[-1]}}
    pw=$work/pass-$n
    if [ ! -d "$pw/fleet/.git" ]; then
      [ -n "$world" ] && die "$world has no pass-$n/"
      log "generating a signed fleet of $n hosts with a chain of $k signed commits"
      # shellcheck disable=SC2086
      "$gen" fleet --dir "$pw/fleet" --hosts "$n" --sign "$pw/keys" --chain "$k" $scale_opts >>"$out/generate.log"
    fi
  done
  # The fleets over git:// on loopback, from their own daemon (base path: the work dir).
  for _ in 1 2 3 4 5 6 7 8; do
    pport=$(( 20000 + (RANDOM % 20000) ))
    git daemon --reuseaddr --listen=127.0.0.1 --port="$pport" --base-path="$work" --export-all \
      --informative-errors "$work" >"$out/git-daemon-pass.log" 2>&1 &
    pass_daemon_pid=$!
    for _ in $(seq 50); do
      git ls-remote "git://127.0.0.1:$pport/pass-${pass_ns[0]}/fleet" >/dev/null 2>&1 && break 2
      kill -0 "$pass_daemon_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$pass_daemon_pid" 2>/dev/null || true; pass_daemon_pid=
  done
  [ -n "$pass_daemon_pid" ] || die "git daemon did not start (see $out/git-daemon-pass.log)"
  for i in "${!pass_ns[@]}"; do
    n=${pass_ns[$i]} k=${chains[$i]:-${chains[-1]}}
    pw=$work/pass-$n
    purl="git://127.0.0.1:$pport/pass-$n/fleet"
    hd=$pw/host fl=$pw/floor
    rm -rf "$hd" "$pw/snap" "$fl"
    mkdir -p "$hd/root/var/lib/pacman/local" "$hd/root/var/lib/pacman/sync" "$hd/root/var/cache/pacman/pkg" \
      "$hd/root/var/log" "$hd/gnupg" "$hd/hooks" "$hd/state" "$pw/conf" "$pw/snap" "$fl"
    echo 9 >"$hd/root/var/lib/pacman/local/ALPM_DB_VERSION"
    printf '[options]\nRootDir = %s\nDBPath = %s/\nCacheDir = %s/\nLogFile = %s\nGPGDir = %s/\nHookDir = %s/\nArchitecture = auto\n# Signatures are not checked on this host: it has no repositories and installs nothing (the pass benchmark measures fetch, verify and resolution), so it has no keyring\nSigLevel = Never\nDisableSandbox\n' \
      "$hd/root" "$hd/root/var/lib/pacman" "$hd/root/var/cache/pacman/pkg" "$hd/root/var/log/pacman.log" "$hd/gnupg" "$hd/hooks" >"$hd/pacman.conf"
    for b in rev-a main chain; do
      cat >"$pw/conf/$b.yaml" <<EOF
repo: $purl
branch: $b
hostname: bench-01
root: $hd/root
dbpath: $hd/root/var/lib/pacman
pacman_conf: $hd/pacman.conf
state_dir: $hd/state
trusted_keys: [$pw/keys/ops.pub]
lock_timeout: 5s
EOF
    done
    pass_ok() { # CONFIG: a pass that converges
      "$fleetctl" reconcile --config "$1" --json >"$out/pass.check.json" 2>"$out/pass.check.err" \
        || { cat "$out/pass.check.err" >&2; die "reconcile --config $1 failed"; }
      grep -q '"outcome": *"converged"' "$out/pass.check.json" || die "reconcile --config $1 did not converge: $(cat "$out/pass.check.json")"
    }
    cp -a "$hd" "$pw/snap/new"
    pass_ok "$pw/conf/rev-a.yaml"; cp -a "$hd" "$pw/snap/at-a"
    pass_ok "$pw/conf/main.yaml"; cp -a "$hd" "$pw/snap/at-b"
    pass_ok "$pw/conf/main.yaml" # and again: the no-op pass
    notes="+refs/notes/pacfleet:refs/notes/pacfleet"
    git init -q --bare "$fl/new"
    git --git-dir="$fl/new" config gc.auto 0
    cp -a "$fl/new" "$fl/at-a"; git --git-dir="$fl/at-a" fetch -q "$purl" +refs/heads/rev-a:refs/remotes/origin/rev-a "$notes"
    cp -a "$fl/at-a" "$fl/at-b"; git --git-dir="$fl/at-b" fetch -q "$purl" +refs/heads/main:refs/remotes/origin/main "$notes"
    cp -a "$fl/at-b" "$fl/m"
    fetch_main="git --git-dir=$fl/m fetch -q $purl +refs/heads/main:refs/remotes/origin/main $notes"
    fetch_chain="git --git-dir=$fl/m fetch -q $purl +refs/heads/chain:refs/remotes/origin/chain $notes"
    host_from() { echo "rm -rf $hd && cp -a $pw/snap/$1 $hd"; }
    floor_from() { echo "rm -rf $fl/m && cp -a $fl/$1 $fl/m"; }
    reconcile_="$fleetctl reconcile --config"
    queue "no-op pass ($n hosts)" "$(host_from at-b)" "$reconcile_ $pw/conf/main.yaml"
    queue "git fetch, nothing new ($n hosts)" "$(floor_from at-b)" "$fetch_main"
    queue "pass after a change, a..b ($n hosts)" "$(host_from at-a)" "$reconcile_ $pw/conf/main.yaml"
    queue "git fetch a..b ($n hosts)" "$(floor_from at-a)" "$fetch_main"
    queue "new host's first pass ($n hosts)" "$(host_from new)" "$reconcile_ $pw/conf/main.yaml"
    queue "git fetch into an empty mirror ($n hosts)" "$(floor_from new)" "$fetch_main"
    if [ "$k" -gt 0 ]; then
      # Correctness: the chain's tip is taken.
      eval "$(host_from at-b)"
      pass_ok "$pw/conf/chain.yaml"
      grep -q "\"commit\": *\"$(git -C "$pw/fleet" rev-parse chain)\"" "$out/pass.check.json" \
        || die "catching up did not reach the chain's tip: $(cat "$out/pass.check.json")"
      queue "catch up $k signed commits ($n hosts)" "$(host_from at-b)" "$reconcile_ $pw/conf/chain.yaml"
      queue "git fetch of those $k commits ($n hosts)" "$(floor_from at-b)" "$fetch_chain"
      queue "fleetctl sign --renew, $((k + 2)) notes ($n hosts)" "" \
        "$fleetctl sign --repo $pw/fleet --key $pw/keys/ops.key --renew chain >/dev/null 2>&1"
    fi
    measure "pass-$n" "--warmup 1 --min-runs 5 --max-runs 20"
    eval "$(host_from at-b)"
  done
  kill "$pass_daemon_pid" 2>/dev/null || true; pass_daemon_pid=
fi

# --- agent ------------------------------------------------------------------------------------
if want agent; then
  restore "$snap/fleet-0" "$fh"
  status=$fh/state/status.json
  "$fleetctl" agent --config "$hw/conf/agent.yaml" >"$out/agent.log" 2>&1 &
  agent_pid=$!
  rss() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$agent_pid/status"; }
  last='' done_passes=0 samples="1 2 5 10 25 50 100 200 500 1000"
  {
    echo "### agent ($passes passes, interval $interval)"
    echo
    echo "| after pass | VmRSS | RssAnon | RssFile | Pss | VmHWM (peak) |"
    echo "|---:|---:|---:|---:|---:|---:|"
  } >>"$summary"
  deadline=$(( SECONDS + passes * 30 + 60 ))
  while [ "$done_passes" -lt "$passes" ]; do
    kill -0 "$agent_pid" 2>/dev/null || { cat "$out/agent.log" >&2; die "the agent died"; }
    [ "$SECONDS" -lt "$deadline" ] || die "the agent made $done_passes passes in time; expected $passes"
    now=$(stat -c %Y.%y "$status" 2>/dev/null || true)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then
      last=$now; done_passes=$((done_passes + 1))
      grep -q '"outcome": *"\(converged\|applied\)"' "$status" || die "agent pass $done_passes: $(cat "$status")"
      if [[ " $samples $passes " == *" $done_passes "* ]]; then
        sleep 0.2 # idle: between passes
        pss=$(awk '$1 == "Pss:" {print $2}' "/proc/$agent_pid/smaps_rollup" 2>/dev/null || echo ?)
        echo "| $done_passes | $(rss VmRSS) KiB | $(rss RssAnon) KiB | $(rss RssFile) KiB | $pss KiB | $(rss VmHWM) KiB |" >>"$summary"
      fi
    fi
    sleep 0.05
  done
  kill -TERM "$agent_pid"
  code=0; wait "$agent_pid" || code=$?
  agent_pid=
  [ "$code" = 0 ] || die "the agent exited $code on SIGTERM"
  echo >>"$summary"
fi

# --- peers ------------------------------------------------------------------------------------
if want peers; then
  pw=$work/peers
  if [ ! -d "$pw/git/fleet" ]; then
    [ -n "$world" ] && die "$world has no peers world (peers/)"
    log "generating the peers world: $peer_pkgs packages of about $peer_size bytes"
    "$gen" host-world --dir "$pw" --installed 2 --apply "$peer_pkgs" --files 1 --random-bytes "$peer_size" >>"$out/generate.log"
  fi
  repo=$pw/repo/bench
  big=big-1-1-any.pkg.tar.zst
  [ -f "$pw/$big" ] && [ "$(stat -c %s "$pw/$big")" = $((big_mib << 20)) ] \
    || head -c $((big_mib << 20)) /dev/urandom >"$pw/$big"
  start_mirror() { # RATE VAR: VAR := its URL (not in a subshell: the cleanup kills it)
    local f; f=$(mktemp "$out/mirror.XXXX")
    "$mirror_bin" "$repo" --rate "$1" >"$f" 2>&1 &
    peer_pids+=($!)
    for _ in $(seq 100); do [ -s "$f" ] && break; sleep 0.05; done
    printf -v "$2" '%s' "$(head -1 "$f")"
  }
  if [ -n "$mirror" ]; then wan=$mirror fast=$mirror
  else start_mirror "$peer_rate" wan; start_mirror 0 fast; fi
  case $wan in http://*) ;; *) die "the counting mirror did not start: $wan" ;; esac
  pkg_bytes() { curl -s "$wan/_counts" | awk -F'\t' '$1 ~ /\.pkg\.tar/ && $1 !~ /\.sig$/ && $1 != "'"$big"'" {n += $2} END {print n + 0}'; }
  one_host=$(find "$repo" -name 'new*.pkg.tar.zst' -printf '%s\n' | awk '{n += $1} END {print n}')
  new_apps_p=$(find "$repo" -name 'newapp*.pkg.tar.zst' -printf '%f\n' | sort | sed 's/-1\.0-1-any\.pkg\.tar\.zst$//' | tr '\n' ' ')
  applied_p=$(find "$repo" -name 'new*.pkg.tar.zst' | wc -l)
  ports=(); for i in $(seq "$peer_hosts"); do ports+=($(( 30000 + RANDOM % 20000 ))); done
  pyaml() { # HOST BRANCH EXTRA
    local h=$pw/h/$1
    cat <<EOT
repo: $pw/git/fleet
branch: $2
hostname: $1
root: $h/root
dbpath: $h/root/var/lib/pacman
pacman_conf: $h/pacman.conf
state_dir: $h/state
trusted_keys: [$pw/keys/ops.pub]
lock_timeout: 60s
interval: 24h
$3
EOT
  }
  hname() { printf 'bench-%02d' "$1"; }
  peers_of() { # I: the peers line for host I
    local j list=()
    for j in $(seq "$peer_hosts"); do [ "$j" = "$1" ] || list+=("http://127.0.0.1:${ports[$((j - 1))]}"); done
    local IFS=,; echo "peers: {listen: 127.0.0.1:${ports[$(($1 - 1))]}, static: [${list[*]}]}"
  }
  mkdir -p "$pw/conf" "$pw/snap"
  for i in $(seq "$peer_hosts"); do
    n=$(hname "$i")
    pyaml "$n" base "" >"$pw/conf/$n-base.yaml"
    pyaml "$n" install "" >"$pw/conf/$n-alone.yaml"
    pyaml "$n" install "$(peers_of "$i")" >"$pw/conf/$n-peers.yaml"
    pyaml "$n" base "$(peers_of "$i")" >"$pw/conf/$n-agent.yaml"
    if [ ! -d "$pw/snap/$n" ]; then
      rm -rf "$pw/h/$n"; mkdir -p "$pw/h"; cp -a "$pw/hosts/fleet" "$pw/h/$n"
      sed -i "s|^Server = .*|Server = $wan|; s|$pw/hosts/fleet/|$pw/h/$n/|g" "$pw/h/$n/pacman.conf"
      find "$pw/h/$n/root/var/cache/pacman/pkg" -type f -delete
      "$fleetctl" reconcile --config "$pw/conf/$n-base.yaml" >>"$out/peers.setup.log" 2>&1 \
        || { cat "$out/peers.setup.log" >&2; die "$n: the first reconcile failed"; }
      cp -a "$pw/h/$n" "$pw/snap/$n"
    fi
    # The mirror's URL changes from run to run.
    sed -i "s|^Server = .*|Server = $wan|" "$pw/snap/$n/pacman.conf"
  done
  restore_all() { for i in $(seq "$peer_hosts"); do n=$(hname "$i"); rm -rf "$pw/h/$n"; cp -a "$pw/snap/$n" "$pw/h/$n"; done; sync; }
  site() { # SUFFIX: all hosts' reconcile at once; prints the wall seconds
    local i pids=() t0=$EPOCHREALTIME code=0
    for i in $(seq "$peer_hosts"); do
      n=$(hname "$i")
      "$fleetctl" reconcile --config "$pw/conf/$n-$1.yaml" >"$out/peers.$1.$n.log" 2>&1 &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || code=$?; done
    local t1=$EPOCHREALTIME
    [ "$code" = 0 ] || { cat "$out"/peers."$1".*.log >&2; die "a $1 reconcile failed"; }
    for i in $(seq "$peer_hosts"); do
      [ "$(pac "$pw/h/$(hname "$i")" -Qq 2>/dev/null | wc -l)" = $((applied_p + 2)) ] || die "$(hname "$i") did not converge ($1)"
    done
    python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1"
  }
  pac() { pacman --config "$1/pacman.conf" --root "$1/root" --dbpath "$1/root/var/lib/pacman" --noconfirm "${@:2}"; }

  # 1, 2: the site's change without peers, then with.
  log "peers: $peer_hosts hosts take $applied_p packages from upstream alone"
  restore_all
  b0=$(pkg_bytes); t_alone=$(site alone); up_alone=$(( $(pkg_bytes) - b0 ))
  log "peers: the same with peers"
  restore_all
  for i in $(seq "$peer_hosts"); do
    n=$(hname "$i"); touch -d 2000-01-01 "$pw/h/$n/state/status.json"
    "$fleetctl" agent --config "$pw/conf/$n-agent.yaml" >"$out/peers.agent.$n.log" 2>&1 &
    peer_pids+=($!)
  done
  for i in $(seq "$peer_hosts"); do # each serves, and its first pass (nothing new) is over
    n=$(hname "$i")
    for _ in $(seq 300); do
      [ "$(stat -c %Y "$pw/h/$n/state/status.json")" -gt 1000000000 ] && curl -s -o /dev/null "http://127.0.0.1:${ports[$((i - 1))]}/" && break
      sleep 0.1
    done
  done
  b0=$(pkg_bytes); t_peers=$(site peers); up_peers=$(( $(pkg_bytes) - b0 ))
  from_peers=$(cat "$out"/peers.peers.*.log | { grep -o 'from peers ([0-9]* files)' || true; } | { grep -o '[0-9]*' || true; } | awk '{n += $1} END {print n + 0}')

  # 4 (while the agents run): one big file from a peer agent, and from the unlimited mirror.
  cp "$pw/$big" "$pw/h/bench-01/root/var/cache/pacman/pkg/$big"
  ln -f "$pw/$big" "$repo/$big" 2>/dev/null || cp "$pw/$big" "$repo/$big"
  speed() { local best=0 s; for _ in 1 2 3; do s=$(curl -s -o /dev/null -w '%{speed_download}' "$1"); best=$(python3 -c 'import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))' "$best" "$s"); done; python3 -c 'import sys; print("%.0f" % (float(sys.argv[1]) / 1048576))' "$best"; }
  v_peer=$(speed "http://127.0.0.1:${ports[0]}/$big")
  v_raw=$(speed "$fast/$big")
  rm -f "$repo/$big"
  for p in "${peer_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${peer_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  peer_pids=()
  if [ -z "$mirror" ]; then start_mirror "$peer_rate" wan; fast=$wan; fi

  # 3: prefetch outside the window, the apply in it, against pacman -S from a warm cache; five
  # rounds on fresh copies of the host, the median of each.
  log "peers: prefetch, then the in-window apply (5 rounds)"
  h1=$pw/h/bench-01 hp=$pw/h/pacman
  pyaml bench-01 window "prefetch: true" >"$pw/conf/window.yaml"
  windows=() pacmans=()
  for round in 1 2 3 4 5; do
    rm -rf "$h1" "$hp"; cp -a "$pw/snap/bench-01" "$h1"; cp -a "$pw/snap/bench-01" "$hp"
    sed -i "s|^Server = .*|Server = $wan|" "$h1/pacman.conf"
    sed -i "s|^Server = .*|Server = $wan|; s|$h1/|$hp/|g" "$hp/pacman.conf"
    # The snapshot's database came from this very repository through another mirror port (a
    # mirror of the benchmark's, restarted): say it came from this one, as a host that synced
    # from its mirror before knows, so the in-window pass does not download it again in full.
    sed -i -E "s|\"http://127\.0\.0\.1:[0-9]+\"|\"$wan\"|" "$h1/root/var/lib/pacman/sync/.pacfleet-source"
    rm -f "$hp/root/var/lib/pacman/pacfleet.anchor"
    "$fleetctl" reconcile --config "$pw/conf/window.yaml" >"$out/peers.prefetch.log" 2>&1 || { cat "$out/peers.prefetch.log" >&2; die "the prefetch pass failed"; }
    grep -q 'ahead of the window' "$out/peers.prefetch.log" || { cat "$out/peers.prefetch.log" >&2; die "the prefetch pass downloaded nothing ahead"; }
    [ "$(pac "$h1" -Qq | wc -l)" = 2 ] || die "the prefetch pass applied the change"
    cp -a "$h1/root/var/cache/pacman/pkg/." "$hp/root/var/cache/pacman/pkg/"
    b0=$(pkg_bytes)
    in_window() {
      local t0=$EPOCHREALTIME
      "$fleetctl" reconcile --config "$pw/conf/window.yaml" --ignore-window >"$out/peers.window.log" 2>&1 || { cat "$out/peers.window.log" >&2; die "the in-window apply failed"; }
      windows+=("$(python3 -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$EPOCHREALTIME")")
      [ "$(pac "$h1" -Qq | wc -l)" = $((applied_p + 2)) ] || die "the in-window apply did not converge"
    }
    warm_pacman() {
      local t0=$EPOCHREALTIME
      # shellcheck disable=SC2086
      pac "$hp" -S $new_apps_p >"$out/peers.pacman.log" 2>&1 || { cat "$out/peers.pacman.log" >&2; die "pacman -S failed"; }
      pacmans+=("$(python3 -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$EPOCHREALTIME")")
    }
    # Each starts with the disk idle (the writeback of the one before done), and which goes
    # first alternates: on this machine's virtual disk the first after a copy is the slower.
    settle() { sync; [ "$smoke" = 1 ] || sleep 2; }
    if [ $((round % 2)) = 1 ]; then
      settle; in_window; settle; warm_pacman
    else
      settle; warm_pacman; settle; in_window
    fi
    [ "$(pkg_bytes)" = "$b0" ] || die "the in-window apply or pacman -S downloaded package files"
  done
  median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
  t_window=$(median "${windows[@]}") t_pacman=$(median "${pacmans[@]}")

  {
    echo "### peers ($peer_hosts hosts, $applied_p packages, $((one_host / 1048576)) MiB a host; mirror $([ "$peer_rate" = 0 ] && echo unlimited || echo "$((peer_rate / 1048576)) MiB/s shared")$([ "$smoke" = 1 ] && echo '; smoke: not measurements'))"
    echo
    echo "| figure | without peers | with peers | ratio / target |"
    echo "|:---|---:|---:|:---|"
    echo "| upstream package bytes, whole site | $up_alone | $up_peers | with = $(ratio "$up_peers" "$one_host") × one host's $one_host (target ≤ 1.1) |"
    echo "| wall time, whole site (all started together) | $t_alone s | $t_peers s | $(ratio "$t_peers" "$t_alone") |"
    echo "| files taken from peers (all hosts) | 0 | $from_peers | of $((peer_hosts * applied_p)) |"
    echo "| in-window apply after prefetch vs \`pacman -S\` warm cache (median of 5) | $t_pacman s (pacman) | $t_window s (fleetctl) | $(ratio "$t_window" "$t_pacman") (target ≤ 1.1) |"
    echo "| $big_mib MiB file: mirror, no rate limit vs peer agent (curl, best of 3) | $v_raw MiB/s | $v_peer MiB/s | $(ratio "$v_peer" "$v_raw") |"
    echo
  } >>"$summary"
fi

log "done: $summary"
cat "$summary"
