#!/usr/bin/env bash
# benches/upgrade.sh — zero-downtime binary upgrade under keep-alive load: edgegate
# (`edgegate upgrade`: SIGUSR2, socket hand-over, drain) against nginx's own binary
# upgrade (USR2 starts a new master on the inherited sockets, QUIT drains the old one),
# in the same run, on loopback.
#
#   benches/upgrade.sh             # ROUNDS=3 runs per server, DURATION=8s each
#   ROUNDS=1 benches/upgrade.sh    # quicker
#
# Each run: wrk (WRK_THREADS threads, CONNECTIONS keep-alive connections) for DURATION
# against a server answering `200 pong` itself (no upstream: only the hand-over is
# measured); UPGRADE_AT seconds in, the binary is upgraded (to the same binary: what
# matters is the hand-over, not what is new). Reported per run: requests, failed
# requests (wrk's socket errors + non-2xx answers), the longest request latency (wrk's
# max, which the hand-over sets on an otherwise idle loopback), p99, and whether the old
# process exited.
#
# Environment: EDGEGATE_BIN [target/release/edgegate, or $CARGO_TARGET_DIR/release],
# NGINX_BIN [/usr/sbin/nginx], ROUNDS [3], DURATION [8], UPGRADE_AT [3],
# WRK_THREADS [2], CONNECTIONS [50], SERVER_THREADS [2] (edgegate threads = nginx
# worker_processes), BASELINE [1: one run per server without an upgrade first],
# OUT [/tmp/edgegate-upgrade-summary.txt].
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EDGEGATE_BIN=${EDGEGATE_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/edgegate}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
UPGRADE_AT=${UPGRADE_AT:-3}
WRK_THREADS=${WRK_THREADS:-2}
CONNECTIONS=${CONNECTIONS:-50}
SERVER_THREADS=${SERVER_THREADS:-2}
OUT=${OUT:-/tmp/edgegate-upgrade-summary.txt}

for tool in wrk "$NGINX_BIN" "$EDGEGATE_BIN" python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 2; }
done

