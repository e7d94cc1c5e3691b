#!/usr/bin/env bash
# Ensures a Redis server is installed, from Debian's `redis-server` package (bookworm: 7.0.15,
# with redis-cli from redis-tools): the store of Envoy's global rate-limit service
# (scripts/tools/ratelimit.sh) in the tests and the benchmarks. It does not start one: whoever
# needs it runs its own `redis-server` on loopback (a port and a directory of its own, no
# persistence) and stops it. See docs/toolchain/redis.md.
set -euo pipefail

tool=redis
log() { echo "[setup:$tool] $*" >&2; }

if command -v redis-server >/dev/null 2>&1; then
  echo "$tool: redis-server present ($(command -v redis-server): $(redis-server --version))"
  exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
  log "installing redis-server needs root (apt-get)"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
apt-get update -qq >&2
# No service may be started by the package's maintainer scripts (there is no init system here, and
# no test may share a server it did not start): make sure a policy-rc.d forbids it for the
# duration of the install.
own_policy=
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  own_policy=1
fi
trap '[[ -n "$own_policy" ]] && rm -f /usr/sbin/policy-rc.d' EXIT
log "apt-get install redis-server (redis-server, redis-cli; ~10 MB, well under a minute)"
apt-get install -y -qq --no-install-recommends redis-server >&2

if ! got="$(redis-server --version)"; then
  log "redis-server was installed but does not run"
  exit 1
fi
echo "$tool: installed $got"
