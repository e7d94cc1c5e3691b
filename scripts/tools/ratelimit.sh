#!/usr/bin/env bash
# Builds Envoy's global rate-limit service from the Go module proxy and installs it into
# $AGENTD_TOOLS/ratelimit/$RATELIMIT_VERSION/bin/ratelimit (the gRPC RateLimitService that Envoy's
# `envoy.filters.http.ratelimit` filter asks; its counters live in Redis, see scripts/tools/redis.sh).
#
# github.com/envoyproxy/ratelimit has no release tags: RATELIMIT_VERSION is the pseudo-version
# `@latest` resolved to. The server's main package is src/service_cmd (what upstream's Dockerfile
# builds as /bin/ratelimit). A wrapper module requires it and copies upstream's requirements and
# module-to-module replace/exclude directives (none at the pinned version): tool_go_wrapper in
# cache.sh. The binary has no version flag: the module version is checked in its build info.
# See docs/toolchain/ratelimit.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool_cache_begin ratelimit RATELIMIT_VERSION

tool_cache_lock

tool_go_build_env
modver="$ver"
mod=github.com/envoyproxy/ratelimit
pkg=$mod/src/service_cmd
tool_go_wrapper "$mod" "$modver" "$pkg"

tool_stage_begin

log "building ratelimit $ver (a cold build takes about 1½ min on 2 cores)"
tool_go_build ratelimit "$pkg" -ldflags "-s -w"

# No --version (any argument is ignored and the server starts): the build info names the module
# of the main package (`mod github.com/envoyproxy/ratelimit <version> h1:…`).
info="$(go version -m "$tmp/bin/ratelimit")"
if ! grep -Eq "^[[:space:]]+mod[[:space:]]+$mod[[:space:]]+$modver([[:space:]]|\$)" <<<"$info"; then
  log "the build info of the binary does not name $mod $modver:"
  log "$info"
  exit 1
fi

tool_stage_install
