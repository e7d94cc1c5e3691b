#!/usr/bin/env bash
# A one-node Kubernetes cluster for the tests, on this machine: the control plane of
# scripts/kube-local.sh (etcd, kube-apiserver, kube-controller-manager) plus kube-scheduler, and a
# node: containerd 2 with runc, the CNI bridge plugin, kubelet, kube-proxy (iptables), kube-router's
# network policy controller, CoreDNS as a pod, and static local volumes for claims. Images come
# from the local Docker engine (`load`), never from a registry. See docs/toolchain/kube-node.md.
#
# Usage (as root; the node is one per machine):
#   scripts/kube-node.sh start DIR      starts everything with its state in DIR, waits until the
#                                       node is Ready and CoreDNS answers, prints the export line
#   scripts/kube-node.sh load DIR REF…  imports images of the local Docker engine into the node
#   scripts/kube-node.sh stop DIR       stops everything and removes what the node added to the
#                                       machine: processes, mounts, network namespaces, interfaces,
#                                       iptables chains and ipsets, cgroups
#   scripts/kube-node.sh env DIR        prints the export line (exit 1 if not running)
#
# A start that fails stops what it started, unless KUBE_NODE_KEEP_ON_FAILURE=1.
#
# Needs `scripts/setup kube-apiserver etcd kube-node containerd cni-plugins coredns kube-router`
# and a running Docker engine (scripts/dockerd.sh start) for the node's own images.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
AGENTD_LOG_TAG=kube-node

# The node's addresses: private ranges that nothing else here uses (Docker takes 172.17.0.0/16).
readonly NODE_NAME=agentd-node
readonly NODE_LINK=agentd-node0 NODE_IP=10.88.255.1
readonly BRIDGE=agentd-cni0 POD_CIDR=10.89.0.0/16 NODE_POD_CIDR=10.89.0.0/24
readonly SERVICE_CIDR=10.90.0.0/24 DNS_IP=10.90.0.10
readonly CNI_NETWORK=agentd-pods
# Machine-wide paths (one node per machine): the runtime's socket, state and runc's state.
readonly RUN=/run/agentd-node
readonly SOCK=$RUN/containerd.sock
readonly FORWARD_CHAIN=AGENTD-NODE-FORWARD
# The routing rule that refuses a pod's packet to a Service address kube-proxy has not rewritten.
readonly SERVICE_RULE=(iif "$BRIDGE" to "$SERVICE_CIDR" unreachable pref 90)
readonly VOLUMES=8

readonly NODE_BIN="$AGENTD_TOOLS/kube-node/$KUBERNETES_VERSION/bin"
readonly CONTAINERD_BIN="$AGENTD_TOOLS/containerd/$CONTAINERD_VERSION/bin"
readonly CNI_BIN="$AGENTD_TOOLS/cni-plugins/$CNI_PLUGINS_VERSION/bin"
readonly KUBE_ROUTER_BIN="$AGENTD_TOOLS/kube-router/$KUBE_ROUTER_VERSION/bin/kube-router"
readonly KUBECTL="$AGENTD_TOOLS/kubernetes/$KUBERNETES_VERSION/bin/kubectl"
readonly LOCAL="$AGENTD_ROOT/scripts/kube-local.sh"

