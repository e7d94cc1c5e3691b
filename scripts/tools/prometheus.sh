#!/usr/bin/env bash
# Builds Prometheus + promtool from the Go module proxy and installs them into
# $AGENTD_TOOLS/prometheus/$PROMETHEUS_VERSION/bin/{prometheus,promtool}.
#
# Prometheus 3.x is published on the Go proxy as github.com/prometheus/prometheus v0.3MM.P
# (3.16.0 -> v0.316.0; the module zip's VERSION file says 3.16.0, checked below).
# Built without the `builtinassets` tag: the binary has no embedded web UI (the UI pages
# answer with an error), the HTTP API (/api/v1/*, /-/healthy, /-/ready, /metrics) is complete.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool_cache_begin prometheus PROMETHEUS_VERSION

# 3.16.0 -> v0.316.0 (major 3 is folded into the minor: minor*1 + 300).
IFS=. read -r major minor patch <<<"$ver"
if [[ "$major" != 3 ]]; then
  log "only Prometheus 3.x maps to a github.com/prometheus/prometheus v0.3xx.y module version (got $ver)"
  exit 1
fi
modver="v0.$((major * 100 + minor)).$patch"
mod=github.com/prometheus/prometheus

tool_cache_lock

tool_go_build_env

src="$root/src-$ver"
mkdir -p "$src"
log "resolving $mod@$modver on the Go module proxy"
if ! dl="$(cd "$src" && go mod download -json "$mod@$modver")"; then
  log "the Go module proxy did not provide $mod@$modver: $(jq -r .Error <<<"$dl" 2>/dev/null)"
  exit 1
fi
upstream_dir="$(jq -r .Dir <<<"$dl")"
upstream_ver="$(tr -d '[:space:]' <"$upstream_dir/VERSION")"
if [[ "$upstream_ver" != "$ver" ]]; then
  log "$mod@$modver has VERSION $upstream_ver, expected $ver"
  exit 1
fi

# Wrapper module: requires upstream and copies its replace/exclude directives, because those only
# take effect in the main module.
if [[ ! -f "$src/go.mod" || "$(cat "$src/.modver" 2>/dev/null)" != "$modver" ]]; then
  log "writing wrapper module in $src"
  rm -f "$src/go.mod" "$src/go.sum" "$src/.modver"
  upgo="$(go mod edit -json "$upstream_dir/go.mod" | jq -r .Go)"
  cat >"$src/go.mod" <<EOF
module agentd.local/tools/prometheus-build

go $upgo

require $mod $modver
EOF
  cat >"$src/tools.go" <<EOF
//go:build tools

package tools

import (
	_ "$mod/cmd/prometheus"
	_ "$mod/cmd/promtool"
)
EOF
  go mod edit -json "$upstream_dir/go.mod" | jq -r '
    (.Replace // [])[] |
      "-replace=\(.Old.Path)\(if .Old.Version then "@"+.Old.Version else "" end)=\(.New.Path)\(if .New.Version then "@"+.New.Version else "" end)"' \
    >"$src/.replace-args"
  go mod edit -json "$upstream_dir/go.mod" | jq -r '(.Exclude // [])[] | "-exclude=\(.Path)@\(.Version)"' \
    >>"$src/.replace-args"
  if [[ -s "$src/.replace-args" ]]; then
    if grep -q -- '=\.\|=/' "$src/.replace-args"; then
      log "upstream go.mod has filesystem replace directives; they cannot be copied:"
      cat "$src/.replace-args" >&2
      exit 1
    fi
    log "copying $(wc -l <"$src/.replace-args") replace/exclude directive(s) from upstream go.mod"
    (cd "$src" && xargs go mod edit <"$src/.replace-args")
  fi
  log "resolving dependencies (go mod tidy -e)"
  (cd "$src" && go mod tidy -e >&2)
  echo "$modver" >"$src/.modver"
fi

tmp="$(mktemp -d "$root/.tmp-$ver.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

ldflags="-s -w -X github.com/prometheus/common/version.Version=$ver"
ldflags+=" -X github.com/prometheus/common/version.Revision=$modver"
ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"
ldflags+=" -X github.com/prometheus/common/version.BuildUser=agentd"
for cmd in prometheus promtool; do
  log "building $cmd $ver ($mod/cmd/$cmd@$modver; cold build takes several minutes)"
  start=$SECONDS
  (cd "$src" && go build -p "$gobuildp" -trimpath -tags netgo -ldflags "$ldflags" \
      -o "$tmp/bin/$cmd" "$mod/cmd/$cmd")
  log "built $cmd in $((SECONDS - start))s"
done

got="$("$tmp/bin/promtool" --version 2>&1)"
got="${got%%$'\n'*}" # first line (no `| head -1`: SIGPIPE + pipefail)
case "$got" in
  *"version $ver "*) ;;
  *) log "promtool reports '$got', expected version $ver"; exit 1 ;;
esac
"$tmp/bin/prometheus" --version >/dev/null 2>&1

rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
touch "$dest/.complete"
log "installed $dest/bin/{prometheus,promtool}"
