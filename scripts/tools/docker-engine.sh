#!/usr/bin/env bash
# Ensures a Docker engine (dockerd + containerd + runc) is installed, from Debian's `docker.io`
# package (bookworm: 20.10.24, API 1.41). It does not start it: scripts/dockerd.sh does.
#
# The machine image ships a docker CLI 28.x at /usr/local/bin/docker (ahead of /usr/bin on PATH);
# it talks to this engine (API negotiated down to 1.41) but its BuildKit builder does not work with
# an engine this old: build with DOCKER_BUILDKIT=0 (the classic builder).
set -euo pipefail

tool=docker-engine
log() { echo "[setup:$tool] $*" >&2; }

# Debian bookworm's iptables defaults to the nftables backend; on kernels without nf_tables
# (like this VM's) dockerd's bridge networking needs the legacy backend.
ensure_iptables_backend() {
  if iptables -w -L -n >/dev/null 2>&1; then
    return 0
  fi
  if command -v iptables-legacy >/dev/null && iptables-legacy -w -L -n >/dev/null 2>&1; then
    log "iptables ($(readlink -f "$(command -v iptables)")) does not work on this kernel; switching to iptables-legacy"
    update-alternatives --set iptables /usr/sbin/iptables-legacy >&2
    update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >&2 || true
  else
    log "warning: neither iptables backend works; start dockerd with --iptables=false --bridge=none"
  fi
}

if command -v dockerd >/dev/null 2>&1; then
  ensure_iptables_backend
  echo "$tool: dockerd present ($(dockerd --version 2>/dev/null))"
  exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
  log "installing docker.io needs root (apt-get)"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
apt-get update -qq >&2
# No service may be started by the package's maintainer scripts (there is no init system here, and
# we start dockerd ourselves): make sure a policy-rc.d forbids it for the duration of the install.
own_policy=
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  own_policy=1
fi
trap '[[ -n "$own_policy" ]] && rm -f /usr/sbin/policy-rc.d' EXIT
log "apt-get install docker.io (dockerd, containerd, runc, iptables; ~100 MB, about a minute)"
apt-get install -y -qq --no-install-recommends docker.io iptables ca-certificates >&2

ensure_iptables_backend
echo "$tool: installed $(dockerd --version)"
