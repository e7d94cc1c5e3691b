#!/usr/bin/env bash
# Builds the CNI plugins bridge, host-local, loopback and portmap from the Go module proxy and
# installs them into $AGENTD_TOOLS/cni-plugins/$CNI_PLUGINS_VERSION/bin/ (the CNI bin_dir of the
# one-node test cluster's containerd: pods on a Linux bridge, addresses from the node's podCIDR,
# hostPort mappings).
#
# github.com/containernetworking/plugins has no module-to-module replaces; a wrapper module
# requires it and imports the four main packages. Built as upstream's release workflow builds them
# (.github/workflows/release.yaml runs build_linux.sh with CGO_ENABLED=0 and the ldflags
# -X .../pkg/utils/buildversion.BuildVersion=<tag>), so each plugin names its version when run
# without CNI_COMMAND ("CNI bridge plugin v1.10.0"). See docs/toolchain/kube-node.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool_cache_begin cni-plugins CNI_PLUGINS_VERSION

tool_cache_lock

tool_go_build_env
modver="v$ver"
mod=github.com/containernetworking/plugins
dirs=(plugins/main/bridge plugins/ipam/host-local plugins/main/loopback plugins/meta/portmap)
plugins=("${dirs[@]##*/}")
tool_go_wrapper "$mod" "$modver" "${dirs[@]/#/$mod/}"

tool_stage_begin

ldflags="-s -w -X $mod/pkg/utils/buildversion.BuildVersion=$modver"
log "building the CNI plugins $ver (${plugins[*]}, one at a time; a cold build takes about 1½ min on 2 cores)"
for d in "${dirs[@]}"; do
  tool_go_build "${d##*/}" "$mod/$d" -ldflags "$ldflags"
done

# Without CNI_COMMAND a plugin prints "CNI <name> plugin <BuildVersion>" and the CNI spec versions
# it supports (stderr); CNI_COMMAND=VERSION is what a runtime asks: JSON with supportedVersions.
for p in "${plugins[@]}"; do
  got="$(env -i "$tmp/bin/$p" 2>&1)"
  first="${got%%$'\n'*}"
  if [[ "$first" != "CNI $p plugin $modver" ]]; then
    log "$p without CNI_COMMAND reports '$first', expected 'CNI $p plugin $modver'"
    exit 1
  fi
  if ! env -i CNI_COMMAND=VERSION "$tmp/bin/$p" </dev/null | jq -e '.supportedVersions | length > 0' >/dev/null; then
    log "CNI_COMMAND=VERSION $p does not print the supported CNI versions"
    exit 1
  fi
done

tool_stage_install
