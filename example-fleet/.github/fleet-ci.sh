#!/usr/bin/env bash
# The steps of .github/workflows/fleet.yaml, one subcommand each, so that what CI runs is this
# file and nothing inline (pacfleet's tests run it against a scripted pull request):
#
#   prepare   choose how fleetctl is installed (method=path|pacman|source in $GITHUB_OUTPUT),
#             and for a build from source the cache key (key=…): the revision and the
#             container's pacman, whose libalpm fleetctl links (libalpm.so.16 today)
#   install   install fleetctl, and jq for `comment`, in the first way that applies:
#               1. fleetctl is already on PATH (a container image of your own): use it;
#               2. PACFLEET_PACMAN_SERVER is set: the pacfleet package from that pacman
#                  repository, as [pacfleet] in pacman.conf, signed by the key in the file
#                  PACFLEET_PACMAN_KEY (the package depends on the pacman release whose libalpm it links);
#               3. PACFLEET_GIT and PACFLEET_REV are set: cargo install of that commit, into
#                  ~/.cargo/bin (the workflow caches it), with LTO off;
#             else it fails, naming these settings.
#   validate  fleetctl validate .
#   diff      fleetctl diff "origin/$GITHUB_BASE_REF...HEAD" --format markdown, what the pull
#             request changes since it forked, into the job summary and a file for `comment`;
#             fails only when fleetctl does (exit 2: a side is not a valid fleet)
#   comment   for a pull request from this repository, that diff as one comment on it, created
#             on the first run and updated on every later one (found by its first line, the
#             marker below); for one from a fork (whose token is read-only), a line in the job
#             summary saying why there is no comment
#
# Settings are the job's env: in the workflow (not repository variables: GitHub does not pass
# those to pull requests from forks). GitHub Actions sets GITHUB_BASE_REF, GITHUB_STEP_SUMMARY,
# GITHUB_OUTPUT, GITHUB_PATH, GITHUB_EVENT_PATH, GITHUB_REPOSITORY, GITHUB_API_URL,
# GITHUB_SERVER_URL, GITHUB_RUN_ID and RUNNER_TEMP; the comment step's env: gives GITHUB_TOKEN.
set -euo pipefail

MARKER='<!-- pacfleet-diff -->'
# GitHub refuses a comment over 65536 characters, and a step summary over 1 MiB.
COMMENT_LIMIT=60000
SUMMARY_LIMIT=1000000

log() { printf 'fleet-ci: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 2
}
need() {
  local v
  for v in "$@"; do
    [ -n "${!v:-}" ] || die "$v is not set (GitHub Actions sets it on a pull_request event)"
  done
}
summary() { printf '%s\n' "$@" >>"$GITHUB_STEP_SUMMARY"; }
diff_file() { printf '%s/pacfleet-diff.md' "${RUNNER_TEMP:-${TMPDIR:-/tmp}}"; }
cargo_bin() { printf '%s/bin' "${CARGO_HOME:-$HOME/.cargo}"; }

# Prints the lines of $1 that fit in $2 bytes; exit status 1 if some did not.
fit() {
  if [ "$(wc -c <"$1")" -le "$2" ]; then
    cat "$1"
  else
    head -c "$2" "$1" | sed '$d' # the last line may be cut in the middle: drop it
    return 1
  fi
}

method() {
  if command -v fleetctl >/dev/null 2>&1; then
    echo path
  elif [ -n "${PACFLEET_PACMAN_SERVER:-}" ]; then
    [ -n "${PACFLEET_PACMAN_KEY:-}" ] ||
      die "PACFLEET_PACMAN_SERVER is set but PACFLEET_PACMAN_KEY is not: set it to the file in this repository that holds the armored public key signing the pacfleet package"
    echo pacman
  elif [ -n "${PACFLEET_GIT:-}" ] || [ -n "${PACFLEET_REV:-}" ]; then
    [ -n "${PACFLEET_GIT:-}" ] || die "PACFLEET_REV is set but PACFLEET_GIT is not: set it to a git URL of pacfleet"
    [ -n "${PACFLEET_REV:-}" ] || die "PACFLEET_GIT is set but PACFLEET_REV is not: set it to the commit id of pacfleet to build"
    echo source
  else
    die "cannot install fleetctl: it is not on PATH, and neither PACFLEET_PACMAN_SERVER (a pacman repository with the pacfleet package, with PACFLEET_PACMAN_KEY) nor PACFLEET_GIT and PACFLEET_REV (a git URL of pacfleet and the commit to build) is set; set them in the env: of .github/workflows/fleet.yaml"
  fi
}

