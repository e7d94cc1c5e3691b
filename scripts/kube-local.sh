#!/usr/bin/env bash
# A local Kubernetes control plane for tests: etcd + kube-apiserver (+ kube-controller-manager)
# on loopback, no scheduler, no kubelet, no nodes. Objects are accepted and stored; Deployments get
# ReplicaSets and Pods, but the Pods stay Pending forever. See docs/toolchain/kubernetes.md.
# scripts/kube-node.sh starts it on a node's address and adds the node (pods that run).
#
# Usage:
#   scripts/kube-local.sh start DIR [--etcd-port N] [--etcd-peer-port N] [--port N]
#       Starts the control plane with its state in DIR (created if missing; an existing DIR is
#       reused, data included). Ports default to the ones of the last start in DIR, else random
#       free ones. Waits until /readyz answers, writes DIR/kubeconfig (admin token, group
#       system:masters) and prints `export KUBECONFIG=DIR/kubeconfig` on stdout.
#       Already running in DIR: prints the export line and exits 0.
#   scripts/kube-local.sh stop DIR     stops the processes started for DIR (pid files in DIR)
#   scripts/kube-local.sh env DIR      prints the export line (exit 1 if not running)
#
# Environment:
#   KUBE_LOCAL_CONTROLLERS  kube-controller-manager --controllers list, or "none" to run no
#                           controller manager (then namespaces stay Terminating after delete,
#                           no garbage collection, no default service account: the ServiceAccount
#                           admission plugin is disabled so that Pods can still be created).
#   KUBE_LOCAL_AUTHZ        kube-apiserver --authorization-mode (default RBAC; the admin token's
#                           user is in system:masters). AlwaysAllow also works.
#   KUBE_LOCAL_TIMEOUT      seconds to wait for etcd and /readyz (default 180).
#   KUBE_LOCAL_ADDRESS      the API server's bind and advertised address (default 127.0.0.1). Another
#                           address (a node's, scripts/kube-node.sh) also gets the `kubernetes`
#                           Service an endpoint, so that pods reach the API server.
#   KUBE_LOCAL_SERVICE_CIDR the Service IP range (default 10.0.0.0/24).
#   KUBE_LOCAL_POD_CIDR     a pod IP range: the controller manager then gives each node a /24 of it
#                           (node.spec.podCIDR) and binds volume claims (the node runs pods).
#
# Needs the tools built by `scripts/setup etcd kube-apiserver` and openssl, curl, ss.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
AGENTD_LOG_TAG=kube-local

ETCD_BIN="$AGENTD_TOOLS/etcd/$ETCD_VERSION/bin/etcd"
K8S_BIN="$AGENTD_TOOLS/kubernetes/$KUBERNETES_VERSION/bin"
APISERVER_BIN="$K8S_BIN/kube-apiserver"
KCM_BIN="$K8S_BIN/kube-controller-manager"
DEFAULT_CONTROLLERS="namespace-controller,garbage-collector-controller,serviceaccount-controller"
DEFAULT_CONTROLLERS+=",serviceaccount-token-controller,root-ca-certificate-publisher-controller"
DEFAULT_CONTROLLERS+=",clusterrole-aggregation-controller,deployment-controller,replicaset-controller"
DEFAULT_CONTROLLERS+=",statefulset-controller,daemonset-controller,job-controller,cronjob-controller"
DEFAULT_CONTROLLERS+=",disruption-controller,endpointslice-controller,resourcequota-controller"
# Without the protection controllers nothing removes the kubernetes.io/pvc-protection finalizer
# and deleting a PersistentVolumeClaim (pulumi destroy) waits forever.
DEFAULT_CONTROLLERS+=",persistentvolumeclaim-protection-controller,persistentvolume-protection-controller"