usage() { sed -n '8,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

kubectl_() { "$KUBECTL" --kubeconfig "$DIR/control/kubeconfig" "$@"; }
ctr_() { "$CONTAINERD_BIN/ctr" --address "$SOCK" --namespace k8s.io "$@"; }

# The processes of the node, in start order (stopped in reverse).
readonly PROCESSES=(containerd kube-scheduler kubelet kube-proxy kube-router)

alive() { spawned_alive "$DIR" "$1"; }

# Waits up to SECONDS for CMD to succeed while process NAME lives; on failure shows NAME's log.
wait_for() {
  local name="$1" seconds="$2" what="$3"; shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name" || ((SECONDS >= deadline)); then
      log "$what: not after ${seconds}s; last lines of $DIR/$name.log:"
      tail -n 40 "$DIR/$name.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

require_tools() {
  [[ "$(id -u)" == 0 ]] || die "the node needs root (network, mounts, cgroups)"
  local b
  for b in "$NODE_BIN/kubelet" "$NODE_BIN/kube-proxy" "$NODE_BIN/kube-scheduler" "$CONTAINERD_BIN/containerd" \
    "$CONTAINERD_BIN/containerd-shim-runc-v2" "$CNI_BIN/bridge" "$CNI_BIN/host-local" "$CNI_BIN/loopback" "$KUBE_ROUTER_BIN" "$KUBECTL"; do
    [[ -x "$b" ]] || die "$b is missing: run scripts/setup kube-apiserver etcd kube-node containerd cni-plugins coredns kube-router"
  done
  for b in runc ipset iptables iptables-save ip; do
    command -v "$b" >/dev/null || die "$b is missing: apt-get install runc ipset iptables iproute2 (Debian's; the containerd and kube-router builds install the first two)"
  done
  timeout 10 docker info >/dev/null 2>&1 || die "no Docker engine answers: the node's images are built there (scripts/dockerd.sh start)"
}

# ---- start ---------------------------------------------------------------------------------------

# Kernel settings the node changes (the kubelet sets the first three at start, kube-proxy
# route_localnet): saved at start, put back at stop, so the machine is as it was.
readonly SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.conf.all.route_localnet
  net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables)

save_sysctls() {
  [[ -f "$DIR/sysctl.saved" ]] && return 0
  local k
  for k in "${SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$DIR/sysctl.saved"
}

restore_sysctls() {
  [[ -f "$DIR/sysctl.saved" ]] || return 0
  local line
  while read -r line; do sysctl -qw "$line" 2>/dev/null || true; done <"$DIR/sysctl.saved"
  rm -f "$DIR/sysctl.saved"
}

network_up() {
  # A bridge without ports holds the node's address (this kernel has no dummy interfaces).
  ip link show "$NODE_LINK" >/dev/null 2>&1 || ip link add "$NODE_LINK" type bridge
  ip addr replace "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
  # A pod's packet to a Service address is rewritten by kube-proxy (nat PREROUTING) before it is
  # routed. One sent before kube-proxy has written a new Service's rules would follow the default
  # route off the machine, and this machine's network answers any HTTP request to any address
  # (404, "server: keryx"): OPA once kept such a connection alive and got 404 for its bundles
  # until its liveness probe restarted it. Refuse it here ("no route to host"); the client retries.
  # Host processes are not matched (iif), so the host still reaches Services.
  ip rule del "${SERVICE_RULE[@]}" 2>/dev/null || true
  ip rule add "${SERVICE_RULE[@]}"
  # kube-proxy and the policy controller see bridged pod traffic only through iptables.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  # A Docker engine sets FORWARD's policy to DROP: accept the pods' traffic, after the policy
  # controller's rules (kube-router keeps its jump first in FORWARD).
  iptables -w -N "$FORWARD_CHAIN" 2>/dev/null || iptables -w -F "$FORWARD_CHAIN"
  iptables -w -A "$FORWARD_CHAIN" -i "$BRIDGE" -j ACCEPT
  iptables -w -A "$FORWARD_CHAIN" -o "$BRIDGE" -j ACCEPT
  iptables -w -C FORWARD -j "$FORWARD_CHAIN" 2>/dev/null || iptables -w -A FORWARD -j "$FORWARD_CHAIN"
}

write_configs() {
  local pause="$1"
  mkdir -p "$DIR/cni/net.d" "$DIR/containerd" "$DIR/kubelet" "$DIR/pod-logs" "$RUN"
  jq -n --arg name "$CNI_NETWORK" --arg bridge "$BRIDGE" --arg subnet "$NODE_POD_CIDR" --arg ipam "$DIR/cni/ipam" '{
    cniVersion: "1.0.0", name: $name,
    plugins: [
      { type: "bridge", bridge: $bridge, isGateway: true, ipMasq: true, hairpinMode: true,
        ipam: { type: "host-local", ranges: [[{ subnet: $subnet }]], routes: [{ dst: "0.0.0.0/0" }], dataDir: $ipam } },
      { type: "portmap", capabilities: { portMappings: true } }
    ] }' >"$DIR/cni/net.d/10-$CNI_NETWORK.conflist"

  cat >"$DIR/containerd/config.toml" <<EOF
version = 3
root = "$DIR/containerd/root"
state = "$RUN/containerd"

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$RUN/containerd.ttrpc.sock"

# Everything else containerd would put in machine-wide paths (Debian's containerd, which the
# Docker engine runs, uses the defaults) goes under the node's own.
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = "$RUN/s"
[plugins.'io.containerd.internal.v1.opt']
  path = "$DIR/containerd/opt"
[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$pause"

[plugins.'io.containerd.cri.v1.runtime']
  enable_unprivileged_ports = false
  # Root here lacks CAP_SYS_RESOURCE: no process may lower its OOM score (the kubelet asks -998
  # for every pod sandbox). Scores stay at or above containerd's own instead.
  restrict_oom_score_adj = true
  # The pods' network namespaces under the state directory, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$DIR/cni/net.d"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$RUN/runc"
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF

  local token
  token="$(cut -d, -f1 "$DIR/control/pki/tokens.csv")"
  cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The API server calls it (logs, exec) with the client certificate of kubelet_client_cert;
# anyone else is asked about by webhook, and anonymous calls are refused.
address: $NODE_IP
port: $(free_port)
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $(free_port)
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $DIR/control/pki/kubelet-client-ca.crt }
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
# This machine's cgroups are v1 (hybrid); kubelet 1.35+ refuses them unless told.
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $DIR/pod-logs
serializeImagePulls: false
# The disk is shared with the other tests: evict only when it is really short.
evictionHard: { memory.available: 100Mi, nodefs.available: 1Gi, imagefs.available: 1Gi, nodefs.inodesFree: 1% }
# No image GC: the imported images are the only copies (no registry to pull them again).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 60
EOF
  (umask 077 && "$KUBECTL" config view --kubeconfig "$DIR/control/kubeconfig" --raw >"$DIR/node.kubeconfig")
  [[ -n "$token" ]] || die "no admin token in $DIR/control/pki/tokens.csv"
}

