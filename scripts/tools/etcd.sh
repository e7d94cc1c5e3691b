#!/usr/bin/env bash
# Builds etcd from the Go module proxy and installs it into $AGENTD_TOOLS/etcd/$ETCD_VERSION/bin/etcd
# (used by scripts/kube-local.sh as the storage of a local kube-apiserver).
#
# The etcd main package is go.etcd.io/etcd/server/v3 (server/main.go). Its go.mod replaces the
# sibling modules api, client/pkg, client/v3 and pkg with ../<dir>; in a wrapper module those become
# requirements of the published siblings at the same version. See docs/toolchain/kubernetes.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool_cache_begin etcd ETCD_VERSION

tool_cache_lock

tool_go_build_env
modver="v$ver"
mod=go.etcd.io/etcd/server/v3
siblings=(go.etcd.io/etcd/api/v3 go.etcd.io/etcd/client/pkg/v3 go.etcd.io/etcd/client/v3 go.etcd.io/etcd/pkg/v3)

src="$root/src-$ver"
mkdir -p "$src"
if [[ ! -f "$src/go.mod" || "$(cat "$src/.modver" 2>/dev/null)" != "$modver" ]]; then
  log "resolving $mod@$modver on the Go module proxy"
  upstream_dir="$(tool_go_download "$src" "$mod@$modver")"
  upgo="$(go mod edit -json "$upstream_dir/go.mod" | jq -r .Go)"
  log "writing wrapper module in $src"
  rm -f "$src/go.mod" "$src/go.sum" "$src/.modver"
  {
    echo "module agentd.local/tools/etcd-build"
    echo
    echo "go $upgo"
    echo
    echo "require ("
    echo "	$mod $modver"
    for s in "${siblings[@]}"; do echo "	$s $modver"; done
    echo ")"
  } >"$src/go.mod"
  cat >"$src/tools.go" <<EOF
//go:build tools

package tools

import _ "$mod"
EOF
  # Module-to-module replace/exclude directives of upstream (directory replaces are the siblings
  # required above).
  tool_go_copy_replaces "$upstream_dir/go.mod" "$src"
  log "resolving dependencies (go mod tidy)"
  (cd "$src" && go mod tidy >&2)
  for s in "$mod" "${siblings[@]}"; do
    got="$(cd "$src" && go list -m -f '{{.Version}}' "$s")"
    if [[ "$got" != "$modver" ]]; then
      log "$s resolved to $got, expected $modver"
      exit 1
    fi
  done
  echo "$modver" >"$src/.modver"
fi

tmp="$(mktemp -d "$root/.tmp-$ver.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$modver"
log "building etcd $ver ($mod@$modver; a cold build takes several minutes)"
start=$SECONDS
(cd "$src" && go build -p "$gobuildp" -trimpath -ldflags "$ldflags" -o "$tmp/bin/etcd" "$mod")
log "built etcd in $((SECONDS - start))s"

got="$("$tmp/bin/etcd" --version 2>&1)"
first="${got%%$'\n'*}" # first line (no `| head -1`: SIGPIPE + pipefail)
if [[ "$first" != "etcd Version: $ver" ]]; then
  log "etcd --version reports '$first', expected 'etcd Version: $ver'"
  exit 1
fi

rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
touch "$dest/.complete"
log "installed $dest/bin/etcd"
