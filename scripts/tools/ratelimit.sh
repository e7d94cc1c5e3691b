#!/usr/bin/env bash
# Builds Envoy's global rate-limit service from the Go module proxy and installs it into
# $AGENTD_TOOLS/ratelimit/$RATELIMIT_VERSION/bin/ratelimit (the gRPC RateLimitService that Envoy's
# `envoy.filters.http.ratelimit` filter asks; its counters live in Redis, see scripts/tools/redis.sh).
#
# github.com/envoyproxy/ratelimit has no release tags: RATELIMIT_VERSION is the pseudo-version
# `@latest` resolved to. The server's main package is src/service_cmd (what upstream's Dockerfile
# builds as /bin/ratelimit). A wrapper module requires it and copies upstream's module-to-module
# replace/exclude directives (it has none at the pinned version). The binary has no version flag:
# the module version is checked in its build info. See docs/toolchain/ratelimit.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool_cache_begin ratelimit RATELIMIT_VERSION

tool_cache_lock

tool_go_build_env
modver="$ver"
mod=github.com/envoyproxy/ratelimit
pkg=$mod/src/service_cmd

src="$root/src-$ver"
mkdir -p "$src"
if [[ ! -f "$src/go.mod" || "$(cat "$src/.modver" 2>/dev/null)" != "$modver" ]]; then
  log "resolving $mod@$modver on the Go module proxy"
  upstream_dir="$(tool_go_download "$src" "$mod@$modver")"
  upgo="$(go mod edit -json "$upstream_dir/go.mod" | jq -r .Go)"
  log "writing wrapper module in $src"
  rm -f "$src/go.mod" "$src/go.sum" "$src/.modver"
  {
    echo "module agentd.local/tools/ratelimit-build"
    echo
    echo "go $upgo"
    echo
    echo "require $mod $modver"
  } >"$src/go.mod"
  cat >"$src/tools.go" <<EOF
//go:build tools

package tools

import _ "$pkg"
EOF
  # Module-to-module replace/exclude directives of upstream (a directory replace cannot be copied).
  tool_go_copy_replaces "$upstream_dir/go.mod" "$src"
  log "resolving dependencies (go mod tidy)"
  (cd "$src" && go mod tidy >&2)
  got="$(cd "$src" && go list -m -f '{{.Version}}' "$mod")"
  if [[ "$got" != "$modver" ]]; then
    log "$mod resolved to $got, expected $modver"
    exit 1
  fi
  echo "$modver" >"$src/.modver"
fi

tmp="$(mktemp -d "$root/.tmp-$ver.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

log "building ratelimit $ver ($pkg; a cold build takes about 1½ min on 2 cores)"
start=$SECONDS
(cd "$src" && go build -p "$gobuildp" -trimpath -ldflags "-s -w" -o "$tmp/bin/ratelimit" "$pkg")
log "built ratelimit in $((SECONDS - start))s"

# No --version (any argument is ignored and the server starts): the build info names the module
# of the main package (`mod github.com/envoyproxy/ratelimit <version> h1:…`).
info="$(go version -m "$tmp/bin/ratelimit")"
if ! grep -Eq "^[[:space:]]+mod[[:space:]]+$mod[[:space:]]+$modver([[:space:]]|\$)" <<<"$info"; then
  log "the build info of the binary does not name $mod $modver:"
  log "$info"
  exit 1
fi

rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
touch "$dest/.complete"
log "installed $dest/bin/ratelimit"