# A CA the kubelet trusts for client certificates, and the API server's certificate from it.
kubelet_client_cert() {
  local pki="$DIR/control/pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  [[ ! -f "$pki/kubelet-client.crt" ]] || return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=agentd-node-kubelet-client-ca" \
    -keyout "$pki/kubelet-client-ca.key" -out "$pki/kubelet-client-ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
    -keyout "$pki/kubelet-client.key" -out "$pki/kubelet-client.csr" 2>/dev/null
  openssl x509 -req -in "$pki/kubelet-client.csr" -CA "$pki/kubelet-client-ca.crt" -CAkey "$pki/kubelet-client-ca.key" \
    -CAcreateserial -days 30 -out "$pki/kubelet-client.crt" 2>/dev/null
}

node_ready() { [[ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; }

# The cluster's add-ons: CoreDNS, and a default StorageClass with static local volumes.
addons() {
  local coredns="$1" i
  mkdir -p "$DIR/volumes"
  {
    cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: { storageclass.kubernetes.io/is-default-class: "true" }
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
    for i in $(seq 1 "$VOLUMES"); do
      mkdir -p "$DIR/volumes/pv-$i"
      cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata: { name: local-pv-$i, labels: { agentd.dev/node-volume: "true" } }
spec:
  capacity: { storage: 2Gi }
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: { path: $DIR/volumes/pv-$i }
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{ key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME] }]
EOF
    done
    cat <<EOF
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: coredns, namespace: kube-system }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: "system:coredns" }
rules:
- { apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch] }
- { apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch] }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: "system:coredns" }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns" }
subjects: [{ kind: ServiceAccount, name: coredns, namespace: kube-system }]
---
apiVersion: v1
kind: ConfigMap
metadata: { name: coredns, namespace: kube-system }
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        forward . /etc/resolv.conf
        cache 30
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: coredns, namespace: kube-system, labels: { k8s-app: kube-dns } }
spec:
  replicas: 1
  selector: { matchLabels: { k8s-app: kube-dns } }
  template:
    metadata: { labels: { k8s-app: kube-dns } }
    spec:
      serviceAccountName: coredns
      # The node's resolver for names outside the cluster, not itself.
      dnsPolicy: Default
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        # Port 53 without a capability.
        sysctls: [{ name: net.ipv4.ip_unprivileged_port_start, value: "53" }]
      containers:
      - name: coredns
        image: $coredns
        command: [/usr/local/bin/coredns, -conf, /etc/coredns/Corefile]
        ports:
        - { name: dns, containerPort: 53, protocol: UDP }
        - { name: dns-tcp, containerPort: 53, protocol: TCP }
        readinessProbe: { httpGet: { path: /ready, port: 8181 }, periodSeconds: 2 }
        livenessProbe: { httpGet: { path: /health, port: 8080 }, periodSeconds: 10 }
        securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: [ALL] } }
        volumeMounts: [{ name: config, mountPath: /etc/coredns, readOnly: true }]
      volumes: [{ name: config, configMap: { name: coredns } }]
