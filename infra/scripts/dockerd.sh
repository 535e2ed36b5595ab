#!/usr/bin/env bash
# Start/stop a loopback-only Docker engine (no bridge, no iptables), tracked by pid.
#
# Why: these machines have no systemd and must never route to private ranges,
# so the daemon runs with --bridge=none and containers use host networking.
#
#   infra/scripts/dockerd.sh start   # idempotent; waits until `docker info` works
#   infra/scripts/dockerd.sh stop    # SIGTERM by recorded pid only, then waits
#   infra/scripts/dockerd.sh status
#
# Env: DOCKERD_STATE_DIR (default /tmp/tfrollout-dockerd) holds dockerd.pid and dockerd.log.
set -euo pipefail

STATE_DIR="${DOCKERD_STATE_DIR:-/tmp/tfrollout-dockerd}"
PIDFILE="$STATE_DIR/dockerd.pid"
LOGFILE="$STATE_DIR/dockerd.log"
SOCK="unix:///var/run/docker.sock"

engine_up() { docker -H "$SOCK" info >/dev/null 2>&1; }

start() {
  mkdir -p "$STATE_DIR"
  if engine_up; then
    echo "dockerd: engine already reachable at $SOCK (not started by this script)"
    return 0
  fi
  command -v dockerd >/dev/null || { echo "dockerd: not installed (apt-get install -y docker.io)" >&2; exit 1; }
  setsid dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    --default-address-pool base=198.18.0.0/16,size=24 \
    -H "$SOCK" >"$LOGFILE" 2>&1 < /dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 150); do
    if engine_up; then
      echo "dockerd: up (pid $(cat "$PIDFILE"), log $LOGFILE)"
      return 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "dockerd: exited during start; log follows" >&2; tail -n 30 "$LOGFILE" >&2; exit 1
    fi
    sleep 0.2
  done
  echo "dockerd: not ready after 30 s; log follows" >&2; tail -n 30 "$LOGFILE" >&2; exit 1
}

stop() {
  if [[ ! -f "$PIDFILE" ]]; then
    echo "dockerd: no pidfile at $PIDFILE (nothing started by this script)"
    return 0
  fi
  local pid; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "dockerd: pid $pid ignored SIGTERM for 20 s; sending SIGKILL" >&2
      kill -KILL "$pid" || true
    fi
  fi
  rm -f "$PIDFILE"
  echo "dockerd: stopped (pid $pid)"
}

status() {
  if engine_up; then echo "dockerd: reachable"; else echo "dockerd: not reachable"; exit 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
