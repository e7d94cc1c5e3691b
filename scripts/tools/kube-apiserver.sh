#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kubectl from the Go module proxy and installs
# them into $AGENTD_TOOLS/kubernetes/$KUBERNETES_VERSION/bin/
# (scripts/kube-local.sh runs them against a local etcd: an API server without nodes; the
# controller manager finalizes deleted namespaces, collects garbage and creates service accounts).
#
# The wrapper module, the version ldflags and the version checks are kubernetes-module.sh's
# (shared with kube-node.sh). See docs/toolchain/kubernetes.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
# shellcheck source=kubernetes-module.sh
source "$(dirname "$0")/kubernetes-module.sh"
tool_cache_begin kube-apiserver KUBERNETES_VERSION kubernetes

k8s_install "10-30 minutes" kube-apiserver kube-controller-manager kubectl
