#!/usr/bin/env bash
# benches/load.sh — load benchmark: edgegate vs nginx vs HAProxy, one worker each,
# all on loopback, all forwarding with keepalive to one shared nginx origin.
#
#   benches/load.sh            # default run: DURATION=10s, ROUNDS=3
#   benches/load.sh --quick    # smoke run:   DURATION=3s,  ROUNDS=1
#   PROXIES="nginx haproxy" benches/load.sh --quick   # without edgegate
#
# See benches/README.md for what is measured and every knob (environment variables).
set -euo pipefail

# ----------------------------------------------------------------------------------------
# Settings (all overridable from the environment)
# ----------------------------------------------------------------------------------------
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

usage() {
  cat <<EOF
usage: $0 [--quick] [--help]

  --quick   smoke run: DURATION=3s ROUNDS=1 (WARMUP=1s)

Environment (defaults in brackets):
  PROXIES        proxies to compare, in order       ["edgegate nginx haproxy"]
  SCENARIOS      scenarios to run                   ["http_keepalive"]
  DURATION       wrk duration per measured run      [10s]
  ROUNDS         rounds; the proxy order rotates    [3]
  WARMUP         unmeasured wrk run before each run [2s]
  WRK_THREADS    wrk -t                             [2]
  CONNECTIONS    wrk -c                             [64]
  EDGEGATE_BIN   edgegate binary [\$REPO/target/release/edgegate]; built if missing
  EDGEGATE_RUST_LOG  RUST_LOG for edgegate          [warn]
  BASE_PORT      first port tried for auto ports    [18080]
  ORIGIN_PORT EDGEGATE_PORT EDGEGATE_ADMIN_PORT NGINX_PORT HAPROXY_PORT   fixed ports
  PIN            pin processes to CPUs: auto|1|0     [auto: 1 when >= 2 CPUs]
  CPU_PROXY CPU_ORIGIN CPU_WRK   taskset CPU lists  [0, 1, rest (or 1 on 2 CPUs)]
  OUT            summary file                       [/tmp/edgegate-load-summary.txt]
  KEEP_TMP       1 = keep the temp dir (configs, logs, wrk output)   [0]
EOF
}

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ $QUICK == 1 ]]; then
  DURATION=3s
  ROUNDS=1
  WARMUP=${WARMUP:-1s}
fi
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2s}
WRK_THREADS=${WRK_THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
PROXIES=${PROXIES:-"edgegate nginx haproxy"}
SCENARIOS=${SCENARIOS:-"http_keepalive"}
EDGEGATE_BIN=${EDGEGATE_BIN:-$REPO/target/release/edgegate}
EDGEGATE_RUST_LOG=${EDGEGATE_RUST_LOG:-warn}
BASE_PORT=${BASE_PORT:-18080}
OUT=${OUT:-/tmp/edgegate-load-summary.txt}
KEEP_TMP=${KEEP_TMP:-0}
PIN=${PIN:-auto}
READY_TIMEOUT=${READY_TIMEOUT:-10}   # seconds to wait for a process to answer

read -r -a PROXY_LIST <<<"$PROXIES"
for p in "${PROXY_LIST[@]}"; do
  case "$p" in edgegate|nginx|haproxy) ;; *) echo "unknown proxy in PROXIES: $p" >&2; exit 2 ;; esac
