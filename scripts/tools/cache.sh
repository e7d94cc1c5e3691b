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

log() { echo "[setup:${tool:-tools}] $*" >&2; }
