#!/usr/bin/env bash
# The embedded nats-server for the staging stack: JetStream on 127.0.0.1:4223,
# data in .nats-data/ (git-ignored). Idempotent.
#
#   scripts/nats.sh start | stop | status
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$root/.nats-data"
port="${NATS_PORT:-4223}"
pidfile="$data/nats-server.pid"
log="$data/nats-server.log"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-status}" in
  start)
    if running; then echo "nats-server already running (pid $(cat "$pidfile")) on nats://127.0.0.1:$port"; exit 0; fi
    mkdir -p "$data"
    : > "$log"
    nohup setsid "$root/.venv/bin/nats-server" -js -a 127.0.0.1 -p "$port" -sd "$data/jetstream" \
      -P "$pidfile" -l "$log" </dev/null >/dev/null 2>&1 &
    for _ in $(seq 1 100); do
      grep -q "Server is ready" "$log" 2>/dev/null && { echo "nats-server started on nats://127.0.0.1:$port (data in .nats-data/)"; exit 0; }
      if grep -q "\[FTL\]" "$log" 2>/dev/null; then grep "\[FTL\]" "$log" >&2; exit 1; fi
      sleep 0.1
    done
    echo "nats-server did not become ready; see $log" >&2; exit 1 ;;
  stop)
    if running; then kill "$(cat "$pidfile")"; for _ in $(seq 1 50); do running || break; sleep 0.1; done; echo "nats-server stopped"; else echo "nats-server not running"; fi
    rm -f "$pidfile" ;;
  status)
    if running; then echo "running (pid $(cat "$pidfile")) on nats://127.0.0.1:$port"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: scripts/nats.sh start|stop|status" >&2; exit 2 ;;
esac
