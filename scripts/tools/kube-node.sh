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

# kubelet is the biggest (with an empty Go build cache: 865 s beside another Go build, 13 min of
# CPU); the other two mostly reuse its packages (40 s and 31 s after it). With kube-apiserver.sh's
# packages already in the build cache, kubelet takes about 80 s.
k8s_install "8-15 minutes" kubelet kube-proxy kube-scheduler
