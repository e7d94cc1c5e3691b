#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kubectl from the Go module proxy and installs
# them into $AGENTD_TOOLS/kubernetes/$KUBERNETES_VERSION/bin/
# (scripts/kube-local.sh runs them against a local etcd: an API server without nodes; the
# controller manager finalizes deleted namespaces, collects garbage and creates service accounts).
#
# k8s.io/kubernetes's go.mod requires every k8s.io/<staging> module at v0.0.0 and replaces it
# with ./staging/src/k8s.io/<name>, which the module zip does not contain. The wrapper module
# replaces each of them with the published k8s.io/<name> v0.<minor>.<patch> (the same code,
# published from staging at the release tag). The version is stamped with the ldflags of
# hack/lib/version.sh. See docs/toolchain/kubernetes.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool_cache_begin kube-apiserver KUBERNETES_VERSION kubernetes

IFS=. read -r major minor patch <<<"$ver"
if [[ "$major" != 1 || -z "$minor" || -z "$patch" ]]; then
  log "KUBERNETES_VERSION must look like 1.MINOR.PATCH (got $ver)"
  exit 1
fi
modver="v$ver"
stagingver="v0.$minor.$patch"
mod=k8s.io/kubernetes

tool_cache_lock

tool_go_build_env

src="$root/src-$ver"
mkdir -p "$src"
if [[ ! -f "$src/go.mod" || "$(cat "$src/.modver" 2>/dev/null)" != "$modver" ]]; then
  log "resolving $mod@$modver on the Go module proxy"
  upstream_dir="$(tool_go_download "$src" "$mod@$modver")"
  upjson="$(go mod edit -json "$upstream_dir/go.mod")"
  upgo="$(jq -r .Go <<<"$upjson")"
  # Directory replaces (./staging/src/k8s.io/<name>) -> published k8s.io/<name> at v0.MINOR.PATCH.
  mapfile -t staging < <(jq -r '(.Replace // [])[] | select(.New.Version == null) | .Old.Path' <<<"$upjson")
  # Only the staging modules the build needs must exist; sample-* are not published for every release.
  wanted=()
  for m in "${staging[@]}"; do
    case "$m" in k8s.io/sample-*) continue ;; esac
    wanted+=("$m")
  done
  log "writing wrapper module in $src (${#wanted[@]} staging modules at $stagingver)"
  rm -f "$src/go.mod" "$src/go.sum" "$src/.modver"
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
  cat >"$src/tools.go" <<EOF
//go:build tools

package tools

import (
	_ "$mod/cmd/kube-apiserver"
	_ "$mod/cmd/kube-controller-manager"
	_ "$mod/cmd/kubectl"
)
EOF
  log "resolving dependencies (go mod tidy; downloads a few hundred MB on a cold module cache)"
  (cd "$src" && go mod tidy >&2)
  echo "$modver" >"$src/.modver"
fi

tmp="$(mktemp -d "$root/.tmp-$ver.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

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

for cmd in kube-apiserver kube-controller-manager kubectl; do
  log "building $cmd $ver ($mod/cmd/$cmd@$modver; a cold build takes 10-30 minutes on 2 cores)"
  start=$SECONDS
  (cd "$src" && go build -p "$gobuildp" -trimpath -ldflags "$ldflags" -o "$tmp/bin/$cmd" "$mod/cmd/$cmd")
  log "built $cmd in $((SECONDS - start))s"
done

got="$("$tmp/bin/kube-apiserver" --version 2>&1)"
if [[ "$got" != "Kubernetes $modver" ]]; then
  log "kube-apiserver --version reports '$got', expected 'Kubernetes $modver'"
  exit 1
fi
got="$("$tmp/bin/kube-controller-manager" --version 2>&1)"
if [[ "$got" != "Kubernetes $modver" ]]; then
  log "kube-controller-manager --version reports '$got', expected 'Kubernetes $modver'"
  exit 1
fi
got="$("$tmp/bin/kubectl" version --client 2>&1)"
if [[ "$got" != *"Client Version: $modver"* ]]; then
  log "kubectl version --client reports '$got', expected 'Client Version: $modver'"
  exit 1
fi

rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
touch "$dest/.complete"
log "installed $dest/bin/{kube-apiserver,kube-controller-manager,kubectl}"
