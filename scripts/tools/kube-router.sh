#!/usr/bin/env bash
# Builds kube-router from the Go module proxy and installs it into
# $AGENTD_TOOLS/kube-router/$KUBE_ROUTER_VERSION/bin/kube-router (the one-node test cluster runs
# only its network policy controller, the NetworkPolicy enforcer: iptables chains and ipsets).
#
# github.com/cloudnativelabs/kube-router/v2 has no module-to-module replaces; its main package is
# cmd/kube-router. A wrapper module requires it and imports it. Built as upstream's Makefile
# builds it: CGO_ENABLED=0 and -X pkg/version.Version=<git describe --tags> (the tag: the module
# zip has no git) -X pkg/version.BuildDate=<date of the build>. At run time it execs `ipset`
# (Debian's ipset package, installed here if missing) and iptables (present: docker.io needs it).
# See docs/toolchain/kube-node.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool_cache_begin kube-router KUBE_ROUTER_VERSION

tool_cache_lock

tool_apt_ensure ipset

tool_go_build_env
modver="v$ver"
mod=github.com/cloudnativelabs/kube-router/v2
tool_go_wrapper "$mod" "$modver" "$mod/cmd/kube-router"

tool_stage_begin

ldflags="-s -w -X $mod/pkg/version.Version=$modver -X $mod/pkg/version.BuildDate=$(date +%Y-%m-%dT%H:%M:%S%z)"
log "building kube-router $ver (a cold build takes about 3½ min on 2 cores)"
tool_go_build kube-router "$mod/cmd/kube-router" -ldflags "$ldflags"

# `kube-router --version` (stderr; before its root check): "Running <path> version v2.1.0, built on
# <date>, go1.26.8".
got="$("$tmp/bin/kube-router" --version 2>&1)"
if [[ "$got" != "Running $tmp/bin/kube-router version $modver, built on "* ]]; then
  log "kube-router --version reports '$got', expected 'Running … version $modver, built on …'"
  exit 1
fi

tool_stage_install
