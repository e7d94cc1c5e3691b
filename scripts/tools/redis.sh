#!/usr/bin/env bash
# Ensures a Redis server is installed, from Debian's `redis-server` package (bookworm: 7.0.15,
# with redis-cli from redis-tools): the store of Envoy's global rate-limit service
# (scripts/tools/ratelimit.sh) in the tests and the benchmarks. It does not start one: whoever
# needs it runs its own `redis-server` on loopback (a port and a directory of its own, no
# persistence) and stops it. See docs/toolchain/redis.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool=redis

if command -v redis-server >/dev/null 2>&1; then
  echo "$tool: redis-server present ($(command -v redis-server): $(redis-server --version))"
  exit 0
fi

# redis-server and redis-cli, about 10 MB, well under a minute. No server is started: no test may
# share one it did not start.
tool_apt_install redis-server

if ! got="$(redis-server --version)"; then
  log "redis-server was installed but does not run"
  exit 1
fi
echo "$tool: installed $got"
