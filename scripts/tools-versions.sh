#!/usr/bin/env bash
# Prints the version every tool reports about itself, so each test log names what it ran.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
v() { printf '  %-26s %s\n' "$1" "$("${@:2}" 2>&1 | head -n 1)"; }
echo "tool versions (cache: $AGENTD_TOOLS):"
v node node --version
v pulumi pulumi version
v pulumi-language-nodejs sh -c 'command -v pulumi-language-nodejs'
v pulumi-resource-docker sh -c 'echo "$PULUMI_DOCKER_VERSION at $(command -v pulumi-resource-docker)"'
v pulumi-resource-kubernetes sh -c 'echo "$PULUMI_KUBERNETES_VERSION at $(command -v pulumi-resource-kubernetes)"'
v pulumi-resource-random sh -c 'echo "$PULUMI_RANDOM_VERSION at $(command -v pulumi-resource-random)"'
v envoy sh -c 'envoy --version | grep -o "[0-9a-f]\{40\}/[^ ]*" || envoy --version'
v opa sh -c 'opa version | tr "\n" " "'
v prometheus sh -c 'prometheus --version | head -n 1'
v promtool sh -c 'promtool --version | head -n 1'
v docker-engine docker version --format '{{.Server.Version}}'
v ratelimit sh -c 'command -v ratelimit'
v redis-server redis-server --version
# The one-node test cluster's parts are not on PATH (scripts/kube-node.sh runs them by path).
v kubelet "$AGENTD_TOOLS/kube-node/$KUBERNETES_VERSION/bin/kubelet" --version
v containerd "$AGENTD_TOOLS/containerd/$CONTAINERD_VERSION/bin/containerd" --version
v cni-plugins "$AGENTD_TOOLS/cni-plugins/$CNI_PLUGINS_VERSION/bin/bridge"
v coredns "$AGENTD_TOOLS/coredns/$COREDNS_VERSION/bin/coredns" -version
v kube-router sh -c "'$AGENTD_TOOLS/kube-router/$KUBE_ROUTER_VERSION/bin/kube-router' --version 2>&1 | sed 's/^Running //'"
v runc runc --version