---
apiVersion: v1
kind: Service
metadata: { name: kube-dns, namespace: kube-system, labels: { k8s-app: kube-dns } }
spec:
  clusterIP: $DNS_IP
  selector: { k8s-app: kube-dns }
  ports:
  - { name: dns, port: 53, protocol: UDP }
  - { name: dns-tcp, port: 53, protocol: TCP }
EOF
  } >"$DIR/addons.yaml"
  kubectl_ apply -f "$DIR/addons.yaml" >&2
}

# Imports images of the local Docker engine into the node's runtime (namespace k8s.io, where the
# kubelet looks): `docker save` archives, unpacked for the overlayfs snapshotter.
cmd_load() {
  [[ $# -gt 0 ]] || usage
  local ref
  for ref in "$@"; do
    if ctr_ images ls -q | grep -qxF "docker.io/$ref"; then
      log "image $ref: already on the node"
      continue
    fi
    log "image $ref: docker save | ctr images import"
    docker save "$ref" | ctr_ images import - >&2
  done
}

cmd_start() {
  require_tools
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  if [[ -f "$RUN/owner" && "$(cat "$RUN/owner")" != "$DIR" ]] && alive_dir "$(cat "$RUN/owner")"; then
    die "a node already runs here, for $(cat "$RUN/owner"): stop it first (scripts/kube-node.sh stop $(cat "$RUN/owner"))"
  fi
  if alive kubelet; then
    log "already running in $DIR"
    echo "export KUBECONFIG=$DIR/control/kubeconfig"
    return 0
  fi
  cmd_stop 2>/dev/null || true # leftovers of a half start
  mkdir -p "$RUN"
  echo "$DIR" >"$RUN/owner"
  local t0=$SECONDS

  log "images: the node's pause and CoreDNS images (scripts/images.ts --node)"
  local images pause coredns
  images="$(node "$AGENTD_ROOT/scripts/images.ts" --node)"
  echo "$images" >"$DIR/node-images.json"
  pause="$(jq -r .pause <<<"$images")"
  coredns="$(jq -r .coredns <<<"$images")"

  log "network: $NODE_LINK $NODE_IP, pods $NODE_POD_CIDR on $BRIDGE, services $SERVICE_CIDR"
  save_sysctls
  network_up

  kubelet_client_cert
  KUBE_LOCAL_ADDRESS=$NODE_IP KUBE_LOCAL_SERVICE_CIDR=$SERVICE_CIDR KUBE_LOCAL_POD_CIDR=$POD_CIDR \
    bash "$LOCAL" start "$DIR/control" >/dev/null
  write_configs "docker.io/$pause"

  log "containerd $CONTAINERD_VERSION (socket $SOCK)"
  PATH="$CONTAINERD_BIN:$PATH" spawn "$DIR" containerd "$CONTAINERD_BIN/containerd" --config "$DIR/containerd/config.toml"
  wait_for containerd 60 "containerd answers" "$CONTAINERD_BIN/ctr" --address "$SOCK" version || fail_start
  cmd_load "$pause" "$coredns"

  log "kube-scheduler"
  spawn "$DIR" kube-scheduler "$NODE_BIN/kube-scheduler" --kubeconfig="$DIR/node.kubeconfig" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$(free_port)"
  log "kubelet (node $NODE_NAME, $NODE_IP)"
  spawn "$DIR" kubelet "$NODE_BIN/kubelet" --config="$DIR/kubelet/config.yaml" --kubeconfig="$DIR/node.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$DIR/kubelet" --cert-dir="$DIR/kubelet/pki"
  wait_for kubelet 120 "node $NODE_NAME Ready" node_ready || fail_start
  log "kube-proxy (iptables)"
  spawn "$DIR" kube-proxy "$NODE_BIN/kube-proxy" --kubeconfig="$DIR/node.kubeconfig" --hostname-override="$NODE_NAME" \
    --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --conntrack-max-per-core=0 --oom-score-adj=0 \
    --conntrack-tcp-timeout-established=0s --conntrack-tcp-timeout-close-wait=0s --iptables-localhost-nodeports=false \
    --healthz-bind-address="127.0.0.1:$(free_port)" --metrics-bind-address="127.0.0.1:$(free_port)"
  log "kube-router (network policies only)"
  spawn "$DIR" kube-router "$KUBE_ROUTER_BIN" --kubeconfig="$DIR/node.kubeconfig" --hostname-override="$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
    --service-cluster-ip-range="$SERVICE_CIDR" --enable-ipv6=false --metrics-port=0 --health-port="$(free_port)"
  log "add-ons: CoreDNS ($DNS_IP), StorageClass local with $VOLUMES volumes"
  addons "$coredns"
  wait_for kubelet 180 "CoreDNS ready" kubectl_ -n kube-system wait --for=condition=Available deployment/coredns --timeout=5s || fail_start
  local p
  for p in "${PROCESSES[@]}"; do alive "$p" || { log "$p exited; see $DIR/$p.log"; tail -n 20 "$DIR/$p.log" >&2; fail_start; }; done
  log "ready in $((SECONDS - t0))s: node $NODE_NAME (logs and pid files in $DIR)"
  echo "export KUBECONFIG=$DIR/control/kubeconfig"
}

# A start that failed stops what it started, unless KUBE_NODE_KEEP_ON_FAILURE=1 (to look at it).
fail_start() {
  if [[ "${KUBE_NODE_KEEP_ON_FAILURE:-}" == 1 ]]; then
    log "left running for a look (KUBE_NODE_KEEP_ON_FAILURE=1): export KUBECONFIG=$DIR/control/kubeconfig; stop with: $0 stop $DIR"
  else
    cmd_stop
  fi
  exit 1
}

alive_dir() { [[ -n "$1" && -f "$1/kubelet.pid" ]] && DIR="$1" alive kubelet; }

# ---- stop ----------------------------------------------------------------------------------------

stop_process() {
  local name="$1" pid i
  pid="$(cat "$DIR/$name.pid" 2>/dev/null)" || return 0
  if [[ "$pid" =~ ^[0-9]+$ && -e "/proc/$pid" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do [[ -e "/proc/$pid" ]] || break; sleep 0.2; done
    [[ ! -e "/proc/$pid" ]] || kill -KILL "$pid" 2>/dev/null || true
    log "stopped $name (pid $pid)"
  fi
  rm -f "$DIR/$name.pid"
}

# Every process in the pods' cgroups (the containers and the pause processes), then the shims.
kill_pods() {
  local f pids
  for f in /sys/fs/cgroup/pids/kubepods*/cgroup.procs /sys/fs/cgroup/pids/kubepods*/**/cgroup.procs; do
    [[ -f "$f" ]] || continue
    pids="$(cat "$f" 2>/dev/null)" || continue
    [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
  done
  pkill -KILL -f -- "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
}

# The pods' cgroups, deepest first, in every hierarchy.
remove_cgroups() {
  local d
  while read -r d; do rmdir "$d" 2>/dev/null || true; done < <(find /sys/fs/cgroup -depth -type d -path '*/kubepods*' 2>/dev/null)
}

unmount_under() {
  local prefix m
  for prefix in "$@"; do
    # Deepest first; lazily, as a container's files may still be open for a moment.
    while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(awk -v p="$prefix/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r)
  done
}

remove_iptables() {
  local table chain
  [[ ! -x "$NODE_BIN/kube-proxy" ]] || "$NODE_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  # Not `kube-router --cleanup-config`: in v2.1.0 it cleans no policy rule and flushes every IPVS
  # service of the machine (kube-router#1649). Its chains are KUBE-ROUTER-*, KUBE-POD-FW-* and
  # KUBE-NWPLCY-*, removed with the others below.
  iptables -w -D FORWARD -j "$FORWARD_CHAIN" 2>/dev/null || true
  iptables -w -F "$FORWARD_CHAIN" 2>/dev/null && iptables -w -X "$FORWARD_CHAIN" 2>/dev/null || true
  # What kube-proxy, kube-router and the CNI bridge plugin (per-pod CNI-<hash> masquerade chains,
  # commented with the network's name) may still have left, in every table.
  for table in filter nat mangle raw; do
    while read -r rule; do
      eval "iptables -w -t $table ${rule/-A/-D}" 2>/dev/null || true
    done < <(iptables-save -t "$table" 2>/dev/null | grep -E -- "^-A .*(-j (KUBE-|CNI-)|$CNI_NETWORK)" | grep -Ev '^-A (KUBE-|CNI-)' || true)
    while read -r chain; do
      iptables -w -t "$table" -F "$chain" 2>/dev/null || true
    done < <(iptables-save -t "$table" 2>/dev/null | sed -n 's/^:\(\(KUBE-\|CNI-\)[^ ]*\) .*/\1/p')
    while read -r chain; do
      iptables -w -t "$table" -X "$chain" 2>/dev/null || true
    done < <(iptables-save -t "$table" 2>/dev/null | sed -n 's/^:\(\(KUBE-\|CNI-\)[^ ]*\) .*/\1/p')
  done
  local set
  while read -r set; do ipset destroy "$set" 2>/dev/null || true; done < <(ipset list -n 2>/dev/null | grep -E '^(inet6:)?KUBE-' || true)
}

cmd_stop() {
  [[ -d "$DIR" ]] || die "no such directory: $DIR"
  DIR="$(cd "$DIR" && pwd)"
  local i
  for ((i = ${#PROCESSES[@]} - 1; i >= 0; i--)); do
    [[ "${PROCESSES[$i]}" == containerd ]] && kill_pods
    stop_process "${PROCESSES[$i]}"
  done
  kill_pods
  bash "$LOCAL" stop "$DIR/control" 2>/dev/null || true
  unmount_under "$DIR" "$RUN"
  # The pods' network namespaces were mounts under the runtime's state directory (unmounted above).
  remove_cgroups
  remove_iptables
  ip link delete "$BRIDGE" 2>/dev/null || true
  ip link delete "$NODE_LINK" 2>/dev/null || true
  while ip rule del "${SERVICE_RULE[@]}" 2>/dev/null; do :; done
  restore_sysctls
  if [[ -f "$RUN/owner" && "$(cat "$RUN/owner")" == "$DIR" ]]; then rm -rf "$RUN"; fi
  log "stopped; the node left nothing on the machine outside $DIR"
}

cmd_env() {
  DIR="$(cd "$DIR" && pwd)"
  alive kubelet || { log "no node started by this script runs for $DIR"; return 1; }
  echo "export KUBECONFIG=$DIR/control/kubeconfig"
}

[[ $# -ge 2 ]] || usage
action="$1" DIR="$2"; shift 2
case "$action" in
  start) [[ $# -eq 0 ]] || usage; cmd_start ;;
  load) DIR="$(cd "$DIR" && pwd)"; cmd_load "$@" ;;
  stop) [[ $# -eq 0 ]] || usage; cmd_stop ;;
  env) [[ $# -eq 0 ]] || usage; cmd_env ;;
  *) usage ;;
esac
