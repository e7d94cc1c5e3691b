#!/usr/bin/env bash
# Builds CoreDNS from the Go module proxy and installs it into
# $AGENTD_TOOLS/coredns/$COREDNS_VERSION/bin/coredns (the cluster DNS of the one-node test cluster,
# with its kubernetes plugin; run as a pod from a locally built image).
#
# github.com/coredns/coredns has no module-to-module replaces; its main package is the module root
# (coredns.go, with the plugins of plugin.cfg compiled in: core/plugin/zplugin.go is committed). A
# wrapper module requires it and imports it. Built as upstream's Makefile builds it: CGO_ENABLED=0,
# -tags grpcnotrace, and -X coremain.GitCommit=<git describe>, which at the release tag is the tag
# (the module zip has no git). See docs/toolchain/kube-node.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool_cache_begin coredns COREDNS_VERSION

tool_cache_lock

tool_go_build_env
modver="v$ver"
mod=github.com/coredns/coredns
tool_go_wrapper "$mod" "$modver" "$mod"

tool_stage_begin

log "building CoreDNS $ver (a cold build takes 5-7 min on 2 cores)"
tool_go_build coredns "$mod" -tags grpcnotrace -ldflags "-s -w -X $mod/coremain.GitCommit=$modver"

# `coredns -version`: "CoreDNS-1.15.0" then "linux/amd64, go1.26.8, v1.15.0".
got="$("$tmp/bin/coredns" -version 2>&1)"
first="${got%%$'\n'*}"
if [[ "$first" != "CoreDNS-$ver" ]]; then
  log "coredns -version reports '$first', expected 'CoreDNS-$ver'"
  exit 1
fi

tool_stage_install
