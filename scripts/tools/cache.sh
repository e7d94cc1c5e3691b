# Sourced by the tool scripts that install into $AGENTD_TOOLS/<dir>/<version> and mark a finished
# install with a .complete file. `tool_cache_begin TOOL VERSION_VAR [DIR]` sets tool, ver, root
# (AGENTD_TOOLS/DIR, DIR defaulting to TOOL) and dest (root/VERSION), defines log(), and ends the
# script with "TOOL VERSION: cached" when the install is complete. VERSION_VAR names the variable
# holding the version (e.g. ENVOY_VERSION): an exported value wins, else scripts/versions.env. `tool_cache_lock` takes the
# per-tool lock (fd 9, held until the script exits) and checks again: another process may have
# finished the install while this one waited.

tool_cache_begin() {
  tool="$1"
  if [[ -z "${!2:-}" ]]; then
    # shellcheck source=../versions.env
    source "$(dirname "${BASH_SOURCE[0]}")/../versions.env"
  fi
  ver="${!2}"
  AGENTD_TOOLS="${AGENTD_TOOLS:-$HOME/.cache/agentd/tools}"
  root="$AGENTD_TOOLS/${3:-$1}"
  dest="$root/$ver"
  tool_cache_exit_if_complete
}

tool_cache_exit_if_complete() {
  if [[ -e "$dest/.complete" ]]; then
    echo "$tool $ver: cached"
    exit 0
  fi
}

tool_cache_lock() {
  mkdir -p "$root"
  exec 9>"$root/.lock"
  flock 9
  tool_cache_exit_if_complete
}

# For tools built from Go modules: Go must be on PATH; static binaries, module-mode builds, and
# $gobuildp parallel compile jobs (AGENTD_GO_BUILD_P, default 2: the machines have 2 cores).
tool_go_build_env() {
  if ! command -v go >/dev/null; then
    log "building $tool needs Go (>= 1.26)"
    exit 1
  fi
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  gobuildp="${AGENTD_GO_BUILD_P:-2}"
}

log() { echo "[setup:${tool:-tools}] $*" >&2; }

# For wrapper-module builds: downloads MOD@VERSION from the Go module proxy (run in the wrapper's
# directory DIR) and prints where it landed in the module cache; logs the proxy's error otherwise.
tool_go_download() {
  local dir="$1" modver="$2" dl
  if ! dl="$(cd "$dir" && go mod download -json "$modver")"; then
    log "the Go module proxy did not provide $modver: $(jq -r .Error <<<"$dl" 2>/dev/null)"
    return 1
  fi
  jq -r .Dir <<<"$dl"
}

# Copies upstream's module-to-module replace and exclude directives (they take effect only in the
# main module) into the wrapper module in SRC. Directory replaces are not copied: a wrapper
# requires those modules at their published versions instead.
tool_go_copy_replaces() {
  local upstream_gomod="$1" src="$2" upjson
  upjson="$(go mod edit -json "$upstream_gomod")"
  jq -r '
    (.Replace // [])[] | select(.New.Version != null) |
      "-replace=\(.Old.Path)\(if .Old.Version then "@"+.Old.Version else "" end)=\(.New.Path)@\(.New.Version)"' \
    <<<"$upjson" >"$src/.replace-args"
  jq -r '(.Exclude // [])[] | "-exclude=\(.Path)@\(.Version)"' <<<"$upjson" >>"$src/.replace-args"
  if [[ -s "$src/.replace-args" ]]; then
    (cd "$src" && xargs go mod edit <"$src/.replace-args")
  fi
}

# For tools from Debian's packages (root only): apt-get install PACKAGE... with every service
# start forbidden for the duration (no init system here, and whoever needs a server starts its own).
tool_apt_install() {
  if [[ "$(id -u)" != 0 ]]; then
    log "installing $* needs root (apt-get)"
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get update"
  apt-get update -qq >&2
  local own_policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  log "apt-get install $*"
  local status=0
  apt-get install -y -qq --no-install-recommends "$@" >&2 || status=$?
  [[ -n "$own_policy" ]] && rm -f /usr/sbin/policy-rc.d
  return "$status"
}
