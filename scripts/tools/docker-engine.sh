#!/usr/bin/env bash
# Ensures a Docker engine (dockerd + containerd + runc) is installed, from Debian's `docker.io`
# package (bookworm: 20.10.24, API 1.41). It does not start it: scripts/dockerd.sh does.
#
# The machine image ships a docker CLI 28.x at /usr/local/bin/docker (ahead of /usr/bin on PATH);
# it talks to this engine (API negotiated down to 1.41) but its BuildKit builder does not work with
# an engine this old: build with DOCKER_BUILDKIT=0 (the classic builder).
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool=docker-engine

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

# dockerd, containerd, runc, iptables: about 100 MB, about a minute. The engine is not started
# (scripts/dockerd.sh does that).
tool_apt_install docker.io iptables ca-certificates

ensure_iptables_backend
echo "$tool: installed $(dockerd --version)"