cmd_prepare() {
  need GITHUB_OUTPUT
  local m
  m=$(method)
  echo "method=$m" >>"$GITHUB_OUTPUT"
  if [ "$m" = source ]; then
    local pacman_version
    pacman_version=$(pacman -Q pacman | cut -d' ' -f2)
    echo "key=fleetctl-$(uname -m)-pacman-$pacman_version-$PACFLEET_REV" >>"$GITHUB_OUTPUT"
  fi
  log "fleetctl: install method $m"
}

need_jq() {
  command -v jq >/dev/null 2>&1 && return 0
  command -v pacman >/dev/null 2>&1 || die "jq is needed (to read the event and post the comment), and there is no pacman to install it"
  pacman -S --noconfirm --needed jq
}

install_from_pacman() {
  local conf=${PACMAN_CONF:-/etc/pacman.conf} key fprs fpr
  key=$PACFLEET_PACMAN_KEY
  [ -r "$key" ] || die "PACFLEET_PACMAN_KEY: cannot read $key (a path in this repository)"
  # The primary key of every certificate in the file (not its subkeys).
  fprs=$(gpg --batch --with-colons --show-keys "$key" | awk -F: '/^pub:/ {p = 1} /^fpr:/ && p {print $10; p = 0}')
  [ -n "$fprs" ] || die "PACFLEET_PACMAN_KEY: no public key in $key"
  pacman-key --init
  pacman-key --add "$key"
  for fpr in $fprs; do
    pacman-key --lsign-key "$fpr"
  done
  if ! grep -q '^\[pacfleet\]' "$conf"; then
    printf '\n[pacfleet]\nServer = %s\n' "$PACFLEET_PACMAN_SERVER" >>"$conf"
  fi
  # -Syu, not -Sy: never a partial upgrade, and pacman checks the package's libalpm dependency
  # against what is installed.
  pacman -Syu --noconfirm --needed pacfleet jq
}

install_from_source() {
  local bin
  bin=$(cargo_bin)
  if [ -x "$bin/fleetctl" ] && "$bin/fleetctl" --version >/dev/null 2>&1; then
    log "using $bin/fleetctl from the cache ($("$bin/fleetctl" --version))"
    need_jq
  else
    [ ! -e "$bin/fleetctl" ] || log "$bin/fleetctl does not run here: building it again"
    pacman -S --noconfirm --needed rust base-devel cmake jq
    # LTO off and 16 codegen units whatever the revision's release profile says (older pacfleet
    # revisions had fat LTO there): CI only runs validate and diff, and a cache miss should
    # not pay for a smaller, faster agent.
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
      cargo install --locked --force --git "$PACFLEET_GIT" --rev "$PACFLEET_REV" --bin fleetctl
  fi
  echo "$bin" >>"$GITHUB_PATH"
}

cmd_install() {
  need GITHUB_PATH
  local m
  m=$(method)
  case $m in
    path)
      log "using $(command -v fleetctl) ($(fleetctl --version))"
      need_jq
      ;;
    pacman) install_from_pacman ;;
    source) install_from_source ;;
  esac
  command -v curl >/dev/null 2>&1 || die "curl is needed to post the comment"
}

cmd_validate() {
  need GITHUB_STEP_SUMMARY
  local rc=0
  fleetctl validate . || rc=$?
  if [ "$rc" -ne 0 ]; then
    summary "**fleetctl validate failed** (exit $rc): the problems are in the Validate step's log."
  fi
  return "$rc"
}

cmd_diff() {
  need GITHUB_BASE_REF GITHUB_STEP_SUMMARY
  local out rc=0 cut=0
  out=$(diff_file)
  # A...B: the merge base vs HEAD, what the pull request changes. HEAD is GitHub's merge of the
  # pull request into its base; origin/$GITHUB_BASE_REF may have moved on since (a re-run), and
  # A..B would then show the pull request undoing what was merged after it.
  fleetctl diff "origin/$GITHUB_BASE_REF...HEAD" --format markdown >"$out" || rc=$?
  # 0: no change, 1: changes (fleetctl's markdown says which), 2: error.
  if [ "$rc" -ge 2 ]; then
    summary "**fleetctl diff failed** (exit $rc): the errors are in the diff step's log."
    return "$rc"
  fi
  fit "$out" "$SUMMARY_LIMIT" >>"$GITHUB_STEP_SUMMARY" || cut=1
  if [ "$cut" -eq 1 ]; then
    summary "" "… cut at $SUMMARY_LIMIT bytes: run \`fleetctl diff origin/$GITHUB_BASE_REF...HEAD\` for the rest."
  fi
}

