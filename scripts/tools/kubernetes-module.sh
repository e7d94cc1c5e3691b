# Sourced (after cache.sh, tool_cache_begin and tool_go_build_env) by the tool scripts that build
# commands of k8s.io/kubernetes at $ver (KUBERNETES_VERSION) from the Go module proxy:
# kube-apiserver.sh and kube-node.sh. Each builds in its own wrapper module ($root/src-$ver, so
# that both may run side by side); the Go module and build caches are shared.
#
# k8s.io/kubernetes's go.mod requires every k8s.io/<staging> module at v0.0.0 and replaces it
# with ./staging/src/k8s.io/<name>, which the module zip does not contain. The wrapper module
# replaces each of them with the published k8s.io/<name> v0.<minor>.<patch> (the same code,
# published from staging at the release tag). The version is stamped with the ldflags of
# hack/lib/version.sh. See docs/toolchain/kubernetes.md.
#
#   k8s_version              checks $ver; sets major minor patch, mod (k8s.io/kubernetes),
#                            modver (v1.MINOR.PATCH) and stagingver (v0.MINOR.PATCH)
#   k8s_wrapper_module SRC CMD...
#                            writes (or keeps, if up to date) the wrapper module in SRC whose
#                            tools.go imports $mod/cmd/CMD for each CMD, and runs go mod tidy
#   k8s_ldflags SRC          sets ldflags (stripped, version stamped)
#   k8s_build CMD COLD       builds $mod/cmd/CMD of the wrapper module ($src) into $tmp/bin/CMD
#                            (cache.sh's tool_stage_begin and tool_go_build); COLD is the cold
#                            build time for the progress line (e.g. "5-15 minutes")
#   k8s_install COLD CMD...  all of the above for a tool script: builds each $mod/cmd/CMD in
#                            the tool's own wrapper module and installs them; COLD is the first
#                            command's cold build time (the others mostly reuse its packages)
#   k8s_check_versions BINDIR CMD...
#                            each BINDIR/CMD must report $modver: `CMD --version` prints exactly
#                            "Kubernetes $modver"; kubectl's `version --client` names it as the
#                            "Client Version"

k8s_version() {
  IFS=. read -r major minor patch <<<"$ver"
  if [[ "$major" != 1 || -z "$minor" || -z "$patch" ]]; then
    log "KUBERNETES_VERSION must look like 1.MINOR.PATCH (got $ver)"
    exit 1
  fi
  mod=k8s.io/kubernetes
  modver="v$ver"
  stagingver="v0.$minor.$patch"
}

k8s_wrapper_module() {
  local src="$1" cmd m upstream_dir upjson upgo tools
  shift
  tools="//go:build tools

package tools

import ("
  for cmd in "$@"; do tools+="
	_ \"$mod/cmd/$cmd\""; done
  tools+="
)"
  mkdir -p "$src"
  if [[ -f "$src/go.mod" && "$(cat "$src/.modver" 2>/dev/null)" == "$modver" &&
    "$(cat "$src/tools.go" 2>/dev/null)" == "$tools" ]]; then
    return 0
  fi
  log "resolving $mod@$modver on the Go module proxy"
  upstream_dir="$(tool_go_download "$src" "$mod@$modver")"
  upjson="$(go mod edit -json "$upstream_dir/go.mod")"
  upgo="$(jq -r .Go <<<"$upjson")"
  # Directory replaces (./staging/src/k8s.io/<name>) -> published k8s.io/<name> at v0.MINOR.PATCH.
  local staging wanted=()
  mapfile -t staging < <(jq -r '(.Replace // [])[] | select(.New.Version == null) | .Old.Path' <<<"$upjson")
  # Only the staging modules the build needs must exist; sample-* are not published for every release.
  for m in "${staging[@]}"; do
    case "$m" in k8s.io/sample-*) continue ;; esac
    wanted+=("$m")
  done
  log "writing wrapper module in $src (${#wanted[@]} staging modules at $stagingver)"
  rm -f "$src/go.mod" "$src/go.sum" "$src/.modver" "$src/tools.go"
  {
    echo "module agentd.local/tools/kubernetes-build"
    echo
    echo "go $upgo"
    jq -r '(.GoDebug // [])[] | "godebug \(.Key)=\(.Value)"' <<<"$upjson"
    echo
    echo "require ("
    echo "	$mod $modver"
    for m in "${wanted[@]}"; do echo "	$m $stagingver"; done
    echo ")"
    echo
    echo "replace ("
    for m in "${wanted[@]}"; do echo "	$m => $m $stagingver"; done
    echo ")"
  } >"$src/go.mod"
  # Module-to-module replace/exclude directives of upstream, if any.
  tool_go_copy_replaces "$upstream_dir/go.mod" "$src"
  echo "$tools" >"$src/tools.go"
  log "resolving dependencies (go mod tidy; downloads a few hundred MB on a cold module cache)"
  (cd "$src" && go mod tidy >&2)
  echo "$modver" >"$src/.modver"
}

k8s_ldflags() {
  local src="$1" builddate pkg
  # Like hack/lib/version.sh. The proxy does not tell the commit; the build date is the tag's time.
  builddate="$(cd "$src" && go list -m -json "$mod" | jq -r '.Time // empty')"
  builddate="${builddate:-1970-01-01T00:00:00Z}"
  ldflags="-s -w"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$modver"
    ldflags+=" -X $pkg.gitMajor=$major"
    ldflags+=" -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitCommit=$mod@$modver"
    ldflags+=" -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=$builddate"
  done
}

k8s_build() {
  local cmd="$1" cold="$2"
  log "building $cmd $ver (a cold build takes $cold on 2 cores)"
  tool_go_build "$cmd" "$mod/cmd/$cmd" -ldflags "$ldflags"
}

k8s_check_versions() {
  local dir="$1" cmd got
  shift
  for cmd in "$@"; do
    if [[ "$cmd" == kubectl ]]; then
      got="$("$dir/$cmd" version --client 2>&1)"
      if [[ "$got" != *"Client Version: $modver"* ]]; then
        log "kubectl version --client reports '$got', expected 'Client Version: $modver'"
        exit 1
      fi
    else
      got="$("$dir/$cmd" --version 2>&1)"
      if [[ "$got" != "Kubernetes $modver" ]]; then
        log "$cmd --version reports '$got', expected 'Kubernetes $modver'"
        exit 1
      fi
    fi
  done
}

k8s_install() {
  local cold="$1" cmd
  shift
  k8s_version
  tool_cache_lock
  tool_go_build_env
  # The tool's own wrapper module (never another tool's): scripts/setup.ts may run both side by side.
  src="$root/src-$ver"
  k8s_wrapper_module "$src" "$@"
  tool_stage_begin
  k8s_ldflags "$src"
  # One binary at a time: each go build already uses $gobuildp jobs.
  for cmd in "$@"; do
    k8s_build "$cmd" "$cold"
    cold="about a minute more"
  done
  k8s_check_versions "$tmp/bin" "$@"
  tool_stage_install
}