tmp=$(mktemp -d)
# Every process this script starts carries this tag in its environment, and so do the
# processes those start: the edgegate each `edgegate upgrade` creates (a pid this
# script never sees, whose parent exits), wrk. On exit whatever still carries it is
# stopped, by pid; a pid noted earlier could by then belong to someone else.
tag="$$-$RANDOM$RANDOM"
export EDGEGATE_UPGRADE_BENCH=$tag
# The live processes whose environment holds the tag.
tagged() {
  python3 - "EDGEGATE_UPGRADE_BENCH=$tag" <<'PY'
import os, sys
want = sys.argv[1].encode()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if want in f.read().split(b"\0"):
                print(pid)
    except OSError:
        pass
PY
}
cleanup() {
  # What cleanup itself starts must not carry the tag.
  export -n EDGEGATE_UPGRADE_BENCH
  # nginx rewrites its environment (and a new master gets another one): its masters
  # are found by their pid files instead, while they are nginx, and their workers as
  # their children.
  local pid pids masters
  pids=$(tagged)
  masters=$(cat "$tmp"/*.pid "$tmp"/*.pid.oldbin 2>/dev/null || true)
  for pid in $masters; do
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == nginx ]] || continue
    pids+=" $pid $(pgrep -P "$pid" | tr '\n' ' ')"
  done
  for pid in $pids; do
    [[ "$pid" == "$$" ]] || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $pids; do
    [[ "$pid" == "$$" ]] || wait_gone "$pid" 2 || kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
# Ctrl-C or a TERM ends the script through the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() {
  local url=$1
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "error: $url never answered" >&2
  return 1
}

gone() {
  ! kill -0 "$1" 2>/dev/null || [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" == Z ]]
}

wait_gone() {
  local pid=$1 limit=$2
  for _ in $(seq 1 $((limit * 20))); do
    gone "$pid" && return 0
    sleep 0.05
  done
  return 1
}

# "requests failed max_ms p99_ms" from wrk --latency output.
summarise() {
  python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
req = int(re.search(r"(\d+) requests in", text).group(1))
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
errors = sum(int(x) for x in sock.groups()) if sock else 0
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
failed = errors + (int(non2xx.group(1)) if non2xx else 0)
lat = re.search(r"Latency\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m)\b", text)
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s|m)\b", text)
print(req, failed, f"{ms(*lat.groups()):.1f}", f"{ms(*p99.groups()):.2f}")
PY
}

run_edgegate() {
  local round=$1 port admin log
  port=$(free_port); admin=$(free_port); log="$tmp/edgegate-$round.log"
  cat >"$tmp/edgegate.toml" <<EOF
[gateway]
threads = $SERVER_THREADS
grace_period = "10s"
[admin]
address = "127.0.0.1:$admin"
[[listeners]]
name = "web"
address = "127.0.0.1:$port"
[[routes]]
name = "pong"
respond = { status = 200, body = "pong\n" }
EOF
  # The new process's info lines name it (pid=...), to stop it before the next run
  # (`edgegate::upgrade` named no module: the new process was left running).
  RUST_LOG=warn,edgegate::serving::upgrade=info "$EDGEGATE_BIN" run --config "$tmp/edgegate.toml" </dev/null 2>"$log" &
  local old=$!
  wait_http "http://127.0.0.1:$port/"
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/" \
    >"$tmp/wrk-edgegate-$round.txt" 2>&1 &
  local wrk_pid=$!
  sleep "$UPGRADE_AT"
  local exited=no
  if [[ "$round" == baseline ]]; then
    exited=-
    wait "$wrk_pid"
    kill -TERM "$old"
    wait "$old" 2>/dev/null || true
    echo "edgegate $(summarise "$tmp/wrk-edgegate-$round.txt") $exited"
    return
  fi
  if "$EDGEGATE_BIN" upgrade --pid "$old" --timeout 30s >/dev/null; then
    wait_gone "$old" 5 && exited=yes
  fi
  wait "$wrk_pid"
  wait "$old" 2>/dev/null || true
  # The new process, named in the log: stop it before the next run.
  local new
  new=$(grep -ao 'pid=[0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  if [[ -n "$new" ]]; then
    kill -TERM "$new" 2>/dev/null || true
    wait_gone "$new" 15 || true
  else
    echo "warning: the upgraded edgegate did not log its pid; it is stopped on exit" >&2
  fi
  echo "edgegate $(summarise "$tmp/wrk-edgegate-$round.txt") $exited"
}

run_nginx() {
  local round=$1 port
  port=$(free_port)
  mkdir -p "$tmp/nginx/logs"
  # A pid file per run: a master that exits late removes its pid file, which must not
  # be the next run's.
  local pidfile="$tmp/nginx-$round.pid"
  cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes $SERVER_THREADS;
pid $pidfile;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port reuseport;
    location / { return 200 "pong\n"; }
  }
}
EOF
  if ! "$NGINX_BIN" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" 2>>"$tmp/nginx/logs/error.log"; then
    cat "$tmp/nginx/logs/error.log" >&2
    return 1
  fi
  wait_http "http://127.0.0.1:$port/"
  local old
  old=$(cat "$pidfile")
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/" \
    >"$tmp/wrk-nginx-$round.txt" 2>&1 &
  local wrk_pid=$!
  sleep "$UPGRADE_AT"
  if [[ "$round" == baseline ]]; then
    wait "$wrk_pid"
    kill -QUIT "$old"
    wait_gone "$old" 15 || true
    echo "nginx $(summarise "$tmp/wrk-nginx-$round.txt") -"
    return
  fi
  # nginx's documented sequence: USR2 (new master on the inherited sockets, old pid
  # file renamed .oldbin), wait for the new master, then QUIT the old one.
  kill -USR2 "$old"
  for _ in $(seq 1 200); do
    [[ -s "$pidfile" && "$(cat "$pidfile")" != "$old" ]] && break
    sleep 0.05
  done
  local new
  new=$(cat "$pidfile")
  kill -QUIT "$old"
  local exited=no
  wait_gone "$old" 15 && exited=yes
  wait "$wrk_pid"
  kill -QUIT "$new" 2>/dev/null || true
  wait_gone "$new" 15 || true
  echo "nginx $(summarise "$tmp/wrk-nginx-$round.txt") $exited"
}

{
  echo "binary upgrade under keep-alive load: wrk -t$WRK_THREADS -c$CONNECTIONS, ${DURATION}s runs, upgrade at ${UPGRADE_AT}s, $SERVER_THREADS server threads/workers"
  echo "edgegate: $EDGEGATE_BIN ($("$EDGEGATE_BIN" --version)); nginx: $("$NGINX_BIN" -v 2>&1)"
  printf '%-9s %8s %10s %7s %11s %8s %10s\n' server round requests failed max_ms p99_ms old_exited
} | tee "$OUT"
# A baseline run without an upgrade first: the longest request of an ordinary run on this
# machine, to tell the hand-over's own cost from scheduling noise.
rounds="$(seq 1 "$ROUNDS")"
[[ "${BASELINE:-1}" == 1 ]] && rounds="baseline $rounds"
for round in $rounds; do
  for server in edgegate nginx; do
    read -r name req failed max p99 exited < <("run_$server" "$round")
    printf '%-9s %8s %10s %7s %11s %8s %10s\n' "$name" "$round" "$req" "$failed" "$max" "$p99" "$exited" | tee -a "$OUT"
  done
done
echo "summary written to $OUT"
