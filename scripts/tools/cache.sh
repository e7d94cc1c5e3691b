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
