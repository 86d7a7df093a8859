#!/usr/bin/env bash
# benches/tcp.sh — layer-4 relay: edgegate (protocol = "tcp") vs HAProxy (mode tcp) vs
# nginx (stream), one worker each, on loopback, in one run, the proxy order rotating.
#
#   bash scripts/setup.sh haproxy nginx libnginx-mod-stream
#   benches/tcp.sh            # BULK_MIB=4096 per run, CONNECT_SECONDS=5, ROUNDS=3
#   benches/tcp.sh splice     # edgegate's two relays against each other (and HAProxy)
#
# Proxies (PROXIES): edgegate (the userspace copy relay, EDGEGATE_TCP_RELAY=copy),
# edgegate_splice (the same binary relaying with splice(2), EDGEGATE_TCP_RELAY=splice),
# haproxy, nginx. The `splice` mode runs "edgegate edgegate_splice haproxy" unless
# PROXIES says otherwise. A smoke run with debug builds:
#   EDGEGATE_BIN=target/debug/edgegate LOAD_BIN=target/debug/examples/tcp_load \
#     BULK_MIB=256 CONNECT_SECONDS=1 ROUNDS=1 benches/tcp.sh splice
#
# Two workloads through each proxy to the same backend (examples/tcp_load.rs sink):
# - bulk: BULK_MIB MiB over BULK_CONNECTIONS connections; throughput and the proxy's CPU
#   seconds (user + system, from /proc) per GiB;
# - connect: back-to-back short connections (1 byte each way, half-close) from
#   CONNECT_CONCURRENCY tasks for CONNECT_SECONDS; connections per second and the
#   proxy's CPU seconds per 1,000 connections.
# The proxy is pinned to CPU 0, the backend and the load to CPU 1 (PIN=0 to not pin).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=${1:-all}
case $MODE in
  all) DEFAULT_PROXIES="edgegate haproxy nginx" ;;
  splice) DEFAULT_PROXIES="edgegate edgegate_splice haproxy" ;;
  *) echo "usage: benches/tcp.sh [all|splice]" >&2; exit 2 ;;
esac
BULK_MIB=${BULK_MIB:-4096}
BULK_CONNECTIONS=${BULK_CONNECTIONS:-4}
CONNECT_SECONDS=${CONNECT_SECONDS:-5}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-32}
ROUNDS=${ROUNDS:-3}
PROXIES=${PROXIES:-$DEFAULT_PROXIES}
PIN=${PIN:-1}
EDGEGATE_BIN=${EDGEGATE_BIN:-$REPO/target/release/edgegate}
LOAD_BIN=${LOAD_BIN:-$REPO/target/release/examples/tcp_load}
OUT=${OUT:-/tmp/edgegate-tcp-summary.txt}
[[ -x $EDGEGATE_BIN && -x $LOAD_BIN ]] ||
  (cd "$REPO" && cargo build --release --bin edgegate --example tcp_load)

TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# exec: started with `&`, the program itself is `$!` (so the cleanup stops it).
pin() { if [[ $PIN == 1 ]]; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
# CPU ticks (user + system) of a process and its children.
ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

SINK=$(free_port)
pin 1 "$LOAD_BIN" sink "127.0.0.1:$SINK" & PIDS+=($!)
wait_port "$SINK"

declare -A PORT PID
# start_edgegate_as NAME RELAY: one edgegate process relaying by RELAY (copy or splice).
start_edgegate_as() {
  local name=$1 relay=$2
  PORT[$name]=$(free_port)
  cat > "$TMP/$name.toml" <<TOML
[gateway]
threads = 1
[admin]
address = "127.0.0.1:0"
[[listeners]]
name = "tcp"
address = "127.0.0.1:${PORT[$name]}"
protocol = "tcp"
max_connections = 8000
[[tcp_routes]]
name = "sink"
upstream = "sink"
[upstreams.sink]
endpoints = ["127.0.0.1:$SINK"]
TOML
  EDGEGATE_TCP_RELAY=$relay RUST_LOG=warn pin 0 "$EDGEGATE_BIN" run --config "$TMP/$name.toml" 2>"$TMP/$name.log" &
  PID[$name]=$!
}
start_edgegate() { start_edgegate_as edgegate copy; }
start_edgegate_splice() { start_edgegate_as edgegate_splice splice; }
start_haproxy() {
  PORT[haproxy]=$(free_port)
  cat > "$TMP/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen relay
  bind 127.0.0.1:${PORT[haproxy]}
  server sink 127.0.0.1:$SINK
CFG
  pin 0 haproxy -f "$TMP/haproxy.cfg" -db 2>"$TMP/haproxy.log" &
  PID[haproxy]=$!
}
start_nginx() {
  PORT[nginx]=$(free_port)
  cat > "$TMP/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.log warn;
events { worker_connections 8000; }
stream { server { listen 127.0.0.1:${PORT[nginx]}; proxy_pass 127.0.0.1:$SINK; proxy_half_close on; } }
CONF
  pin 0 nginx -c "$TMP/nginx.conf" &
  PID[nginx]=$!
}
for p in $PROXIES; do "start_$p"; PIDS+=("${PID[$p]}"); wait_port "${PORT[$p]}"; done

: > "$TMP/results"
for round in $(seq "$ROUNDS"); do
  # Rotate the order each round so no proxy always runs first.
  read -r -a order <<<"$PROXIES"
  shift_by=$(( (round - 1) % ${#order[@]} ))
  order=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
  for p in "${order[@]}"; do
    before=$(ticks "${PID[$p]}")
    line=$(pin 1 "$LOAD_BIN" bulk "127.0.0.1:${PORT[$p]}" "$BULK_MIB" "$BULK_CONNECTIONS")
    after=$(ticks "${PID[$p]}")
    echo "$p bulk $line cpu $(( after - before ))" >> "$TMP/results"
    before=$(ticks "${PID[$p]}")
    line=$(pin 1 "$LOAD_BIN" connect "127.0.0.1:${PORT[$p]}" "$CONNECT_SECONDS" "$CONNECT_CONCURRENCY")
    after=$(ticks "${PID[$p]}")
    echo "$p connect $line cpu $(( after - before ))" >> "$TMP/results"
  done
done

{
  echo "# benches/tcp.sh $MODE: BULK_MIB=$BULK_MIB x $BULK_CONNECTIONS conns, CONNECT ${CONNECT_SECONDS}s x $CONNECT_CONCURRENCY, ROUNDS=$ROUNDS (medians)"
  printf "%-16s %12s %14s %12s %16s\n" proxy "bulk MiB/s" "CPU s per GiB" "conn/s" "CPU s per 1k conn"
  for p in $PROXIES; do
    awk -v p="$p" -v hz="$HZ" '
      $1 == p && $2 == "bulk"    { n1++; mbps[n1] = $6; cpg[n1] = ($8 / hz) / ($4 / 1024) }
      $1 == p && $2 == "connect" { n2++; cps[n2] = $6; cpk[n2] = ($10 / hz) / ($4 / 1000) }
      function median(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return a[int((n + 1) / 2)]
      }
      END { printf "%-16s %12.0f %14.3f %12.0f %16.3f\n", p, median(mbps, n1), median(cpg, n1), median(cps, n2), median(cpk, n2) }
    ' "$TMP/results"
  done
  echo "# raw:"; cat "$TMP/results"
} | tee "$OUT"
