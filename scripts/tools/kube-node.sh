#!/usr/bin/env bash
# Builds kubelet, kube-proxy and kube-scheduler from the Go module proxy and installs them into
# $AGENTD_TOOLS/kube-node/$KUBERNETES_VERSION/bin/: the node of the one-node test cluster
# (scripts/kube-node.sh runs them, with containerd, the CNI plugins, CoreDNS and kube-router,
# against the API server of scripts/kube-local.sh).
#
# The wrapper module, the version ldflags and the version checks are kubernetes-module.sh's
# (shared with kube-apiserver.sh). See docs/toolchain/kube-node.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
# shellcheck source=kubernetes-module.sh
source "$(dirname "$0")/kubernetes-module.sh"
tool_cache_begin kube-node KUBERNETES_VERSION

k8s_version
cmds=(kubelet kube-proxy kube-scheduler)

tool_cache_lock

tool_go_build_env

# Its own wrapper module (not kube-apiserver.sh's src): scripts/setup.ts may run both side by side.
src="$root/src-$ver"
k8s_wrapper_module "$src" "${cmds[@]}"

tool_stage_begin

# One binary at a time (each go build already uses $gobuildp jobs). kubelet is the biggest (with an
# empty Go build cache: 865 s beside another Go build, 13 min of CPU); the other two mostly reuse
# its packages (40 s and 31 s after it). With kube-apiserver.sh's packages already in the build
# cache, kubelet takes about 80 s.
k8s_ldflags "$src"
k8s_build kubelet "8-15 minutes"
k8s_build kube-proxy "about a minute after kubelet's"
k8s_build kube-scheduler "about a minute after kubelet's"

k8s_check_versions "$tmp/bin" "${cmds[@]}"

tool_stage_install
