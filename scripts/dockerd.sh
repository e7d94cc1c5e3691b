#!/usr/bin/env bash
# Starts/stops a Docker engine for local builds and tests.
#   scripts/dockerd.sh start   - if `docker info` already answers, does nothing; else starts dockerd
#                                in the background and waits (<= 60 s) until it answers
#   scripts/dockerd.sh stop    - stops dockerd only if this script started it; waits for it to exit
#   scripts/dockerd.sh status  - says whether an engine answers and whether this script started it
# Install the engine first with scripts/tools/docker-engine.sh.
# Builds: the machine's docker CLI (28.x) needs DOCKER_BUILDKIT=0 with Debian's engine (20.10).
set -euo pipefail

SOCK="${AGENTD_DOCKER_SOCK:-/var/run/docker.sock}"
DATA_ROOT=/var/lib/agentd-docker
RUN_DIR=/run/agentd-docker
EXEC_ROOT="$RUN_DIR/exec"
PIDFILE="$RUN_DIR/dockerd.pid"
STATE="$RUN_DIR/started-by-agentd" # holds the pid of the dockerd that this script started
LOG=/var/log/agentd-dockerd.log
START_TIMEOUT=60
STOP_TIMEOUT=60

log() { echo "[dockerd] $*" >&2; }

# `docker info` against the default endpoint (honours DOCKER_HOST/context, as a user's docker does).
engine_answers() { timeout 10 docker info >/dev/null 2>&1; }
# `docker info` against the socket our dockerd listens on.
our_engine_answers() { timeout 10 docker -H "unix://$SOCK" info >/dev/null 2>&1; }

# The pid in the state file, if that process is still a dockerd using our data root.
our_pid() {
  [[ -f "$STATE" ]] || return 1
  local pid
  pid="$(cat "$STATE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"--data-root $DATA_ROOT "* ]] || return 1
  echo "$pid"
}

cmd_status() {
  local pid=""
  pid="$(our_pid)" || pid=""
  if engine_answers; then
    local v
    v="$(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo '?')"
    if [[ -n "$pid" ]]; then
      echo "docker engine $v answers; started by scripts/dockerd.sh (pid $pid, data root $DATA_ROOT)"
    else
      echo "docker engine $v answers; not started by scripts/dockerd.sh"
    fi
    return 0
  fi
  if [[ -n "$pid" ]]; then
    echo "dockerd pid $pid (started by scripts/dockerd.sh) is running but does not answer on $SOCK yet"
    return 1
  fi
  echo "no docker engine answers"
  return 3
}

cmd_start() {
  if engine_answers; then
    if pid="$(our_pid)"; then
      echo "docker engine already running (started earlier by scripts/dockerd.sh, pid $pid); nothing to do"
    else
      echo "docker engine already answers (not started by this script); nothing to do"
    fi
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    log "dockerd is not installed; run scripts/tools/docker-engine.sh first"
    return 1
  fi
  mkdir -p "$RUN_DIR" "$EXEC_ROOT" "$DATA_ROOT"
  local pid
  if pid="$(our_pid)"; then
    log "our dockerd (pid $pid) is running but not answering; waiting for it"
  else
    rm -f "$STATE"
    if [[ -f "$PIDFILE" ]]; then
      local old
      old="$(cat "$PIDFILE" 2>/dev/null || true)"
      if [[ -n "$old" && -d "/proc/$old" && "$(cat "/proc/$old/comm" 2>/dev/null)" == dockerd ]]; then
        log "a dockerd (pid $old) holds $PIDFILE but was not started by this script and does not answer; not touching it"
        return 1
      fi
      rm -f "$PIDFILE" # stale
    fi
    log "starting dockerd (data root $DATA_ROOT, socket $SOCK, log $LOG)"
    echo "=== $(date -Is) scripts/dockerd.sh start" >>"$LOG"
    setsid dockerd \
      --host "unix://$SOCK" \
      --data-root "$DATA_ROOT" \
      --exec-root "$EXEC_ROOT" \
      --pidfile "$PIDFILE" \
      </dev/null >>"$LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$STATE"
  fi
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if our_engine_answers; then
      # setsid execs dockerd in place, so $! is dockerd's pid; trust dockerd's own pidfile anyway.
      local fpid
      fpid="$(cat "$PIDFILE" 2>/dev/null || true)"
      if [[ "$fpid" =~ ^[0-9]+$ && "$fpid" != "$pid" ]]; then
        pid="$fpid"
        echo "$pid" >"$STATE"
      fi
      log "dockerd (pid $pid) is up after $((SECONDS - deadline + START_TIMEOUT))s: $(docker -H "unix://$SOCK" version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null)"
      return 0
    fi
    if [[ ! -d "/proc/$pid" ]]; then
      rm -f "$STATE"
      log "dockerd exited during startup; last lines of $LOG:"
      tail -n 20 "$LOG" >&2
      return 1
    fi
    sleep 1
  done
  log "dockerd (pid $pid) did not answer within ${START_TIMEOUT}s; last lines of $LOG:"
  tail -n 20 "$LOG" >&2
  return 1
}

cmd_stop() {
  local pid
  if ! pid="$(our_pid)"; then
    if [[ -f "$STATE" ]]; then
      rm -f "$STATE"
      echo "the dockerd this script started is no longer running; nothing to stop"
    else
      echo "no dockerd started by this script; nothing to stop (a running engine is left alone)"
    fi
    return 0
  fi
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while [[ -d "/proc/$pid" ]] && ((SECONDS < deadline)); do
    sleep 0.5
  done
  if [[ -d "/proc/$pid" ]]; then
    log "dockerd (pid $pid) still running after ${STOP_TIMEOUT}s; see $LOG"
    return 1
  fi
  rm -f "$STATE"
  log "dockerd stopped"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