api() { # METHOD URL [curl arguments]: the response body on stdout
  local method=$1 url=$2
  shift 2
  curl -sS --fail-with-body -X "$method" \
    -H "Authorization: Bearer $GITHUB_TOKEN" \
    -H 'Accept: application/vnd.github+json' \
    -H 'X-GitHub-Api-Version: 2022-11-28' \
    "$@" "$url"
}

cmd_comment() {
  need GITHUB_EVENT_PATH GITHUB_REPOSITORY GITHUB_STEP_SUMMARY
  local head_repo number
  head_repo=$(jq -r '.pull_request.head.repo.full_name // ""' "$GITHUB_EVENT_PATH")
  number=$(jq -r '.pull_request.number // ""' "$GITHUB_EVENT_PATH")
  [ -n "$number" ] || die "$GITHUB_EVENT_PATH is not a pull_request event"
  if [ "$head_repo" != "$GITHUB_REPOSITORY" ]; then
    summary "" "The diff is not posted as a comment: this pull request comes from ${head_repo:-a deleted fork}, not $GITHUB_REPOSITORY, and GitHub gives its workflow a read-only token. The diff above is what it changes."
    log "pull request from ${head_repo:-a deleted fork}: no comment (read-only token); the diff is in the job summary"
    return 0
  fi
  need GITHUB_TOKEN GITHUB_API_URL
  local diff repo_api body payload page=1 id="" count resp cut=0
  diff=$(diff_file)
  [ -r "$diff" ] || die "no diff at $diff: run the diff step first"
  repo_api="$GITHUB_API_URL/repos/$GITHUB_REPOSITORY"
  body="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/pacfleet-comment.md"
  payload="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/pacfleet-comment.json"
  {
    printf '%s\n' "$MARKER"
    fit "$diff" "$COMMENT_LIMIT" || cut=1
    if [ "$cut" -eq 1 ]; then
      printf '\n… cut at %s bytes: the whole diff is in the [job summary](%s/%s/actions/runs/%s).\n' \
        "$COMMENT_LIMIT" "${GITHUB_SERVER_URL:-https://github.com}" "$GITHUB_REPOSITORY" "${GITHUB_RUN_ID:-}"
    fi
  } >"$body"
  jq -n --rawfile body "$body" '{body: $body}' >"$payload"

  # The comment this workflow posted before: a bot's comment starting with the marker. At most
  # 100 pages of 100 comments.
  while [ "$page" -le 100 ]; do
    resp=$(api GET "$repo_api/issues/$number/comments?per_page=100&page=$page") ||
      die "listing the comments of pull request #$number failed: $resp"
    id=$(printf '%s' "$resp" | jq -r --arg m "$MARKER" \
      'first(.[] | select(.user.type == "Bot" and ((.body // "") | startswith($m))) | .id) // empty')
    count=$(printf '%s' "$resp" | jq 'length')
    if [ -n "$id" ] || [ "$count" -lt 100 ]; then
      break
    fi
    page=$((page + 1))
  done

  if [ -n "$id" ]; then
    resp=$(api PATCH "$repo_api/issues/comments/$id" -H 'Content-Type: application/json' --data-binary "@$payload") ||
      die "updating comment $id failed: $resp"
  else
    resp=$(api POST "$repo_api/issues/$number/comments" -H 'Content-Type: application/json' --data-binary "@$payload") ||
      die "posting the comment on pull request #$number failed: $resp"
  fi
  log "the diff is on the pull request: $(printf '%s' "$resp" | jq -r '.html_url // .id')"
}

case ${1:-} in
  prepare | install | validate | diff | comment)
    sub=$1
    shift
    "cmd_$sub" "$@"
    ;;
  *)
    echo "usage: $0 prepare|install|validate|diff|comment" >&2
    exit 2
    ;;
esac