done
[[ ${#PROXY_LIST[@]} -gt 0 ]] || { echo "PROXIES is empty" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 2; }

log()  { printf '[load.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die()  { log "error: $*"; exit 1; }
want() { local p; for p in "${PROXY_LIST[@]}"; do [[ $p == "$1" ]] && return 0; done; return 1; }

# wrk-style duration ("10s", "2m", "1h", "500ms") -> whole seconds, rounded up, >= 1.
dur_secs() {
  awk -v d="$1" 'BEGIN {
    n = d; sub(/[a-z]+$/, "", n); u = d; sub(/^[0-9.]+/, "", u)
    m = (u == "" || u == "s") ? 1 : (u == "ms") ? 0.001 : (u == "m") ? 60 : (u == "h") ? 3600 : -1
    if (m < 0 || n == "") { print "bad"; exit }
    s = n * m; r = int(s); if (r < s) r++; if (r < 1) r = 1; print r }'
}
DURATION_S=$(dur_secs "$DURATION"); WARMUP_S=$(dur_secs "$WARMUP")
[[ $DURATION_S != bad && $WARMUP_S != bad ]] || die "bad DURATION ($DURATION) or WARMUP ($WARMUP)"

# ----------------------------------------------------------------------------------------
# Prerequisites
# ----------------------------------------------------------------------------------------
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

apt_install() {
  command -v apt-get >/dev/null || die "missing $*, and no apt-get to install it"
  log "installing: $*"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y "$@" || { as_root apt-get update && as_root apt-get install -y "$@"; }
}

ensure_tools() {
  local missing=() bin
  PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
  for bin in nginx haproxy wrk; do
    command -v "$bin" >/dev/null || missing+=("$bin")
  done
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  for bin in curl awk timeout getconf; do
    command -v "$bin" >/dev/null || die "missing required tool: $bin"
  done
}

ensure_edgegate() {
  want edgegate || return 0
  if [[ ! -x $EDGEGATE_BIN ]]; then
    log "$EDGEGATE_BIN does not exist; building it with cargo build --release"
    command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs) or set EDGEGATE_BIN"
    command -v cmake >/dev/null || apt_install cmake
    (cd "$REPO" && timeout "${BUILD_TIMEOUT:-3600}" cargo build --release)
    [[ -x $EDGEGATE_BIN ]] || die "build finished but $EDGEGATE_BIN is still missing"
  fi
}

# ----------------------------------------------------------------------------------------
# CPU pinning: the proxy under test gets its own CPU, the origin another, wrk the rest.
# ----------------------------------------------------------------------------------------
NCPU=$(nproc 2>/dev/null || echo 1)
if [[ $PIN == auto ]]; then
  if ((NCPU >= 2)) && command -v taskset >/dev/null; then PIN=1; else PIN=0; fi
fi
CPU_PROXY=${CPU_PROXY:-0}
CPU_ORIGIN=${CPU_ORIGIN:-1}
if ((NCPU >= 4)); then CPU_WRK=${CPU_WRK:-2-$((NCPU - 1))}
elif ((NCPU == 3)); then CPU_WRK=${CPU_WRK:-2}
else CPU_WRK=${CPU_WRK:-1}; fi

# Run a command in the foreground, pinned when PIN=1.
run_pinned() {
  local cpus=$1; shift
  if [[ $PIN == 1 ]]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

# ----------------------------------------------------------------------------------------
# Temp dir, process bookkeeping, cleanup
# ----------------------------------------------------------------------------------------
TMP=$(mktemp -d -t edgegate-load.XXXXXX)
RESULTS=$TMP/results.tsv       # scenario round proxy rps p99ms cpu_s requests cpu100k origin100k upconns errors
: >"$RESULTS"
STARTED_PIDS=()                # every background process this script started
declare -A PID_NAME=()         # pid -> name (for messages)
declare -A PROXY_PID=()        # proxy -> root pid, for the current scenario
declare -A PROXY_URL=()        # proxy -> URL wrk hits, for the current scenario
LAST_PID=
WRK_PID=

alive() {  # running and not a zombie
  local st
  [[ -r /proc/$1/stat ]] || return 1
  { st=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
  st=${st##*) }
  [[ ${st%% *} != Z ]]
}

# pid and all its descendants (nginx master + workers, ...), from /proc.
proc_tree() {
  local root=$1 f st rest pid ppid
  local -A kids=()
  for f in /proc/[0-9]*/stat; do
    { st=$(<"$f"); } 2>/dev/null || continue
    pid=${st%% *}
    rest=${st##*) }; rest=${rest#* }; ppid=${rest%% *}
    kids[$ppid]+="$pid "
  done
  local queue=("$root") out=() cur
  while ((${#queue[@]})); do
    cur=${queue[0]}; queue=("${queue[@]:1}")
    out+=("$cur")
    # shellcheck disable=SC2206
    [[ -n ${kids[$cur]:-} ]] && queue+=(${kids[$cur]})
  done
  echo "${out[@]}"
}

# Start a background process, pinned to CPUs; sets LAST_PID (the process itself, not a
# wrapper: the subshell execs taskset, which execs the program).
start_bg() {
  local name=$1 cpus=$2 logf=$3; shift 3
  (
    if [[ $PIN == 1 ]]; then exec taskset -c "$cpus" "$@"; fi
    exec "$@"
  ) </dev/null >>"$logf" 2>&1 &
  LAST_PID=$!
  STARTED_PIDS+=("$LAST_PID")
  PID_NAME[$LAST_PID]=$name
  log "started $name (pid $LAST_PID): $*"
}

stop_pid() {
  local root=$1 pids pid i
  pids=$(proc_tree "$root")
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    local any=0
    for pid in $pids; do alive "$pid" && any=1; done
    ((any)) || break
    sleep 0.1
  done
  for pid in $pids; do alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
  wait "$root" 2>/dev/null || true
}

dump_logs() {
  local f
  for f in "$TMP"/*/*.log "$TMP"/*.log; do
    [[ -s $f ]] || continue
    echo "----- tail of $f" >&2
    tail -n 20 "$f" >&2
  done
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  local pid
  if ((rc >= 128)); then log "interrupted (exit $rc); cleaning up"; fi
  [[ -n $WRK_PID ]] && alive "$WRK_PID" && stop_pid "$WRK_PID"
  for pid in "${STARTED_PIDS[@]}"; do
    alive "$pid" && stop_pid "$pid"
  done
  if ((rc != 0)); then
    dump_logs
  fi
  if [[ $KEEP_TMP == 1 ]]; then
    log "temp dir kept: $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------------------------------
# Ports
# ----------------------------------------------------------------------------------------
NEXT_PORT=$BASE_PORT
declare -A TAKEN_PORTS=()

port_in_use() {
  if command -v ss >/dev/null; then
    [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

# alloc_port VAR: VAR keeps its value if already set in the environment (must be free),
# else the next free port from BASE_PORT.
alloc_port() {
  local var=$1 p
  if [[ -n ${!var:-} ]]; then
    p=${!var}
    port_in_use "$p" && die "$var=$p is already in use"
  else
    while :; do
      p=$NEXT_PORT; NEXT_PORT=$((NEXT_PORT + 1))
      ((p < BASE_PORT + 500)) || die "no free port in $BASE_PORT..$((BASE_PORT + 500))"
      [[ -z ${TAKEN_PORTS[$p]:-} ]] && ! port_in_use "$p" && break
    done
  fi
  TAKEN_PORTS[$p]=1
  printf -v "$var" '%s' "$p"
}

# ----------------------------------------------------------------------------------------
# Readiness: poll until a URL answers 200 (and optionally a given body), bounded.
# ----------------------------------------------------------------------------------------
wait_http() {
  local url=$1 pid=$2 want_body=${3:-} deadline code body
  deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    alive "$pid" || die "${PID_NAME[$pid]:-pid $pid} exited before answering $url"
    code=$(curl -s -o "$TMP/probe.body" -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
    if [[ $code == 200 ]]; then
      body=$(<"$TMP/probe.body")
      if [[ -z $want_body || $body == "$want_body" ]]; then return 0; fi
      die "$url answered 200 with body '$body', expected '$want_body'"
    fi
    sleep 0.1
  done
  die "${PID_NAME[$pid]:-pid $pid}: $url did not answer 200 within ${READY_TIMEOUT}s (last code: ${code:-none})"
}

# ----------------------------------------------------------------------------------------
# nginx helpers (origin and proxy): foreground, own prefix, nothing outside TMP.
# ----------------------------------------------------------------------------------------
nginx_common() {  # $1 = dir
  local d=$1
  if [[ $EUID -eq 0 ]]; then
    # root master: keep workers as root so they can use the private 0700 temp dir
    # (the compiled-in default "nobody" may also lack a matching group on Debian).
    echo "user root root;"
  fi
  cat <<EOF
worker_processes 1;
error_log $d/error.log error;
pid $d/nginx.pid;
events { worker_connections 4096; }
EOF
}

nginx_http_common() {  # $1 = dir
  local d=$1
  mkdir -p "$d/temp"
  cat <<EOF
    access_log off;
    client_body_temp_path $d/temp/client_body;
    proxy_temp_path $d/temp/proxy;
    fastcgi_temp_path $d/temp/fastcgi;
    uwsgi_temp_path $d/temp/uwsgi;
    scgi_temp_path $d/temp/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
EOF
}

start_nginx() {  # name dir conf cpus
  local name=$1 d=$2 conf=$3 cpus=$4
  nginx -t -q -p "$d" -e "$d/error.log" -c "$conf" -g 'daemon off;' >>"$d/$name.log" 2>&1 \
    || { cat "$d/$name.log" >&2; die "$name: nginx -t rejected $conf"; }
  start_bg "$name" "$cpus" "$d/$name.log" nginx -p "$d" -e "$d/error.log" -c "$conf" -g 'daemon off;'
}

# ----------------------------------------------------------------------------------------
# The shared origin: nginx, 1 worker, "ok\n", keepalive; stub_status counts connections.
# ----------------------------------------------------------------------------------------
ORIGIN_PID=
start_origin() {
  [[ -n $ORIGIN_PID ]] && return 0
  alloc_port ORIGIN_PORT
  local d=$TMP/origin
  mkdir -p "$d"
  {
    nginx_common "$d"
    echo "http {"
    nginx_http_common "$d"
    cat <<EOF
    server {
        listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
        location = /__stub_status { stub_status; }
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
  } >"$d/nginx.conf"
  start_nginx origin "$d" "$d/nginx.conf" "$CPU_ORIGIN"
  ORIGIN_PID=$LAST_PID
  wait_http "http://127.0.0.1:$ORIGIN_PORT/" "$ORIGIN_PID" ok
}

# Connections the origin has accepted so far (including the one used to ask).
origin_accepts() {
  curl -s --max-time 2 "http://127.0.0.1:$ORIGIN_PORT/__stub_status" \
    | awk 'f { print $1; exit } /server accepts/ { f = 1 }'
}

# ----------------------------------------------------------------------------------------
# The proxies under test: one worker each, keepalive to the origin, no logging.
# Each start_* sets PROXY_PID[name] and PROXY_URL[name].
# ----------------------------------------------------------------------------------------
start_proxy_edgegate() {
  alloc_port EDGEGATE_PORT
  alloc_port EDGEGATE_ADMIN_PORT
  local d=$TMP/edgegate
  mkdir -p "$d"
  cat >"$d/edgegate.toml" <<EOF
# generated by benches/load.sh
[gateway]
threads = 1
grace_period = "1s"
shutdown_delay = "0s"
access_log = "off"

[admin]
address = "127.0.0.1:$EDGEGATE_ADMIN_PORT"

[[listeners]]
name = "bench"
address = "127.0.0.1:$EDGEGATE_PORT"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "origin"

[upstreams.origin]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
EOF
  "$EDGEGATE_BIN" check --config "$d/edgegate.toml" >"$d/check.log" 2>&1 \
    || { cat "$d/check.log" >&2; die "edgegate check rejected $d/edgegate.toml"; }
  start_bg edgegate "$CPU_PROXY" "$d/edgegate.log" \
    env RUST_LOG="$EDGEGATE_RUST_LOG" "$EDGEGATE_BIN" run --config "$d/edgegate.toml"
  PROXY_PID[edgegate]=$LAST_PID
  PROXY_URL[edgegate]="http://127.0.0.1:$EDGEGATE_PORT/"
  wait_http "http://127.0.0.1:$EDGEGATE_PORT/" "$LAST_PID" ok
  wait_http "http://127.0.0.1:$EDGEGATE_ADMIN_PORT/readyz" "$LAST_PID"
}

start_proxy_nginx() {
  alloc_port NGINX_PORT
  local d=$TMP/nginx
  mkdir -p "$d"
  {
    nginx_common "$d"
    echo "http {"
    nginx_http_common "$d"
    cat <<EOF
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
  } >"$d/nginx.conf"
  start_nginx nginx "$d" "$d/nginx.conf" "$CPU_PROXY"
  PROXY_PID[nginx]=$LAST_PID
  PROXY_URL[nginx]="http://127.0.0.1:$NGINX_PORT/"
  wait_http "http://127.0.0.1:$NGINX_PORT/" "$LAST_PID" ok
}

start_proxy_haproxy() {
  alloc_port HAPROXY_PORT
  local d=$TMP/haproxy
  mkdir -p "$d"
  cat >"$d/haproxy.cfg" <<EOF
# generated by benches/load.sh; no "log" lines: no logging
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 75s

frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend origin

backend origin
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
  haproxy -c -q -f "$d/haproxy.cfg" >"$d/check.log" 2>&1 \
    || { cat "$d/check.log" >&2; die "haproxy -c rejected $d/haproxy.cfg"; }
  start_bg haproxy "$CPU_PROXY" "$d/haproxy.log" haproxy -f "$d/haproxy.cfg" -db
  PROXY_PID[haproxy]=$LAST_PID
  PROXY_URL[haproxy]="http://127.0.0.1:$HAPROXY_PORT/"
  wait_http "http://127.0.0.1:$HAPROXY_PORT/" "$LAST_PID" ok
}

stop_proxies() {
  local p
  for p in "${!PROXY_PID[@]}"; do
    stop_pid "${PROXY_PID[$p]}"
  done
  PROXY_PID=(); PROXY_URL=()
}

# ----------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

# Sum of utime+stime (ticks) over the given pids (all threads of each process).
cpu_ticks() {
  local total=0 pid st
  local -a f
  for pid in "$@"; do
    { st=$(<"/proc/$pid/stat"); } 2>/dev/null || { log "warning: pid $pid vanished during the run"; continue; }
    st=${st##*) }
    read -r -a f <<<"$st"
    total=$((total + f[11] + f[12]))   # fields 14 (utime) and 15 (stime)
  done
  echo "$total"
}

wrk_run() {  # duration url outfile
  local dur=$1 url=$2 out=$3 secs
  secs=$(dur_secs "$dur")
  # wrk is a child of this script (through taskset -> timeout), never of a proxy, and
  # inherits the wrk CPU set; timeout bounds the run.
  # It runs in the background and is waited for, so that a signal to this script is
  # handled at once (cleanup stops it too).
  (
    if [[ $PIN == 1 ]]; then exec taskset -c "$CPU_WRK" timeout -k 5 $((secs + 30)) \
      wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$dur" --latency --timeout 2s "$url"; fi
    exec timeout -k 5 $((secs + 30)) \
      wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$dur" --latency --timeout 2s "$url"
  ) </dev/null >"$out" 2>&1 &
  WRK_PID=$!
  local rc=0
  wait "$WRK_PID" || rc=$?
  WRK_PID=
  return "$rc"
}

to_ms() {  # wrk latency "1.23ms" / "850.00us" / "1.02s" -> ms
  awk -v v="$1" 'BEGIN {
    n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u)
    m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
    if (m < 0 || n == "") print "nan"; else printf "%.3f", n * m }'
}

# measure SCENARIO ROUND PROXY: warm up, then one measured wrk run; appends to RESULTS.
measure() {
  local scen=$1 round=$2 proxy=$3
  local url=${PROXY_URL[$proxy]} root=${PROXY_PID[$proxy]}
  local out=$TMP/wrk.$scen.r$round.$proxy.txt
  local pids opids c0 c1 o0 o1 a0 a1
  alive "$root" || die "$proxy (pid $root) is not running"
  read -r -a pids <<<"$(proc_tree "$root")"
  read -r -a opids <<<"$(proc_tree "$ORIGIN_PID")"

  wrk_run "$WARMUP" "$url" "$out.warmup" || die "$proxy: warm-up wrk failed: $(tail -n 3 "$out.warmup")"

  a0=$(origin_accepts); c0=$(cpu_ticks "${pids[@]}"); o0=$(cpu_ticks "${opids[@]}")
  wrk_run "$DURATION" "$url" "$out" || die "$proxy: wrk failed or timed out: $(tail -n 3 "$out")"
  c1=$(cpu_ticks "${pids[@]}"); o1=$(cpu_ticks "${opids[@]}"); a1=$(origin_accepts)
  alive "$root" || die "$proxy (pid $root) died during the run"

  local now_pids; now_pids=$(proc_tree "$root")
  [[ $now_pids == "${pids[*]}" ]] || log "warning: $proxy process set changed during the run (${pids[*]} -> $now_pids)"

  local rps reqs p99raw p99 errs
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  reqs=$(awk '/ requests in / { print $1; exit }' "$out")
  p99raw=$(awk '$1 == "99%" { print $2; exit }' "$out")
  errs=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
              /Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' "$out")
  [[ -n $rps && -n $reqs && -n $p99raw ]] || { cat "$out" >&2; die "$proxy: could not parse wrk output"; }
  p99=$(to_ms "$p99raw")

  awk -v s="$scen" -v r="$round" -v p="$proxy" -v rps="$rps" -v p99="$p99" -v reqs="$reqs" \
      -v c="$((c1 - c0))" -v o="$((o1 - o0))" -v hz="$CLK_TCK" -v up="$((a1 - a0 - 1))" -v e="$errs" 'BEGIN {
        cpu = c / hz; ocpu = o / hz
        per = (reqs > 0) ? cpu * 100000 / reqs : "nan"; oper = (reqs > 0) ? ocpu * 100000 / reqs : "nan"
        printf "%s\t%s\t%s\t%.2f\t%.3f\t%.2f\t%d\t%.4f\t%.4f\t%d\t%d\n", s, r, p, rps, p99, cpu, reqs, per, oper, up, e }' \
    >>"$RESULTS"
  ((errs == 0)) || log "warning: $proxy: $errs errors / non-2xx responses in round $round (see $out)"
}

print_round_table() {  # scenario round
  awk -F'\t' -v s="$1" -v r="$2" '
    BEGIN { printf "\n[%s] round %s\n", s, r
            printf "  %-9s %12s %9s %8s %11s %13s %13s %9s %7s\n", "proxy", "req/s", "p99 ms", "cpu s", "requests", "cpu s/100k", "origin s/100k", "up conns", "errors" }
    $1 == s && $2 == r {
            printf "  %-9s %12.0f %9.3f %8.2f %11d %13.4f %13.4f %9d %7d\n", $3, $4, $5, $6, $7, $8, $9, $10, $11 }' "$RESULTS"
}

# run_rounds SCENARIO: ROUNDS rounds over the started proxies, rotating the order
# (A B C, B C A, C A B, ...) so slow drifts of the machine hit every proxy alike.
run_rounds() {
  local scen=$1 r i n=${#PROXY_LIST[@]}
  for ((r = 1; r <= ROUNDS; r++)); do
    local order=()
    for ((i = 0; i < n; i++)); do order+=("${PROXY_LIST[$(((r - 1 + i) % n))]}"); done
    log "[$scen] round $r/$ROUNDS: ${order[*]}"
    local p
    for p in "${order[@]}"; do
      log "[$scen] round $r: $p (${PROXY_URL[$p]}, wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION)"
      measure "$scen" "$r" "$p"
    done
    print_round_table "$scen" "$r"
  done
}

# ----------------------------------------------------------------------------------------
# Scenarios. Each one starts what it needs, calls run_rounds, and stops its proxies.
# Add a scenario by writing scenario_NAME and listing NAME in SCENARIOS.
# ----------------------------------------------------------------------------------------

# HTTP/1.1 keepalive, tiny response: raw per-request proxy overhead.
scenario_http_keepalive() {
  start_origin
  local p
  for p in "${PROXY_LIST[@]}"; do "start_proxy_$p"; done
  run_rounds http_keepalive
  stop_proxies
}

# HOOK scenario_https: TLS termination at each proxy, HTTP/1.1 keepalive behind.
#   - make a self-signed cert in $TMP (openssl req -x509 -newkey ec ...);
#   - edgegate: a listener with [listeners.tls] certificates = [{ cert, key }];
#     nginx: listen ... ssl + ssl_certificate; haproxy: bind ... ssl crt PEM;
#   - wrk against https://127.0.0.1:PORT/ (session reuse on keepalive connections);
#   - reuse run_rounds/measure as they are (they only need PROXY_URL/PROXY_PID).
# scenario_https() { ...; run_rounds https; stop_proxies; }

# HOOK scenario_h2: HTTP/2 from the client (h2c prior knowledge and/or TLS+ALPN h2).
#   - load generator: h2load (apt-get install nghttp2-client) instead of wrk: add an
#     h2load_run + parser next to wrk_run/measure producing the same RESULTS columns;
#   - edgegate: the plain listener already takes h2c with prior knowledge;
#     nginx: listen ... http2 (TLS in 1.22 for real browsers); haproxy: bind ... proto h2.
# scenario_h2() { ...; run_rounds h2; stop_proxies; }

# HOOK scenario_reload_under_load: configuration reloads while wrk runs.
#   - run wrk in the background on each proxy, and during it reload N times:
#     edgegate: rewrite the config (or kill -HUP) and wait for
#     edgegate_config_generation to rise on the admin /metrics; nginx: kill -HUP the
#     master; haproxy: start it with -W (master-worker) and kill -USR2 the master;
#   - report errors (socket errors + non-2xx) and p99 during reloads rather than req/s.
# scenario_reload_under_load() { ...; stop_proxies; }

# ----------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------
version_of() {
  case "$1" in
    edgegate) "$EDGEGATE_BIN" --version 2>&1 | head -n 1 || true ;;
    nginx) nginx -v 2>&1 | head -n 1 || true ;;
    haproxy) haproxy -v 2>&1 | head -n 1 || true ;;
    wrk) { wrk -v 2>&1 || true; } | head -n 1 ;;
  esac
}

summarize() {
  {
    echo "edgegate load benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $NCPU CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null))"
    echo "load average at start: $LOADAVG_START (other work on the machine makes every number noisier)"
    if [[ $PIN == 1 ]]; then
      echo "pinning: proxy cpu $CPU_PROXY, origin cpu $CPU_ORIGIN, wrk cpu $CPU_WRK"
    else
      echo "pinning: none"
    fi
    echo "load: wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP), $ROUNDS round(s), order rotated each round"
    echo "origin: nginx, 1 worker, 200 \"ok\\n\"; every proxy: 1 worker/thread, HTTP/1.1 keepalive to the origin, no access log"
    local p
    for p in "${PROXY_LIST[@]}" wrk; do echo "  $p: $(version_of "$p")"; done
    local scen
    for scen in $SCENARIOS; do
      echo
      echo "scenario $scen — median over $ROUNDS round(s)"
      awk -F'\t' -v s="$scen" -v order="$PROXIES" '
        function median(list,   a, n, i, j, t) {
          n = split(list, a, " ")
          for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
          if (n == 0) return "nan"
          return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function ratio(a, b) { return (b + 0 > 0 && a != "nan") ? sprintf("%.3f", a / b) : "n/a" }
        $1 == s { rps[$3] = rps[$3] " " $4; p99[$3] = p99[$3] " " $5; cpu[$3] = cpu[$3] " " $8
                  up[$3] += $10; err[$3] += $11; nr[$3]++ }
        END {
          printf "  %-9s %12s %9s %12s %13s %7s\n", "proxy", "req/s", "p99 ms", "cpu s/100k", "new up conns", "errors"
          n = split(order, names, " ")
          for (i = 1; i <= n; i++) {
            p = names[i]; if (!(p in nr)) continue
            R[p] = median(rps[p]); L[p] = median(p99[p]); C[p] = median(cpu[p])
            printf "  %-9s %12.0f %9.3f %12.4f %13d %7d\n", p, R[p], L[p], C[p], up[p], err[p]
          }
          printf "  (req/s, p99, cpu: medians; new up conns: connections opened to the origin during the measured runs, all rounds; errors: socket errors + non-2xx, all rounds)\n"
          if ("edgegate" in nr) {
            printf "\n  %-18s %12s %9s %12s\n", "ratio", "req/s", "p99", "cpu/100k"
            for (i = 1; i <= n; i++) {
              p = names[i]; if (p == "edgegate" || !(p in nr)) continue
              printf "  %-18s %12s %9s %12s\n", "edgegate/" p, ratio(R["edgegate"], R[p]), ratio(L["edgegate"], L[p]), ratio(C["edgegate"], C[p])
            }
            printf "  (req/s: higher is better; p99 and cpu/100k: lower is better)\n"
          }
          for (p in err) if (err[p] > 0) printf "  WARNING: %s had %d errors/non-2xx responses; its numbers are suspect\n", p, err[p]
        }' "$RESULTS"
    done
    echo
    echo "per-run results (scenario round proxy req/s p99ms cpu_s requests cpu_s/100k origin_cpu_s/100k upstream_conns errors):"
    sed 's/^/  /' "$RESULTS"
  } >"$TMP/summary.txt"
  echo
  cat "$TMP/summary.txt"
  mkdir -p "$(dirname "$OUT")"
  cp "$TMP/summary.txt" "$OUT"
  log "summary written to $OUT"
}

# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------
LOADAVG_START=
main() {
  LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
  ensure_tools
  ensure_edgegate
  log "proxies: ${PROXY_LIST[*]}; scenarios: $SCENARIOS; duration $DURATION x $ROUNDS round(s); tmp $TMP"
  local scen
  for scen in $SCENARIOS; do
    declare -F "scenario_$scen" >/dev/null || die "unknown scenario: $scen"
  done
  for scen in $SCENARIOS; do
    "scenario_$scen"
  done
  summarize
}

main
