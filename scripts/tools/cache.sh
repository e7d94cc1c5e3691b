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

# For tools built from the packages of one upstream Go module: `tool_go_wrapper MOD MODVER PKG...`
# writes a wrapper module in src=$root/src-$ver that requires MOD at MODVER and imports each main
# package PKG (tools.go, build tag `tools`), with upstream's go and godebug lines and its
# module-to-module replace/exclude directives (all of them take effect only in the main module).
# It also requires everything upstream's go.mod requires, at upstream's versions, so that its module
# graph is the one upstream builds with: the graph is pruned below a dependency's own requirements,
# and an upstream go.mod that is not tidy (kube-router's: it lists a module whose packages need
# another module it does not list) would otherwise leave `go mod tidy` to add the missing module
# at its latest version, upgrading shared dependencies. Fails if tidy changes any version of that
# build list (or adds a module from outside it), or if MOD resolved to another version.
# Done again only when MODVER or the package list changes (recorded in $src/.modver). Not for an
# upstream with directory replaces (sibling modules in its repository: see etcd.sh).
tool_go_wrapper() {
  local mod="$1" modver="$2" key upstream_dir upjson upgo buildlist got drift p
  shift 2
  key="$(printf '%s\n' "$modver" "$@")"
  src="$root/src-$ver"
  mkdir -p "$src"
  if [[ -f "$src/go.mod" && "$(cat "$src/.modver" 2>/dev/null)" == "$key" ]]; then
    return 0
  fi
  log "resolving $mod@$modver on the Go module proxy"
  upstream_dir="$(tool_go_download "$src" "$mod@$modver")"
  upjson="$(go mod edit -json "$upstream_dir/go.mod")"
  if jq -e '(.Replace // []) | any(.New.Version == null)' <<<"$upjson" >/dev/null; then
    log "$mod@$modver replaces modules with directories; a wrapper module cannot copy those"
    return 1
  fi
  upgo="$(jq -r '.Go // empty' <<<"$upjson")"
  log "writing wrapper module in $src"
  rm -f "$src/go.mod" "$src/go.sum" "$src/.modver"
  {
    echo "module agentd.local/tools/$tool-build"
    echo
    [[ -n "$upgo" ]] && echo "go $upgo"
    jq -r '(.GoDebug // [])[] | "godebug \(.Key)=\(.Value)"' <<<"$upjson"
    echo
    echo "require ("
    echo "	$mod $modver"
    jq -r '(.Require // [])[] | "\t\(.Path) \(.Version)"' <<<"$upjson"
    echo ")"
  } >"$src/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for p in "$@"; do printf '\t_ "%s"\n' "$p"; done
    printf ')\n'
  } >"$src/tools.go"
  tool_go_copy_replaces "$upstream_dir/go.mod" "$src"
  buildlist="$(cd "$src" && go list -m -json all | jq -s 'map({(.Path): .Version}) | add')"
  log "resolving dependencies (go mod tidy)"
  (cd "$src" && go mod tidy >&2)
  got="$(cd "$src" && go list -m -f '{{.Version}}' "$mod")"
  if [[ "$got" != "$modver" ]]; then
    log "$mod resolved to $got, expected $modver"
    return 1
  fi
  drift="$(jq -rn --argjson b "$buildlist" --argjson wr "$(go mod edit -json "$src/go.mod")" '
    ($wr.Require // [])[] | select($b[.Path] != .Version)
    | "  \(.Path) \($b[.Path] // "(not in the build list)") -> \(.Version)"')"
  if [[ -n "$drift" ]]; then
    log "go mod tidy changed the build list of $mod@$modver:"$'\n'"$drift"
    return 1
  fi
  echo "$key" >"$src/.modver"
}

# The install is staged in tmp=$root/.tmp-$ver.XXXXXX (bin/ inside; removed if the script fails)
# and moved to $dest, marked complete, by tool_stage_install: a half-built install is never found.
tool_stage_begin() {
  tmp="$(mktemp -d "$root/.tmp-$ver.XXXXXX")"
  chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/bin"
}

tool_stage_install() {
  rm -rf "$dest"
  mv "$tmp" "$dest"
  trap - EXIT
  touch "$dest/.complete"
  log "installed $(cd "$dest/bin" && printf '%s ' *)in $dest/bin"
}

# `tool_go_build NAME PKG [GO BUILD FLAGS...]`: builds the main package PKG of the wrapper module
# ($src) into $tmp/bin/NAME, one package at a time with $gobuildp compile jobs, and logs the time.
tool_go_build() {
  local name="$1" pkg="$2" start=$SECONDS
  shift 2
  log "building $name ($pkg)"
  (cd "$src" && go build -p "$gobuildp" -trimpath "$@" -o "$tmp/bin/$name" "$pkg")
  log "built $name in $((SECONDS - start))s"
}

# `tool_apt_ensure COMMAND [PACKAGE]`: a run-time dependency from Debian (PACKAGE defaults to
# COMMAND), installed unless COMMAND is found on PATH or in /usr/sbin or /sbin (which a non-login
# shell may not have on PATH).
tool_apt_ensure() {
  local cmd="$1" pkg="${2:-$1}" d
  if command -v "$cmd" >/dev/null 2>&1; then
    return 0
  fi
  for d in /usr/sbin /sbin; do
    [[ -x "$d/$cmd" ]] && return 0
  done
  log "$cmd not found: installing Debian's $pkg"
  tool_apt_install "$pkg"
}
