# Sourced by every script: the pinned versions, the tool cache, PATH with the pinned Node and
# the built tools first, and small helpers. Never prints anything on its own.
AGENTD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "$AGENTD_ROOT/scripts/versions.env"
export AGENTD_ROOT
export AGENTD_TOOLS="${AGENTD_TOOLS:-$HOME/.cache/agentd/tools}"
export NODE_VERSION PULUMI_VERSION PULUMI_DOCKER_VERSION PULUMI_KUBERNETES_VERSION \
  PULUMI_RANDOM_VERSION ENVOY_VERSION OPA_ENVOY_VERSION PROMETHEUS_VERSION

# tool name -> version, for PATH and for `tool_bin`.
agentd_tool_dirs() {
  printf '%s\n' \
    "node/$NODE_VERSION" \
    "pulumi/$PULUMI_VERSION" \
    "pulumi-docker/$PULUMI_DOCKER_VERSION" \
    "pulumi-kubernetes/$PULUMI_KUBERNETES_VERSION" \
    "pulumi-random/$PULUMI_RANDOM_VERSION" \
    "envoy/$ENVOY_VERSION" \
    "opa/$OPA_ENVOY_VERSION" \
    "prometheus/$PROMETHEUS_VERSION" \
    "etcd/$ETCD_VERSION" \
    "kubernetes/$KUBERNETES_VERSION" \
    "ratelimit/$RATELIMIT_VERSION"
}

# Each directory once: a shell that already has some of them (the pinned Node put on PATH by
# hand, a script sourced twice) still gets the others.
agentd_path=""
while read -r d; do
  case ":$PATH:" in *":$d:"*) ;; *) agentd_path="$agentd_path$d:" ;; esac
done < <(agentd_tool_dirs | sed "s|^|$AGENTD_TOOLS/|; s|\$|/bin|"; echo "$AGENTD_ROOT/node_modules/.bin")
export PATH="$agentd_path$PATH"
unset agentd_path

# Go builds the tools that no registry ships as binaries; its usual home may not be on PATH.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then export PATH="$PATH:/usr/local/go/bin"; fi

# dockerd, containerd and iptables live in /usr/sbin and /sbin, which a non-login or `env -i`
# shell (CI) may not have on PATH.
for d in /usr/sbin /sbin; do
  case ":$PATH:" in *":$d:"*) ;; *) [ -d "$d" ] && export PATH="$PATH:$d" ;; esac
done

# Pulumi: the local file backend and no update checks unless the user chose otherwise.
export PULUMI_SKIP_UPDATE_CHECK="${PULUMI_SKIP_UPDATE_CHECK:-true}"
export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK="${PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK:-true}"

log() { printf '[%s] %s\n' "${AGENTD_LOG_TAG:-agentd}" "$*" >&2; }
die() { printf '[%s] error: %s\n' "${AGENTD_LOG_TAG:-agentd}" "$*" >&2; exit 1; }

# A free TCP port (nothing listens on it now), from 20000-49999; `port_free PORT` checks one.
port_free() { [[ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; }
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + RANDOM % 30000))
    if port_free "$p"; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# `spawn DIR NAME CMD ARGS...`: runs CMD in its own session, output appended to DIR/NAME.log, its
# pid in DIR/NAME.pid (the local cluster's processes: scripts/kube-local.sh, scripts/kube-node.sh).
spawn() {
  local dir="$1" name="$2"; shift 2
  echo "--- $(date -u +%FT%TZ) start" >>"$dir/$name.log"
  setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# Whether the process spawn() started for NAME in DIR is still alive. Not a check of the binary:
# right after spawn the pid may still be setsid's, before it execs the binary (seen under load).
spawned_alive() {
  local dir="$1" name="$2" pid
  pid="$(cat "$dir/$name.pid" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ && -e "/proc/$pid" ]]
}