usage() { sed -n '6,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# pid of a process we started for DIR, or nothing: the pid file must name a live process running
# the expected binary with DIR on its command line.
live_pid() {
  local dir="$1" name="$2" bin="$3" pid exe
  [[ -f "$dir/$name.pid" ]] || return 0
  pid="$(cat "$dir/$name.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  exe="${exe% (deleted)}"
  [[ "$exe" == "$(readlink -f "$bin")" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/" || return 0
  echo "$pid"
}

stop_one() {
  local dir="$1" name="$2" bin="$3" pid i
  pid="$(live_pid "$dir" "$name" "$bin")"
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      [[ -e "/proc/$pid" ]] || break
      sleep 0.2
    done
    if [[ -e "/proc/$pid" ]]; then
      log "$name (pid $pid) did not stop after 20 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$dir/$name.pid"
}

cmd_stop() {
  local dir="$1"
  [[ -d "$dir" ]] || die "no such directory: $dir"
  stop_one "$dir" kube-controller-manager "$KCM_BIN"
  stop_one "$dir" kube-apiserver "$APISERVER_BIN"
  stop_one "$dir" etcd "$ETCD_BIN"
}

cmd_env() {
  local dir="$1"
  if [[ -z "$(live_pid "$dir" kube-apiserver "$APISERVER_BIN")" || ! -f "$dir/kubeconfig" ]]; then
    log "no kube-apiserver started by this script is running for $dir"
    return 1
  fi
  echo "export KUBECONFIG=$dir/kubeconfig"
}

fail_start() {
  local dir="$1" name="$2"
  log "$name did not come up; last lines of $dir/$name.log:"
  tail -n 30 "$dir/$name.log" >&2 || true
  cmd_stop "$dir"
  exit 1
}

cmd_start() {
  local dir="$1"; shift
  local etcd_port="" etcd_peer_port="" port=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --etcd-port) etcd_port="$2"; shift 2 ;;
      --etcd-peer-port) etcd_peer_port="$2"; shift 2 ;;
      --port) port="$2"; shift 2 ;;
      *) usage ;;
    esac
  done
  for b in "$ETCD_BIN" "$APISERVER_BIN"; do
    [[ -x "$b" ]] || die "$b is missing: run scripts/setup etcd kube-apiserver"
  done
  local controllers="${KUBE_LOCAL_CONTROLLERS:-$DEFAULT_CONTROLLERS}"
  if [[ "$controllers" != none && ! -x "$KCM_BIN" ]]; then
    die "$KCM_BIN is missing: run scripts/setup kube-apiserver (or KUBE_LOCAL_CONTROLLERS=none)"
  fi
  local timeout="${KUBE_LOCAL_TIMEOUT:-180}"
  local address="${KUBE_LOCAL_ADDRESS:-127.0.0.1}"
  local service_cidr="${KUBE_LOCAL_SERVICE_CIDR:-10.0.0.0/24}"
  local pod_cidr="${KUBE_LOCAL_POD_CIDR:-}"
  local -a node_controllers=()
  if [[ -n "$pod_cidr" ]]; then
    controllers+=",node-ipam-controller,node-lifecycle-controller,persistentvolume-binder-controller"
    node_controllers=(--allocate-node-cidrs=true --cluster-cidr="$pod_cidr" --node-cidr-mask-size=24 --service-cluster-ip-range="$service_cidr")
  fi
  # On loopback no pod calls the API server: the `kubernetes` Service needs no endpoint.
  local reconciler=lease
  [[ "$address" != 127.0.0.1 ]] || reconciler=none

  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if [[ -n "$(live_pid "$dir" kube-apiserver "$APISERVER_BIN")" && -f "$dir/kubeconfig" ]]; then
    log "already running in $dir"
    echo "export KUBECONFIG=$dir/kubeconfig"
    return 0
  fi
  cmd_stop "$dir" 2>/dev/null # leftovers of a half start

  # Ports: arguments, else the last start's, else random free ones.
  if [[ -f "$dir/ports.env" ]]; then
    # shellcheck disable=SC1091
    source "$dir/ports.env"
    etcd_port="${etcd_port:-$ETCD_PORT}"
    etcd_peer_port="${etcd_peer_port:-$ETCD_PEER_PORT}"
    port="${port:-$APISERVER_PORT}"
  fi
  etcd_port="${etcd_port:-$(free_port)}"
  etcd_peer_port="${etcd_peer_port:-$(free_port)}"
  port="${port:-$(free_port)}"
  for p in "$etcd_port" "$etcd_peer_port" "$port"; do
    port_free "$p" || die "port $p is in use"
  done
  printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' "$etcd_port" "$etcd_peer_port" "$port" \
    >"$dir/ports.env"

  # Credentials: service-account key pair and a static admin token (kept across restarts).
  mkdir -p "$dir/pki"
  chmod 700 "$dir/pki"
  if [[ ! -f "$dir/pki/sa.key" ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/pki/sa.key" 2>/dev/null
    openssl pkey -in "$dir/pki/sa.key" -pubout -out "$dir/pki/sa.pub"
  fi
  if [[ ! -f "$dir/pki/tokens.csv" ]]; then
    (umask 077 && printf '%s,admin,admin,"system:masters"\n' "$(openssl rand -hex 32)" >"$dir/pki/tokens.csv")
  fi
  local token
  token="$(cut -d, -f1 "$dir/pki/tokens.csv")"

  log "starting etcd $ETCD_VERSION on 127.0.0.1:$etcd_port (data in $dir/etcd)"
  GOMEMLIMIT=512MiB spawn "$dir" etcd "$ETCD_BIN" \
    --name local \
    --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "local=http://127.0.0.1:$etcd_peer_port" \
    --quota-backend-bytes $((1024 * 1024 * 1024)) \
    --unsafe-no-fsync \
    --log-level warn
  local deadline=$((SECONDS + timeout))
  until curl -fsS "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"'; do
    spawned_alive "$dir" etcd && [[ $SECONDS -lt $deadline ]] || fail_start "$dir" etcd
    sleep 0.3
  done

  local authz="${KUBE_LOCAL_AUTHZ:-RBAC}"
  # A node's kubelet (scripts/kube-node.sh) takes the API server's calls (logs, exec) with the
  # client certificate that script put in pki/.
  local -a kubelet_client=()
  if [[ -f "$dir/pki/kubelet-client.crt" ]]; then
    # By the node's address: its name is in no DNS.
    kubelet_client=(--kubelet-client-certificate="$dir/pki/kubelet-client.crt" --kubelet-client-key="$dir/pki/kubelet-client.key"
      --kubelet-preferred-address-types=InternalIP)
  fi
  local -a admission=()
  [[ "$controllers" != none ]] || admission=(--disable-admission-plugins=ServiceAccount)
  log "starting kube-apiserver $KUBERNETES_VERSION on https://$address:$port (authorization $authz)"
  GOMEMLIMIT=1GiB spawn "$dir" kube-apiserver "$APISERVER_BIN" \
    --bind-address="$address" \
    --advertise-address="$address" \
    --endpoint-reconciler-type="$reconciler" \
    --secure-port="$port" \
    --cert-dir="$dir/pki" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --token-auth-file="$dir/pki/tokens.csv" \
    --authorization-mode="$authz" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range="$service_cidr" \
    --allow-privileged=true \
    --profiling=false \
    --event-ttl=15m \
    "${kubelet_client[@]}" \
    "${admission[@]}"
  until [[ "$(curl -ksS -m 5 -H "Authorization: Bearer $token" "https://$address:$port/readyz" 2>/dev/null)" == ok ]]; do
    spawned_alive "$dir" kube-apiserver && [[ $SECONDS -lt $deadline ]] || fail_start "$dir" kube-apiserver
    sleep 0.5
  done

  # kube-apiserver wrote a self-signed serving certificate and its CA into --cert-dir.
  local ca
  ca="$(base64 -w0 <"$dir/pki/apiserver.crt")"
  (umask 077 && cat >"$dir/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-local
  cluster:
    server: https://$address:$port
    certificate-authority-data: $ca
users:
- name: admin
  user:
    token: $token
contexts:
- name: kube-local
  context:
    cluster: kube-local
    user: admin
    namespace: default
current-context: kube-local
EOF
  )
  mv -f "$dir/kubeconfig.tmp" "$dir/kubeconfig"

  if [[ "$controllers" != none ]]; then
    log "starting kube-controller-manager (controllers: $controllers)"
    GOMEMLIMIT=512MiB spawn "$dir" kube-controller-manager "$KCM_BIN" \
      --kubeconfig="$dir/kubeconfig" \
      --controllers="$controllers" \
      --leader-elect=false \
      --secure-port=0 \
      --use-service-account-credentials=false \
      --service-account-private-key-file="$dir/pki/sa.key" \
      --root-ca-file="$dir/pki/apiserver.crt" \
      --concurrent-gc-syncs=5 \
      "${node_controllers[@]}"
    # It needs a moment to sync its caches; a crash at start shows here.
    sleep 1
    spawned_alive "$dir" kube-controller-manager || fail_start "$dir" kube-controller-manager
  fi

  log "ready: https://$address:$port (logs and pid files in $dir)"
  echo "export KUBECONFIG=$dir/kubeconfig"
}

[[ $# -ge 2 ]] || usage
action="$1" dir="$2"; shift 2
case "$action" in
  start) cmd_start "$dir" "$@" ;;
  stop) [[ $# -eq 0 ]] || usage; cmd_stop "$(cd "$dir" && pwd)" ;;
  env) [[ $# -eq 0 ]] || usage; cmd_env "$(cd "$dir" && pwd)" ;;
  *) usage ;;
esac
