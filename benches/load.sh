#!/usr/bin/env bash
# benches/load.sh — load benchmark: edgegate vs a bare pingora proxy vs nginx vs HAProxy,
# one worker each, all on loopback, all forwarding with keepalive to one shared nginx origin.
#
#   benches/load.sh            # default run: every scenario, DURATION=10s, ROUNDS=3
#   benches/load.sh --quick    # smoke run:   DURATION=3s,  ROUNDS=1
#   PROXIES="nginx haproxy" benches/load.sh --quick   # without edgegate
#   SCENARIOS="https_keepalive h2_tls" benches/load.sh  # some scenarios only
#   PROXIES="edgegate edgegate_traced edgegate_logged" SCENARIOS=http_keepalive benches/load.sh
#                              # the price of span export and of the access log, one run
#   PROXIES="edgegate edgegate_jwt_rs256 edgegate_jwt_es256 edgegate_basic" \
#     SCENARIOS="http_keepalive auth_flood" benches/load.sh
#                              # the price of authentication, and a wrong-password flood
#   PROXIES="edgegate edgegate_policy edgegate_zstd edgegate_br edgegate_redis nginx" \
#     SCENARIOS="http_keepalive compress_json global_limit" benches/load.sh
#                              # traffic policy: a policy route beside the plain one,
#                              # compression against nginx's gzip, a Redis-shared limit
#
# Scenarios: http_keepalive, https_keepalive, h2_tls, tls_handshakes,
# tls_resumed_handshakes, reload_under_load, compress_json, global_limit (see
# benches/README.md); auth_flood runs only when named.
#
# See benches/README.md for what is measured and every knob (environment variables).
set -euo pipefail

# ----------------------------------------------------------------------------------------
# Settings (all overridable from the environment)
# ----------------------------------------------------------------------------------------
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
ALL_SCENARIOS="http_keepalive https_keepalive h2_tls tls_handshakes tls_resumed_handshakes reload_under_load compress_json global_limit"

usage() {
  cat <<EOF
usage: $0 [--quick] [--help]

  --quick   smoke run: DURATION=3s ROUNDS=1 WARMUP=1s (reloads: 5 in 3s)

Environment (defaults in brackets):
  PROXIES        proxies to compare, in order       ["edgegate bare_pingora nginx haproxy"]
                 bare_pingora = examples/bare_pingora.rs: pingora's own Server and a
                 ProxyHttp with only upstream_peer (no config reload: n/a in reload_under_load)
                 edgegate_traced = the edgegate binary with [gateway.tracing] at
                 sample_ratio = 1.0, exporting every span to a local OTLP sink (an nginx
                 answering 200 to each POST, on the origin's CPU)
                 edgegate_logged = the edgegate binary with access_log to a file
                 (both n/a in reload_under_load)
                 edgegate_policy = the edgegate binary, its route with allow, a local
                 rate_limit that never refuses and cors (POLICY_ROUTE); every wrk request
                 of the run then carries "Origin: POLICY_ORIGIN" (all rows alike)
                 edgegate_zstd, edgegate_br = the edgegate binary in compress_json asked
                 for zstd or br (the "edgegate" row there is asked for gzip, like nginx);
                 n/a in every other scenario
                 edgegate_redis = the edgegate binary, its route with a scope = "global"
                 rate_limit (never refusing) in a local redis-server (on the origin's CPU)
                 edgegate_jwt_rs256, edgegate_jwt_es256 = the edgegate binary with its
                 route behind a jwt authenticator (JWKS file), wrk sending a valid RS256
                 or ES256 token; edgegate_basic = behind basic auth (a bcrypt users file),
                 wrk sending the right password, verified once and then cached;
                 edgegate_token = the plain route, wrk sending the RS256 row's token
                 (which nothing checks): the same bytes on the wire as
                 edgegate_jwt_rs256, so the two differ by the verification alone
                 (the three: http_keepalive, https_keepalive and h2_tls only)
  SCENARIOS      scenarios to run, or "all"         [all]
                 all = $ALL_SCENARIOS
                 auth_flood (named only): FLOOD_CONNECTIONS connections send wrong
                 passwords, each one new, to a basic-auth route of the edgegate row while
                 PROBE_CONNECTIONS measure a plain route on the same worker (p99 with and
                 without the flood)
  FLOOD_CONNECTIONS PROBE_CONNECTIONS   auth_flood: wrk -c of the flood and the probe   [64, 16]
  FLOOD_CPU_PROXY   auth_flood: CPUs of edgegate, bcrypt's blocking threads included  [CPU_PROXY]
  BCRYPT_COST    cost of the bench users' bcrypt hashes (htpasswd -C)   [10]
  DURATION       duration per measured run          [10s]
  ROUNDS         rounds; the proxy order rotates    [3]
  WARMUP         unmeasured run before each run     [2s]
  WRK_THREADS    wrk -t                             [2]
  CONNECTIONS    wrk -c                             [64]
  H2_CLIENTS H2_STREAMS   h2_tls: h2load -c / -m    [32, 10]
  H2LOAD_THREADS h2load -t                          [1 when wrk has 1 CPU, else WRK_THREADS]
  HS_CLIENTS     tls_handshakes: parallel "openssl s_time -new" processes   [8]
  HS_CONNECTIONS tls_resumed_handshakes: h2load -c  [32]
  RELOADS RELOAD_INTERVAL RELOAD_DURATION RELOAD_CONNECTIONS
                 reload_under_load: reloads every RELOAD_INTERVAL s during a
                 RELOAD_DURATION wrk run with RELOAD_CONNECTIONS connections   [20, 0.5, 10s, 32]
  RELOAD_WRITE   how edgegate's config is rewritten: inplace|rename   [inplace]
  POLICY_ROUTE   TOML lines of the edgegate_policy row's route
                 [allow = ["127.0.0.0/8"], rate_limit of 1e9 per 1s, cors for POLICY_ORIGIN]
  POLICY_ORIGIN  the Origin its requests carry     [https://app.example.com]
  NGINX_GZIP_LEVEL  compress_json: nginx gzip_comp_level (edgegate's gzip is level 6)  [6]
  JSON_BYTES     compress_json: size of the origin's JSON answer   [20480]
  LAT_CONNECTIONS global_limit: wrk -t1 -c (a light load, so latency is not queueing)  [4]
  REDIS_PORT     fixed port for the edgegate_redis row's redis-server
  EDGEGATE_BIN   edgegate binary [\$REPO/target/release/edgegate]; built if missing
  EDGEGATE_RUST_LOG  RUST_LOG for edgegate          [warn]
  BARE_PINGORA_BIN   bare pingora example binary
                 [\$REPO/target/release/examples/bare_pingora]; built if missing
  BASE_PORT      first port tried for auto ports    [18080]
  ORIGIN_PORT EDGEGATE_PORT EDGEGATE_ADMIN_PORT BARE_PINGORA_PORT NGINX_PORT HAPROXY_PORT
                 fixed ports
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
  RELOADS=${RELOADS:-5}
  RELOAD_DURATION=${RELOAD_DURATION:-3s}
fi
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2s}
WRK_THREADS=${WRK_THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
PROXIES=${PROXIES:-"edgegate bare_pingora nginx haproxy"}
SCENARIOS=${SCENARIOS:-all}
[[ $SCENARIOS == all ]] && SCENARIOS=$ALL_SCENARIOS
H2_CLIENTS=${H2_CLIENTS:-32}
H2_STREAMS=${H2_STREAMS:-10}
HS_CLIENTS=${HS_CLIENTS:-8}
HS_CONNECTIONS=${HS_CONNECTIONS:-32}
RELOADS=${RELOADS:-20}
RELOAD_INTERVAL=${RELOAD_INTERVAL:-0.5}
RELOAD_DURATION=${RELOAD_DURATION:-10s}
RELOAD_CONNECTIONS=${RELOAD_CONNECTIONS:-32}
RELOAD_WRITE=${RELOAD_WRITE:-inplace}
POLICY_ORIGIN=${POLICY_ORIGIN:-https://app.example.com}
POLICY_ROUTE=${POLICY_ROUTE:-$(printf 'allow = ["127.0.0.0/8"]\nrate_limit = { requests = 1000000000, per = "1s" }\ncors = { allow_origins = ["%s"], allow_methods = ["GET"] }' "$POLICY_ORIGIN")}
NGINX_GZIP_LEVEL=${NGINX_GZIP_LEVEL:-6}
JSON_BYTES=${JSON_BYTES:-20480}
LAT_CONNECTIONS=${LAT_CONNECTIONS:-4}
EDGEGATE_BIN=${EDGEGATE_BIN:-$REPO/target/release/edgegate}
# A second edgegate build to compare against in the same run (say, the previous release),
# shown as the row "edgegate_base"; required only when PROXIES names it.
EDGEGATE_BASE_BIN=${EDGEGATE_BASE_BIN:-}
# TOML lines added to the "edgegate" row's route and upstream tables (not edgegate_base's),
# e.g. EDGEGATE_UPSTREAM_EXTRA='retry_budget = "20%"' to price a feature in one run.
EDGEGATE_ROUTE_EXTRA=${EDGEGATE_ROUTE_EXTRA:-}
EDGEGATE_UPSTREAM_EXTRA=${EDGEGATE_UPSTREAM_EXTRA:-}
EDGEGATE_RUST_LOG=${EDGEGATE_RUST_LOG:-warn}
BARE_PINGORA_BIN=${BARE_PINGORA_BIN:-$REPO/target/release/examples/bare_pingora}
BASE_PORT=${BASE_PORT:-18080}
OUT=${OUT:-/tmp/edgegate-load-summary.txt}
KEEP_TMP=${KEEP_TMP:-0}
PIN=${PIN:-auto}
READY_TIMEOUT=${READY_TIMEOUT:-10}   # seconds to wait for a process to answer

read -r -a PROXY_LIST <<<"$PROXIES"
AUTH_ROWS="edgegate_jwt_rs256 edgegate_jwt_es256 edgegate_basic edgegate_token"
for p in "${PROXY_LIST[@]}"; do
  case "$p" in edgegate|edgegate_base|edgegate_traced|edgegate_logged|edgegate_jwt_rs256|edgegate_jwt_es256|edgegate_basic|edgegate_token|edgegate_policy|edgegate_zstd|edgegate_br|edgegate_redis|bare_pingora|nginx|haproxy) ;; *) echo "unknown proxy in PROXIES: $p" >&2; exit 2 ;; esac
done
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-64}
PROBE_CONNECTIONS=${PROBE_CONNECTIONS:-16}
BCRYPT_COST=${BCRYPT_COST:-10}
[[ ${#PROXY_LIST[@]} -gt 0 ]] || { echo "PROXIES is empty" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 2; }

log()  { printf '[load.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die()  { log "error: $*"; exit 1; }
want() { local p; for p in "${PROXY_LIST[@]}"; do [[ $p == "$1" ]] && return 0; done; return 1; }
is_auth_row() { [[ " $AUTH_ROWS " == *" $1 "* ]]; }
# Whether the run needs the authentication fixtures (users file, keys, tokens).
wants_auth() {
  local p
  for p in "${PROXY_LIST[@]}"; do is_auth_row "$p" && return 0; done
  [[ " $SCENARIOS " == *" auth_flood "* ]]
}

# wrk-style duration ("10s", "2m", "1h", "500ms") -> whole seconds, rounded up, >= 1.
dur_secs() {
  awk -v d="$1" 'BEGIN {
    n = d; sub(/[a-z]+$/, "", n); u = d; sub(/^[0-9.]+/, "", u)
    m = (u == "" || u == "s") ? 1 : (u == "ms") ? 0.001 : (u == "m") ? 60 : (u == "h") ? 3600 : -1
    if (m < 0 || n == "") { print "bad"; exit }
    s = n * m; r = int(s); if (r < s) r++; if (r < 1) r = 1; print r }'
}
DURATION_S=$(dur_secs "$DURATION"); WARMUP_S=$(dur_secs "$WARMUP"); RELOAD_DURATION_S=$(dur_secs "$RELOAD_DURATION")
[[ $DURATION_S != bad && $WARMUP_S != bad ]] || die "bad DURATION ($DURATION) or WARMUP ($WARMUP)"
[[ $RELOAD_DURATION_S != bad ]] || die "bad RELOAD_DURATION ($RELOAD_DURATION)"
[[ $RELOADS =~ ^[1-9][0-9]*$ ]] || die "RELOADS must be a positive integer"
[[ $RELOAD_INTERVAL =~ ^[0-9]*\.?[0-9]+$ ]] || die "RELOAD_INTERVAL must be a number of seconds"
[[ $RELOAD_WRITE == inplace || $RELOAD_WRITE == rename ]] || die "RELOAD_WRITE must be inplace or rename"
for n in H2_CLIENTS H2_STREAMS HS_CLIENTS HS_CONNECTIONS RELOAD_CONNECTIONS FLOOD_CONNECTIONS PROBE_CONNECTIONS BCRYPT_COST JSON_BYTES LAT_CONNECTIONS NGINX_GZIP_LEVEL; do
  [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer"
done

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
  # command -> Debian package
  local -A pkg=([nginx]=nginx [haproxy]=haproxy [wrk]=wrk [h2load]=nghttp2-client [openssl]=openssl)
  for bin in nginx haproxy wrk h2load openssl; do
    command -v "$bin" >/dev/null || missing+=("${pkg[$bin]}")
  done
  if want edgegate_redis; then
    command -v redis-server >/dev/null || missing+=(redis-server)
  fi
  # htpasswd makes the bcrypt hashes of the basic-auth rows (Debian apache2-utils).
  if wants_auth; then
    command -v htpasswd >/dev/null || missing+=(apache2-utils)
  fi
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  for bin in curl awk timeout getconf; do
    command -v "$bin" >/dev/null || die "missing required tool: $bin"
  done
}

ensure_edgegate() {
  want edgegate || want edgegate_traced || want edgegate_logged || wants_auth \
    || want edgegate_policy || want edgegate_zstd || want edgegate_br || want edgegate_redis \
    || return 0
  if [[ ! -x $EDGEGATE_BIN ]]; then
    log "$EDGEGATE_BIN does not exist; building it with cargo build --release"
    command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs) or set EDGEGATE_BIN"
    command -v cmake >/dev/null || apt_install cmake
    (cd "$REPO" && timeout "${BUILD_TIMEOUT:-3600}" cargo build --release)
    [[ -x $EDGEGATE_BIN ]] || die "build finished but $EDGEGATE_BIN is still missing"
  fi
}

ensure_bare_pingora() {
  want bare_pingora || return 0
  if [[ ! -x $BARE_PINGORA_BIN ]]; then
    log "$BARE_PINGORA_BIN does not exist; building it with cargo build --release --example bare_pingora"
    command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs) or set BARE_PINGORA_BIN"
    command -v cmake >/dev/null || apt_install cmake
    (cd "$REPO" && timeout "${BUILD_TIMEOUT:-3600}" cargo build --release --example bare_pingora)
    [[ -x $BARE_PINGORA_BIN ]] || die "build finished but $BARE_PINGORA_BIN is still missing"
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
RESULTS=$TMP/results.tsv       # scenario round proxy rate lat1ms cpu_s count cpu_per origin_per upconns errors lat2ms cpu_pct user_per sys_per
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
wait_http() {  # url pid [want-body [request-header]]
  local url=$1 pid=$2 want_body=${3:-} deadline code body
  local -a header=()
  [[ -n ${4:-} ]] && header=(-H "$4")
  deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    alive "$pid" || die "${PID_NAME[$pid]:-pid $pid} exited before answering $url"
    code=$(curl -s -o "$TMP/probe.body" -w '%{http_code}' --max-time 1 --cacert "$TLS_DIR/ca.pem" "${header[@]}" "$url" 2>/dev/null || true)
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
        location = /bench.json { default_type application/json; root $d; }
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
  } >"$d/nginx.conf"
  make_json "$JSON_BYTES" >"$d/bench.json"
  start_nginx origin "$d" "$d/nginx.conf" "$CPU_ORIGIN"
  ORIGIN_PID=$LAST_PID
  wait_http "http://127.0.0.1:$ORIGIN_PORT/" "$ORIGIN_PID" ok
}

# An API-like JSON answer of BYTES: records with ids, names, cities, amounts and flags
# from a fixed pseudo-random sequence, so it compresses like real JSON does (not like one
# repeated line) and is the same in every run.
make_json() {  # bytes
  awk -v want="$1" 'BEGIN {
    srand(19); split("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda", w, " ")
    split("Lisbon Oslo Quito Lima Hanoi Dakar Perth Tunis Sofia Riga", c, " ")
    out = "{\"items\":["; n = 0
    while (length(out) < want - 200) {
      rec = sprintf("%s{\"id\":%d,\"sku\":\"%s-%05d\",\"name\":\"%s %s\",\"city\":\"%s\",\"amount\":%.2f,\"qty\":%d,\"active\":%s,\"tags\":[\"%s\",\"%s\"]}",
        (n ? "," : ""), 100000 + n * 7, toupper(substr(w[1 + int(rand() * 11)], 1, 3)), int(rand() * 99999),
        w[1 + int(rand() * 11)], w[1 + int(rand() * 11)], c[1 + int(rand() * 10)], rand() * 1000,
        int(rand() * 50), (rand() < 0.5 ? "true" : "false"), w[1 + int(rand() * 11)], w[1 + int(rand() * 11)])
      out = out rec; n++
    }
    out = out "],\"count\":" n ",\"next\":null}"
    while (length(out) < want - 1) out = out " "
    print out
  }'
}

# Connections the origin has accepted so far (including the one used to ask).
origin_accepts() {
  curl -s --max-time 2 "http://127.0.0.1:$ORIGIN_PORT/__stub_status" \
    | awk 'f { print $1; exit } /server accepts/ { f = 1 }'
}

# ----------------------------------------------------------------------------------------
# TLS material: one throwaway CA and one server certificate (ECDSA P-256) for
# bench.example.com and IP 127.0.0.1, served by every proxy alike.
# ----------------------------------------------------------------------------------------
TLS_DIR=$TMP/tls
make_certs() {
  local d=$TLS_DIR
  mkdir -p "$d"
  (
    cd "$d"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 7 -subj "/CN=edgegate bench CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out ca.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
    openssl req -new -key server.key -subj "/CN=bench.example.com" -out server.csr
    printf '%s\n' "subjectAltName=DNS:bench.example.com,IP:127.0.0.1" \
      "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 -sha256 \
      -extfile server.ext -out server.pem
    cat server.pem server.key >server.full.pem   # HAProxy: certificate and key in one file
  ) >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "could not make the TLS certificates"; }
  chmod 600 "$d"/*.key "$d/server.full.pem"
  log "TLS: CA and server certificate (ECDSA P-256, bench.example.com + IP 127.0.0.1) in $d"
}

# ----------------------------------------------------------------------------------------
# Authentication material, made once per run with real tools: a bcrypt users file
# (htpasswd -B), an RSA 2048 and an ECDSA P-256 key (openssl) published in one JWKS file,
# and one RS256 and one ES256 token (signed by openssl, valid for a day).
# ----------------------------------------------------------------------------------------
AUTH_DIR=$TMP/auth
AUTH_USER=bench
AUTH_PASSWORD=bench-s3cret
BASIC_HEADER= RS256_HEADER= ES256_HEADER=
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# Hex digits on stdin -> those bytes on stdout.
hex2bin() { local h; h=$(tr -d ' \n:'); printf '%b' "$(sed 's/../\\x&/g' <<<"$h")"; }
make_auth_fixtures() {
  [[ -n $BASIC_HEADER ]] && return 0
  local d=$AUTH_DIR
  mkdir -p "$d"
  htpasswd -nbB -C "$BCRYPT_COST" "$AUTH_USER" "$AUTH_PASSWORD" >"$d/users.htpasswd" 2>"$d/htpasswd.log" \
    || { cat "$d/htpasswd.log" >&2; die "htpasswd could not make the bcrypt users file"; }
  grep -q "^$AUTH_USER:[\$]2[aby][\$]" "$d/users.htpasswd" || die "htpasswd did not write a bcrypt hash"
  BASIC_HEADER="Authorization: Basic $(printf '%s:%s' "$AUTH_USER" "$AUTH_PASSWORD" | openssl base64 -A)"
  (
    set -e
    cd "$d"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rs.key
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out es.key
  ) >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "could not make the JWT keys"; }
  chmod 600 "$d"/*.key
  # RSA: n from the modulus; e is openssl's default, 65537 (checked).
  openssl rsa -in "$d/rs.key" -noout -text 2>/dev/null | grep -q 'publicExponent: 65537' \
    || die "the RSA key's exponent is not 65537"
  local n x y
  n=$(openssl rsa -in "$d/rs.key" -noout -modulus | cut -d= -f2 | hex2bin | b64url)
  # EC: the DER public key ends with the uncompressed point 04 || X || Y.
  openssl ec -in "$d/es.key" -pubout -outform DER 2>/dev/null | tail -c 64 >"$d/es.xy"
  x=$(head -c 32 "$d/es.xy" | b64url); y=$(tail -c 32 "$d/es.xy" | b64url)
  printf '{"keys":[{"kty":"RSA","kid":"bench-rs","alg":"RS256","use":"sig","n":"%s","e":"AQAB"},{"kty":"EC","crv":"P-256","kid":"bench-es","alg":"ES256","use":"sig","x":"%s","y":"%s"}]}\n' \
    "$n" "$x" "$y" >"$d/jwks.json"
  local now claims input sig r s
  now=$(date +%s)
  claims=$(printf '{"sub":"%s","iss":"https://bench.example/","aud":"bench","iat":%d,"exp":%d}' \
    "$AUTH_USER" "$now" $((now + 86400)) | b64url)
  input="$(printf '{"alg":"RS256","typ":"JWT","kid":"bench-rs"}' | b64url).$claims"
  sig=$(printf '%s' "$input" | openssl dgst -sha256 -sign "$d/rs.key" -binary | b64url)
  RS256_HEADER="Authorization: Bearer $input.$sig"
  # ES256: openssl signs in DER (a SEQUENCE of two INTEGERs); a JWS carries r || s, 32
  # bytes each, big-endian.
  input="$(printf '{"alg":"ES256","typ":"JWT","kid":"bench-es"}' | b64url).$claims"
  printf '%s' "$input" | openssl dgst -sha256 -sign "$d/es.key" -binary >"$d/es.sig.der"
  read -r r s < <(openssl asn1parse -inform DER -in "$d/es.sig.der" | awk -F: '/INTEGER/ { printf "%s ", $NF } END { print "" }')
  [[ -n ${r:-} && -n ${s:-} ]] || die "could not read the ES256 signature"
  sig=$(printf '%s%s' "$(pad64 "$r")" "$(pad64 "$s")" | hex2bin | b64url)
  ES256_HEADER="Authorization: Bearer $input.$sig"
  log "auth: bcrypt (cost $BCRYPT_COST) users file, a JWKS with an RS256 and an ES256 key, their tokens; in $d"
}
# A hex integer as exactly 64 digits (left-padded with zeros, a sign byte dropped).
pad64() { local v; v=$(printf '%064s' "$1" | tr ' ' 0); printf '%s' "${v: -64}"; }

# The bench authenticators, as TOML appended to an edgegate config.
auth_tables() {
  cat <<EOF

[auth.bench_basic]
type = "basic"
users_file = "$AUTH_DIR/users.htpasswd"
realm = "bench"

[auth.bench_jwt]
type = "jwt"
jwks_file = "$AUTH_DIR/jwks.json"
issuer = "https://bench.example/"
audiences = ["bench"]
EOF
}

# tls_probe PROXY PORT: what a handshake negotiates (verified against the bench CA for
# IP 127.0.0.1), the ALPN answer to "h2,http/1.1", and whether a session resumes.
declare -A TLS_INFO=()
tls_probe() {
  local proxy=$1 port=$2 v resumed=no f=$TMP/tls.probe
  timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername bench.example.com \
    -CAfile "$TLS_DIR/ca.pem" -verify_return_error -verify_ip 127.0.0.1 -alpn h2,http/1.1 \
    </dev/null >"$f" 2>&1 || true
  v=$(awk '
    /^New, /                  { proto = $2; sub(/,$/, "", proto); cipher = $NF }
    /^Server Temp Key:/       { group = $4; sub(/,$/, "", group) }
    /^ALPN protocol:/         { alpn = $3 }
    /^Verify return code: 0 / { ok = 1 }
    END { if (proto == "" || !ok) exit 1; print proto, cipher, (group == "" ? "?" : group), (alpn == "" ? "none" : alpn) }' "$f") \
    || { tail -n 20 "$f" >&2; die "$proxy: TLS handshake on port $port failed or the certificate was not verified"; }
  local proto cipher group alpn
  read -r proto cipher group alpn <<<"$v"
  # Resumption: save the session (after a whole HTTP exchange, so TLS 1.3 tickets have
  # arrived), then offer it on a second connection.
  rm -f "$TMP/tls.sess"
  printf 'GET / HTTP/1.0\r\nHost: bench.example.com\r\n\r\n' | timeout 5 openssl s_client \
    -connect "127.0.0.1:$port" -servername bench.example.com -sess_out "$TMP/tls.sess" -ign_eof >/dev/null 2>&1 || true
  if [[ -s $TMP/tls.sess ]] && printf 'GET / HTTP/1.0\r\nHost: bench.example.com\r\n\r\n' | timeout 5 openssl s_client \
      -connect "127.0.0.1:$port" -servername bench.example.com -sess_in "$TMP/tls.sess" -ign_eof 2>/dev/null | grep -q -a '^Reused,'; then
    resumed=yes
  fi
  TLS_INFO[$proxy]="$proto $cipher $group, ALPN (offered h2,http/1.1): $alpn, certificate verified, session resumption: $resumed"
  log "$proxy TLS: ${TLS_INFO[$proxy]}"
}

# ----------------------------------------------------------------------------------------
# The proxies under test: one worker each, keepalive to the origin, no logging.
# start_proxy_NAME [MODE]: MODE is "plain" (HTTP/1.1, the default), "tls" (TLS termination
# with the bench certificate, ALPN h2 and http/1.1, TLS 1.2 and 1.3) or "reload" (plain,
# with a response header x-reload: GENERATION that the reload scenario changes; HAProxy
# in master-worker mode). Each start_* sets PROXY_PID[name] and PROXY_URL[name].
# write_config_NAME MODE GENERATION writes that proxy's config file.
# ----------------------------------------------------------------------------------------
write_config_edgegate() {  # mode generation
  local mode=$1 gen=$2 d=$TMP/edgegate
  cat <<EOF
# generated by benches/load.sh
[gateway]
threads = 1
grace_period = "1s"
shutdown_delay = "0s"
access_log = "${ACCESS_LOG:-off}"
${GATEWAY_EXTRA:-}

[admin]
address = "127.0.0.1:$EDGEGATE_ADMIN_PORT"

[[listeners]]
name = "bench"
address = "127.0.0.1:$EDGEGATE_PORT"
EOF
  if [[ $mode == tls ]]; then
    cat <<EOF
[listeners.tls]
certificates = [{ cert = "$TLS_DIR/server.pem", key = "$TLS_DIR/server.key" }]
min_version = "1.2"
EOF
  fi
  cat <<EOF

[[routes]]
name = "all"
path_prefix = "/"
upstream = "origin"
${ROUTE_EXTRA:-}
EOF
  [[ $mode == compress ]] && echo "compress = true"
  [[ $mode == reload ]] && echo "response_headers = { set = { \"x-reload\" = \"$gen\" } }"
  cat <<EOF
${MORE_ROUTES:-}

[upstreams.origin]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
${UPSTREAM_EXTRA:-}
${AUTH_TABLES:-}
EOF
}

start_proxy_edgegate() {
  start_edgegate_as edgegate "$EDGEGATE_BIN" "${1:-plain}"
}

start_proxy_edgegate_base() {
  [[ -x $EDGEGATE_BASE_BIN ]] || die "PROXIES names edgegate_base: set EDGEGATE_BASE_BIN to an edgegate binary"
  start_edgegate_as edgegate_base "$EDGEGATE_BASE_BIN" "${1:-plain}"
}

# The price of span export: every request sampled, every span sent to a local sink.
start_proxy_edgegate_traced() {
  start_otlp_sink
  GATEWAY_EXTRA=$(printf '[gateway.tracing]\notlp_endpoint = "http://127.0.0.1:%s/v1/traces"\nsample_ratio = 1.0\n' "$OTLP_SINK_PORT") \
    start_edgegate_as edgegate_traced "$EDGEGATE_BIN" "${1:-plain}"
}

# The price of a route's traffic policy: allow, a local rate limit that never refuses
# and CORS, every request from an allowed origin.
start_proxy_edgegate_policy() {
  ROW_ROUTE_EXTRA=$POLICY_ROUTE start_edgegate_as edgegate_policy "$EDGEGATE_BIN" "${1:-plain}"
  local url=${PROXY_URL[edgegate_policy]} head
  head=$(curl -s -o /dev/null -D - --max-time 2 --cacert "$TLS_DIR/ca.pem" -H "Origin: $POLICY_ORIGIN" "$url" | tr -d '\r')
  grep -qi '^ratelimit-limit:' <<<"$head" && grep -qi "^access-control-allow-origin: $POLICY_ORIGIN" <<<"$head" \
    || die "edgegate_policy: the answer lacks the rate-limit or CORS fields: $head"
}

# The other codings of compress_json.
start_proxy_edgegate_zstd() {
  ROW_HEADER="Accept-Encoding: zstd" start_edgegate_as edgegate_zstd "$EDGEGATE_BIN" "${1:-compress}"
}
start_proxy_edgegate_br() {
  ROW_HEADER="Accept-Encoding: br" start_edgegate_as edgegate_br "$EDGEGATE_BIN" "${1:-compress}"
}

# A limit shared through Redis: one store round trip per request.
REDIS_PID=
start_redis() {
  [[ -n $REDIS_PID ]] && alive "$REDIS_PID" && return 0
  alloc_port REDIS_PORT
  local d=$TMP/redis i
  mkdir -p "$d"
  start_bg redis "$CPU_ORIGIN" "$d/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --save "" --appendonly no --dir "$d"
  REDIS_PID=$LAST_PID
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    alive "$REDIS_PID" || die "redis-server exited (see $d/redis.log)"
    [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && return 0
    sleep 0.1
  done
  die "redis-server did not answer PING within ${READY_TIMEOUT}s"
}
start_proxy_edgegate_redis() {
  start_redis
  GATEWAY_EXTRA=$(printf '[gateway.rate_limit_store]\nurl = "redis://127.0.0.1:%s/0"\n' "$REDIS_PORT") \
    ROW_ROUTE_EXTRA='rate_limit = { requests = 1000000000, per = "1s", scope = "global" }' \
    start_edgegate_as edgegate_redis "$EDGEGATE_BIN" "${1:-plain}"
  local head
  head=$(curl -s -o /dev/null -D - --max-time 2 --cacert "$TLS_DIR/ca.pem" "${PROXY_URL[edgegate_redis]}" | tr -d '\r')
  grep -qi '^ratelimit-remaining:' <<<"$head" || die "edgegate_redis: the answer lacks ratelimit-remaining: $head"
  # (Its bucket, refilled in a microsecond, expires at once: ask for the script's calls.)
  redis-cli -p "$REDIS_PORT" info commandstats 2>/dev/null | grep -q -E '^cmdstat_(evalsha|eval):' \
    || die "edgegate_redis: redis ran no rate-limit script for a request"
}

# The price of the access log: one JSON line per request, to a file (outside the config's
# directory, which edgegate watches).
start_proxy_edgegate_logged() {
  mkdir -p "$TMP/logs"
  ACCESS_LOG="$TMP/logs/access.log" start_edgegate_as edgegate_logged "$EDGEGATE_BIN" "${1:-plain}"
}

# The price of authentication: the route behind a jwt authenticator (wrk sends a valid
# RS256 or ES256 token) or behind basic auth (wrk sends the right password: hashed once,
# then a cached credential).
start_proxy_edgegate_jwt_rs256() { start_auth_row edgegate_jwt_rs256 bench_jwt "$RS256_HEADER" "${1:-plain}"; }
start_proxy_edgegate_jwt_es256() { start_auth_row edgegate_jwt_es256 bench_jwt "$ES256_HEADER" "${1:-plain}"; }
start_proxy_edgegate_basic() { start_auth_row edgegate_basic bench_basic "$BASIC_HEADER" "${1:-plain}"; }
# The RS256 token on the plain route: a JWT row's request is some 600 bytes longer than
# the plain row's, and those bytes cost (read, parsed, forwarded) with or without a check.
start_proxy_edgegate_token() {
  [[ -n $RS256_HEADER ]] || die "edgegate_token: no token made (make_auth_fixtures)"
  ROW_HEADER=$RS256_HEADER start_edgegate_as edgegate_token "$EDGEGATE_BIN" "${1:-plain}"
}

declare -A PROXY_HEADER=()       # proxy -> request header its load carries (auth rows)
start_auth_row() {  # row-name authenticator header mode
  local name=$1 auth=$2 header=$3 mode=$4 code
  [[ -n $header ]] || die "$name: no credential made (make_auth_fixtures)"
  ROW_ROUTE_EXTRA="auth = \"$auth\"" AUTH_TABLES=$(auth_tables) ROW_HEADER=$header \
    start_edgegate_as "$name" "$EDGEGATE_BIN" "$mode"
  # The row must really authenticate: without the credential, a 401.
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$TLS_DIR/ca.pem" "${PROXY_URL[$name]}" || true)
  [[ $code == 401 ]] || die "$name answered $code without a credential, not 401"
}

# What the tracing and access-log rows did besides serving, from their metrics and files,
# so a row that exported nothing (or dropped spans) cannot pass for a cheap one.
declare -A ROW_NOTES=()
note_edgegate_row() {  # row-name
  local name=$1 admin_var metrics
  admin_var=${name^^}_ADMIN_PORT
  metrics=$(curl -s --max-time 2 "http://127.0.0.1:${!admin_var}/metrics" || true)
  row_metric() { awk -v m="$1" '$1 == m { print $2; exit }' <<<"$metrics"; }
  local served
  served=$(awk '/^edgegate_requests_total\{/ { s += $2 } END { printf "%d", s }' <<<"$metrics")
  case "$name" in
    edgegate_traced)
      ROW_NOTES[$name]="requests $served, spans exported $(row_metric edgegate_tracing_spans_exported_total), dropped: queue_full $(row_metric 'edgegate_tracing_spans_dropped_total{reason="queue_full"}'), export_failed $(row_metric 'edgegate_tracing_spans_dropped_total{reason="export_failed"}')" ;;
    edgegate_logged)
      ROW_NOTES[$name]="requests $served, access log lines $(wc -l <"$TMP/logs/access.log" 2>/dev/null || echo 0), dropped $(row_metric edgegate_access_log_dropped_total)" ;;
    edgegate_policy)
      ROW_NOTES[$name]="requests $served, refused by the limit (must be 0): $(awk '/^edgegate_rate_limited_total\{/ { s += $2 } END { printf "%d", s }' <<<"$metrics"), by the access list (must be 0): $(awk '/^edgegate_access_denied_total\{/ { s += $2 } END { printf "%d", s }' <<<"$metrics")" ;;
    edgegate_redis)
      ROW_NOTES[$name]="requests $served, store errors (must be 0): $(row_metric edgegate_rate_limit_store_errors_total)" ;;
    edgegate_jwt_*|edgegate_basic)
      ROW_NOTES[$name]="requests $served, $(awk '/^edgegate_auth_total\{/ { match($0, /result="[a-z]+"/); r = substr($0, RSTART + 8, RLENGTH - 9); n[r] += $2 }
        END { printf "auth allowed %d, denied %d, error %d", n["allowed"], n["denied"], n["error"] }' <<<"$metrics")" ;;
  esac
  log "$name: ${ROW_NOTES[$name]}"
}

OTLP_SINK_PID=
start_otlp_sink() {
  [[ -n $OTLP_SINK_PID ]] && alive "$OTLP_SINK_PID" && return 0
  alloc_port OTLP_SINK_PORT
  local d=$TMP/otlp_sink
  mkdir -p "$d"
  {
    nginx_common "$d"
    echo "http {"
    nginx_http_common "$d"
    cat <<EOF
    client_max_body_size 16m;
    server {
        listen 127.0.0.1:$OTLP_SINK_PORT backlog=4096;
        location / { default_type application/x-protobuf; return 200 ""; }
    }
}
EOF
  } >"$d/nginx.conf"
  start_nginx otlp_sink "$d" "$d/nginx.conf" "$CPU_ORIGIN"
  OTLP_SINK_PID=$LAST_PID
}

start_edgegate_as() {  # row-name binary mode
  local name=$1 bin=$2 mode=${3:-plain} scheme=http
  [[ $mode == tls ]] && scheme=https
  local port_var=EDGEGATE_PORT admin_var=EDGEGATE_ADMIN_PORT
  if [[ $name != edgegate ]]; then
    port_var=${name^^}_PORT admin_var=${name^^}_ADMIN_PORT
  fi
  alloc_port "$port_var"
  alloc_port "$admin_var"
  local port=${!port_var} admin_port=${!admin_var}
  local d=$TMP/$name
  mkdir -p "$d"
  # The extras (EDGEGATE_ROUTE_EXTRA, EDGEGATE_UPSTREAM_EXTRA) go to the "edgegate" row
  # only, so one run can compare a configured feature against the same binary without it.
  local route_extra=${ROW_ROUTE_EXTRA:-} upstream_extra=""
  if [[ $name == edgegate ]]; then
    route_extra+=${EDGEGATE_ROUTE_EXTRA:+$'\n'$EDGEGATE_ROUTE_EXTRA} upstream_extra=${EDGEGATE_UPSTREAM_EXTRA:-}
  fi
  EDGEGATE_PORT=$port EDGEGATE_ADMIN_PORT=$admin_port ROUTE_EXTRA=$route_extra \
    UPSTREAM_EXTRA=$upstream_extra GATEWAY_EXTRA=${GATEWAY_EXTRA:-} ACCESS_LOG=${ACCESS_LOG:-off} \
    MORE_ROUTES=${MORE_ROUTES:-} AUTH_TABLES=${AUTH_TABLES:-} \
    write_config_edgegate "$mode" 0 >"$d/edgegate.toml"
  "$bin" check --config "$d/edgegate.toml" >"$d/check.log" 2>&1 \
    || { cat "$d/check.log" >&2; die "$name check rejected $d/edgegate.toml"; }
  # The log goes elsewhere: edgegate watches its config file's directory, and a log
  # written there would make it look at the config again after every line.
  mkdir -p "$TMP/logs"
  start_bg "$name" "${EDGEGATE_CPUS:-$CPU_PROXY}" "$TMP/logs/$name.log" \
    env RUST_LOG="$EDGEGATE_RUST_LOG" "$bin" run --config "$d/edgegate.toml"
  PROXY_PID[$name]=$LAST_PID
  PROXY_URL[$name]="$scheme://127.0.0.1:$port/"
  PROXY_HEADER[$name]=${ROW_HEADER:-}
  wait_http "${PROXY_URL[$name]}" "$LAST_PID" ok "${ROW_HEADER:-}"
  wait_http "http://127.0.0.1:$admin_port/readyz" "$LAST_PID"
  [[ $mode == tls ]] && tls_probe "$name" "$port"
  return 0
}

# The bare pingora proxy (examples/bare_pingora.rs): no config file, only arguments; plain
# or TLS (the bench certificate, TLS 1.2 and 1.3, ALPN h2 and http/1.1); it has nothing to
# reload, so "reload" mode is not supported (see proxy_supports).
start_proxy_bare_pingora() {
  local mode=${1:-plain} scheme=http
  local -a tls_args=()
  [[ $mode == reload ]] && die "bare_pingora has no config to reload"
  if [[ $mode == tls ]]; then
    scheme=https
    tls_args=(--tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key")
  fi
  alloc_port BARE_PINGORA_PORT
  local d=$TMP/bare_pingora
  mkdir -p "$d"
  start_bg bare_pingora "$CPU_PROXY" "$d/bare_pingora.log" \
    "$BARE_PINGORA_BIN" --listen "127.0.0.1:$BARE_PINGORA_PORT" --origin "127.0.0.1:$ORIGIN_PORT" \
    --threads 1 "${tls_args[@]}"
  PROXY_PID[bare_pingora]=$LAST_PID
  PROXY_URL[bare_pingora]="$scheme://127.0.0.1:$BARE_PINGORA_PORT/"
  wait_http "${PROXY_URL[bare_pingora]}" "$LAST_PID" ok
  [[ $mode == tls ]] && tls_probe bare_pingora "$BARE_PINGORA_PORT"
  return 0
}

write_config_nginx() {  # mode generation
  local mode=$1 gen=$2 d=$TMP/nginx
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
EOF
  if [[ $mode == tls ]]; then
    # nginx 1.22 offers TLSv1 to TLSv1.2 by default: name 1.2 and 1.3 as the others do.
    cat <<EOF
        listen 127.0.0.1:$NGINX_PORT ssl http2 backlog=4096;
        ssl_certificate $TLS_DIR/server.pem;
        ssl_certificate_key $TLS_DIR/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
EOF
  else
    echo "        listen 127.0.0.1:$NGINX_PORT backlog=4096;"
  fi
  cat <<EOF
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
EOF
  [[ $mode == reload ]] && echo "            add_header X-Reload $gen always;"
  if [[ $mode == compress ]]; then
    # What edgegate's compress = true does: compressible types from 1 KiB, Vary.
    cat <<EOF
            gzip on;
            gzip_comp_level $NGINX_GZIP_LEVEL;
            gzip_types application/json;
            gzip_min_length 1024;
            gzip_proxied any;
            gzip_vary on;
EOF
  fi
  cat <<EOF
        }
    }
}
EOF
}

start_proxy_nginx() {
  local mode=${1:-plain} scheme=http
  [[ $mode == tls ]] && scheme=https
  alloc_port NGINX_PORT
  local d=$TMP/nginx
  mkdir -p "$d"
  write_config_nginx "$mode" 0 >"$d/nginx.conf"
  start_nginx nginx "$d" "$d/nginx.conf" "$CPU_PROXY"
  PROXY_PID[nginx]=$LAST_PID
  PROXY_URL[nginx]="$scheme://127.0.0.1:$NGINX_PORT/"
  wait_http "${PROXY_URL[nginx]}" "$LAST_PID" ok
  [[ $mode == tls ]] && tls_probe nginx "$NGINX_PORT"
  return 0
}

write_config_haproxy() {  # mode generation
  local mode=$1 gen=$2 bind="127.0.0.1:$HAPROXY_PORT"
  [[ $mode == tls ]] && bind+=" ssl crt $TLS_DIR/server.full.pem alpn h2,http/1.1 ssl-min-ver TLSv1.2"
  cat <<EOF
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
    bind $bind
    default_backend origin
EOF
  [[ $mode == reload ]] && echo "    http-response set-header X-Reload $gen"
  cat <<EOF

backend origin
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
}

start_proxy_haproxy() {
  local mode=${1:-plain} scheme=http
  [[ $mode == tls ]] && scheme=https
  alloc_port HAPROXY_PORT
  local d=$TMP/haproxy
  mkdir -p "$d"
  write_config_haproxy "$mode" 0 >"$d/haproxy.cfg"
  haproxy -c -q -f "$d/haproxy.cfg" >"$d/check.log" 2>&1 \
    || { cat "$d/check.log" >&2; die "haproxy -c rejected $d/haproxy.cfg"; }
  if [[ $mode == reload ]]; then
    # master-worker: SIGUSR2 to the master re-reads the config and starts a new worker;
    # the old one finishes its connections.
    start_bg haproxy "$CPU_PROXY" "$d/haproxy.log" haproxy -W -db -f "$d/haproxy.cfg"
  else
    start_bg haproxy "$CPU_PROXY" "$d/haproxy.log" haproxy -f "$d/haproxy.cfg" -db
  fi
  PROXY_PID[haproxy]=$LAST_PID
  PROXY_URL[haproxy]="$scheme://127.0.0.1:$HAPROXY_PORT/"
  wait_http "${PROXY_URL[haproxy]}" "$LAST_PID" ok
  [[ $mode == tls ]] && tls_probe haproxy "$HAPROXY_PORT"
  return 0
}

stop_proxies() {
  local p
  for p in "${!PROXY_PID[@]}"; do
    case "$p" in edgegate_traced|edgegate_logged|edgegate_jwt_*|edgegate_basic|edgegate_policy|edgegate_redis) note_edgegate_row "$p" ;; esac
  done
  for p in "${!PROXY_PID[@]}"; do
    stop_pid "${PROXY_PID[$p]}"
  done
  PROXY_PID=(); PROXY_URL=(); PROXY_HEADER=()
}

# proxy_supports PROXY MODE SCENARIO: whether start_proxy_PROXY can run in MODE (plain,
# tls, reload) for SCENARIO. The auth rows measure requests on kept-alive connections:
# a handshake scenario sends no credential.
proxy_supports() {
  if is_auth_row "$1"; then
    case "${3:-}" in http_keepalive|https_keepalive|h2_tls) return 0 ;; *) return 1 ;; esac
  fi
  case "$1:$2" in
    bare_pingora:reload|edgegate_base:reload|edgegate_traced:reload|edgegate_logged:reload) return 1 ;;
    edgegate_policy:reload|edgegate_redis:reload) return 1 ;;
    # compress_json compares compressing proxies: edgegate's codings and nginx's gzip.
    edgegate:compress|edgegate_zstd:compress|edgegate_br:compress|nginx:compress) return 0 ;;
    *:compress|edgegate_zstd:*|edgegate_br:*) return 1 ;;
    *) return 0 ;;
  esac
}

# use_proxies SCENARIO MODE: SCEN_PROXIES = the proxies of PROXY_LIST that can run in MODE
# (in PROXIES order); the others are recorded as n/a for the scenario (SCEN_NA) and the
# summary says so. Returns 1 when none can.
SCEN_PROXIES=()
declare -A SCEN_NA=()            # scenario -> "proxy proxy ..." that could not run it
use_proxies() {
  local scen=$1 mode=$2 p
  SCEN_PROXIES=()
  for p in "${PROXY_LIST[@]}"; do
    if proxy_supports "$p" "$mode" "$scen"; then
      SCEN_PROXIES+=("$p")
    else
      SCEN_NA[$scen]+="$p "
      log "[$scen] $p: n/a (it cannot run in $mode mode or this scenario)"
    fi
  done
  ((${#SCEN_PROXIES[@]})) || { log "[$scen] skipped: none of the proxies can run it"; return 1; }
}

# start_proxies SCENARIO MODE: the origin and every proxy that can run in MODE.
start_proxies() {
  use_proxies "$1" "$2" || return 1
  start_origin
  local p
  for p in "${SCEN_PROXIES[@]}"; do "start_proxy_$p" "$2"; done
}

# ----------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

# "UTIME STIME": sums of utime and of stime (clock ticks, CLK_TCK per second) over the
# given pids (each figure covers all threads of its process).
cpu_ticks() {
  local user=0 sys=0 pid st
  local -a f
  for pid in "$@"; do
    { st=$(<"/proc/$pid/stat"); } 2>/dev/null || { log "warning: pid $pid vanished during the run"; continue; }
    st=${st##*) }
    read -r -a f <<<"$st"
    user=$((user + f[11])); sys=$((sys + f[12]))   # fields 14 (utime) and 15 (stime)
  done
  echo "$user $sys"
}

# run_client OUT SECS CMD...: a load generator, pinned to the wrk CPUs and bounded by
# timeout. It is a child of this script (through taskset -> timeout), never of a proxy;
# it runs in the background and is waited for, so that a signal to this script is
# handled at once (cleanup stops it too).
run_client() {
  local out=$1 secs=$2; shift 2
  (
    if [[ $PIN == 1 ]]; then exec taskset -c "$CPU_WRK" timeout -k 5 "$secs" "$@"; fi
    exec timeout -k 5 "$secs" "$@"
  ) </dev/null >"$out" 2>&1 &
  WRK_PID=$!
  local rc=0
  wait "$WRK_PID" || rc=$?
  WRK_PID=
  return "$rc"
}

# The request header of a run (wrk, h2load and curl), by precedence: the row's own (an
# auth row's credential; edgegate_zstd asks for zstd), the scenario's (compress_json asks
# for gzip), else the policy row's Origin for every row of a run that has that row.
declare -A SC_HEADER=() SC_PATH=()
LOAD_HEADER=
request_header() {  # scenario proxy
  if [[ -n ${PROXY_HEADER[$2]:-} ]]; then echo "${PROXY_HEADER[$2]}"
  elif [[ -n ${SC_HEADER[$1]:-} ]]; then echo "${SC_HEADER[$1]}"
  elif want edgegate_policy; then echo "Origin: $POLICY_ORIGIN"
  fi
}

wrk_run() {  # duration url outfile [connections threads]
  local dur=$1 url=$2 out=$3 conns=${4:-$CONNECTIONS} threads=${5:-$WRK_THREADS} secs
  local -a header=()
  [[ -n $LOAD_HEADER ]] && header=(-H "$LOAD_HEADER")
  secs=$(dur_secs "$dur")
  run_client "$out" $((secs + 30)) \
    wrk -t"$threads" -c"$conns" -d"$dur" --latency --timeout 2s "${header[@]}" "$url"
}

to_ms() {  # wrk/h2load latency "1.23ms" / "850.00us" / "1.02s" -> ms
  awk -v v="$1" 'BEGIN {
    n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u)
    m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
    if (m < 0 || n == "") print "nan"; else printf "%.3f", n * m }'
}

# h2load: one thread per wrk CPU (one thread when wrk has a single CPU).
if [[ -z ${H2LOAD_THREADS:-} ]]; then
  if [[ $PIN == 1 && $CPU_WRK =~ ^[0-9]+$ ]]; then H2LOAD_THREADS=1; else H2LOAD_THREADS=$WRK_THREADS; fi
fi

# Load generators. load_TOOL PHASE URL OUT runs one (PHASE: warmup or run);
# parse_TOOL OUT sets P_RATE (per second), P_COUNT (requests or handshakes), P_LAT1,
# P_LAT2 (ms, "nan" when not measured), P_ERRS and P_ALPN.
P_RATE= P_COUNT= P_LAT1= P_LAT2= P_ERRS= P_ALPN= WARM_RATE=

# wrk, HTTP/1.1 keepalive (http or https URL; wrk speaks HTTP/1.1 only).
load_wrk() {
  local dur=$DURATION
  [[ $1 == warmup ]] && dur=$WARMUP
  wrk_run "$dur" "$2" "$3"
}
parse_wrk() {
  local out=$1 p99raw avgraw
  P_RATE=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  P_COUNT=$(awk '/ requests in / { print $1; exit }' "$out")
  p99raw=$(awk '$1 == "99%" { print $2; exit }' "$out")
  avgraw=$(awk '$1 == "Latency" { print $2; exit }' "$out")
  P_ERRS=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
                /Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' "$out")
  P_ALPN=http/1.1
  [[ -n $P_RATE && -n $P_COUNT && -n $p99raw ]] || return 1
  P_LAT1=$(to_ms "$p99raw"); P_LAT2=$(to_ms "${avgraw:-x}")
}

# wrk at a light load (LAT_CONNECTIONS connections, one thread): latency that is the
# request's own, not queueing. P_LAT1 = p50, P_LAT2 = p99.
load_wrk_lat() {
  local dur=$DURATION
  [[ $1 == warmup ]] && dur=$WARMUP
  wrk_run "$dur" "$2" "$3" "$LAT_CONNECTIONS" 1
}
parse_wrk_lat() {
  parse_wrk "$1" || return 1
  local p50raw
  p50raw=$(awk '$1 == "50%" { print $2; exit }' "$1")
  [[ -n $p50raw ]] || return 1
  P_LAT2=$P_LAT1; P_LAT1=$(to_ms "$p50raw")
}

# h2load, HTTP/2 over TLS: H2_CLIENTS connections with H2_STREAMS streams each, for a
# duration. P_LAT1/P_LAT2: mean and max "time for request" (h2load has no percentiles).
load_h2load() {
  local secs=$DURATION_S
  [[ $1 == warmup ]] && secs=$WARMUP_S
  local -a header=()
  [[ -n $LOAD_HEADER ]] && header=(-H "$LOAD_HEADER")
  run_client "$3" $((secs + 30)) \
    h2load -t"$H2LOAD_THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$secs" "${header[@]}" "$2"
}
parse_h2load() {
  local out=$1 v
  # finished in 10.00s, 12345.67 req/s, ...
  # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
  # status codes: N 2xx, N 3xx, N 4xx, N 5xx
  # time for request:  min max mean sd +/-sd
  v=$(awk '
    /^finished in/          { rate = $4 }
    /^requests:/            { succ = $8; failed = $10 }
    /^status codes:/        { bad = $7 + $9 }
    /^time for request:/    { max = $5; mean = $6 }
    /^Application protocol:/ { alpn = $3 }
    END { if (rate == "" || succ == "") exit 1
          print rate, succ, failed + bad, (mean == "" ? "x" : mean), (max == "" ? "x" : max), (alpn == "" ? "none" : alpn) }' "$out") || return 1
  read -r P_RATE P_COUNT P_ERRS P_LAT1 P_LAT2 P_ALPN <<<"$v"
  P_LAT1=$(to_ms "$P_LAT1"); P_LAT2=$(to_ms "$P_LAT2")
}

# h2load, HTTP/1.1 over TLS with "Connection: close": one request per connection, each
# connection a new TLS handshake, resumed when the server offers resumption (h2load
# reuses the session it got last). h2load's duration mode hangs with connections the
# server closes, so this runs a fixed count: the warm-up measures the rate and the run
# asks for DURATION worth of connections at that rate.
load_h2load_hs() {
  local phase=$1 n secs
  if [[ $phase == warmup ]]; then
    n=$((1000 * WARMUP_S)); secs=$((WARMUP_S * 20 + 30))
  else
    n=$(awk -v r="${WARM_RATE:-0}" -v d="$DURATION_S" 'BEGIN { n = int(r * d); if (n < 1000) n = 1000; print n }')
    secs=$((DURATION_S * 5 + 30))
  fi
  ((n >= HS_CONNECTIONS)) || n=$HS_CONNECTIONS
  run_client "$3" "$secs" \
    h2load --h1 -H 'Connection: close' -t"$H2LOAD_THREADS" -c"$HS_CONNECTIONS" -n"$n" "$2"
}
parse_h2load_hs() {
  parse_h2load "$1" || return 1
  P_LAT1=nan; P_LAT2=nan
}

# openssl s_time -new: HS_CLIENTS processes in parallel, each connecting again and again
# with a fresh session (a full handshake every time, never resumed) and sending
# "GET / HTTP/1.0" (the server answers and closes). Handshakes/s = connections / wall time.
# s_time sends "GET <www> HTTP/1.0\r\n\r\n": a <www> of "/ HTTP/1.0\r\nHost: ...\r\nX-Bench:"
# makes that a request with a Host header, as every real client sends one.
S_TIME_WWW=$'/ HTTP/1.0\r\nHost: bench.example.com\r\nX-Bench:'
load_s_time() {
  local secs=$DURATION_S hostport=${2#https://}
  [[ $1 == warmup ]] && secs=$WARMUP_S
  hostport=${hostport%%/*}
  run_client "$3" $((secs + 30)) bash -c '
    n=$1 secs=$2 hp=$3 out=$4 www=$5 pids=()
    t0=$(date +%s%N)
    for ((i = 1; i <= n; i++)); do
      openssl s_time -connect "$hp" -new -time "$secs" -www "$www" >"$out.$i" 2>&1 &
      pids+=($!)
    done
    for ((i = 0; i < n; i++)); do
      rc=0; wait "${pids[$i]}" || rc=$?
      echo "client $((i + 1)) exit $rc"
    done
    t1=$(date +%s%N)
    echo "wall_ns $((t1 - t0))"' s_time "$HS_CLIENTS" "$secs" "$hostport" "$3" "$S_TIME_WWW"
}
parse_s_time() {
  local out=$1 conns=0 bad=0 wall i c
  wall=$(awk '/^wall_ns / { print $2 }' "$out")
  bad=$(awk '/^client [0-9]+ exit / && $4 != 0 { n++ } END { print n + 0 }' "$out")
  for ((i = 1; i <= HS_CLIENTS; i++)); do
    c=$(grep -o -E '[0-9]+ connections in [0-9.]+s;' "$out.$i" 2>/dev/null | awk '{ print $1; exit }')
    if [[ -z $c ]] || grep -q -i 'error' "$out.$i"; then bad=$((bad + 1)); fi
    conns=$((conns + ${c:-0}))
  done
  [[ -n $wall ]] && ((conns > 0)) || return 1
  P_COUNT=$conns; P_ERRS=$bad; P_LAT1=nan; P_LAT2=nan; P_ALPN=http/1.0
  P_RATE=$(awk -v c="$conns" -v w="$wall" 'BEGIN { printf "%.2f", c / (w / 1e9) }')
}

# Scenario metadata: load tool, labels, the unit of "CPU per" (100k requests or 1k
# handshakes), the ALPN protocol the client must get, and a description.
declare -A SC_TOOL=() SC_RATE=() SC_LAT1=() SC_LAT2=() SC_PER=() SC_PERLABEL=() SC_COUNT=() SC_ALPN=() SC_DESC=()
def_scenario() {  # name tool rate-label lat1-label lat2-label per per-label count-label alpn description
  SC_TOOL[$1]=$2; SC_RATE[$1]=$3; SC_LAT1[$1]=$4; SC_LAT2[$1]=$5; SC_PER[$1]=$6
  SC_PERLABEL[$1]=$7; SC_COUNT[$1]=$8; SC_ALPN[$1]=$9; SC_DESC[$1]=${10}
}
def_scenario http_keepalive wrk "req/s" "p99 ms" "" 100000 "cpu s/100k" requests "" \
  "HTTP/1.1 keepalive: wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency"
def_scenario https_keepalive wrk "req/s" "p99 ms" "" 100000 "cpu s/100k" requests "" \
  "HTTPS keepalive (TLS terminated at the proxy, HTTP/1.1 to the origin): wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency"
def_scenario h2_tls h2load "req/s" "mean ms" "max ms" 100000 "cpu s/100k" requests h2 \
  "HTTP/2 over TLS (ALPN h2): h2load -t$H2LOAD_THREADS -c$H2_CLIENTS -m$H2_STREAMS -D$DURATION_S; latency = h2load's time for request (no percentiles)"
def_scenario tls_handshakes s_time "hs/s" "" "" 1000 "cpu s/1k hs" handshakes "" \
  "new full TLS handshakes: $HS_CLIENTS x openssl s_time -new -time $DURATION_S (never resumed; one HTTP/1.0 request with Host per connection)"
def_scenario tls_resumed_handshakes h2load_hs "hs/s" "" "" 1000 "cpu s/1k hs" handshakes http/1.1 \
  "new TLS connections, session resumed when the server offers it: h2load --h1 -H 'Connection: close' -c$HS_CONNECTIONS -n (DURATION at the warm-up rate)"
def_scenario compress_json wrk "req/s" "p99 ms" "" 100000 "cpu s/100k" requests "" \
  "a ${JSON_BYTES}-byte JSON answer compressed by the proxy (edgegate compress = true: gzip 6, br 4, zstd 3; nginx gzip_comp_level $NGINX_GZIP_LEVEL), Accept-Encoding gzip (zstd, br for their rows): wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency"
SC_PATH[compress_json]=bench.json
SC_HEADER[compress_json]="Accept-Encoding: gzip"
def_scenario global_limit wrk_lat "req/s" "p50 ms" "p99 ms" 100000 "cpu s/100k" requests "" \
  "a light load for latency: wrk -t1 -c$LAT_CONNECTIONS -d$DURATION --latency; edgegate_redis checks a scope = \"global\" limit in a local redis-server on every request"
def_scenario auth_flood flood "" "" "" 0 "" "" "" \
  "$FLOOD_CONNECTIONS connections of wrong passwords (each new, bcrypt cost $BCRYPT_COST) on a basic-auth route of edgegate, while wrk -c$PROBE_CONNECTIONS -d$DURATION --latency measures a plain route on the same worker, alone and under the flood, $ROUNDS round(s)"
def_scenario reload_under_load reload "" "" "" 0 "" "" "" \
  "$RELOADS config reloads every ${RELOAD_INTERVAL}s during wrk -t$WRK_THREADS -c$RELOAD_CONNECTIONS -d$RELOAD_DURATION --timeout 2s over keepalive connections (HTTP/1.1)"

# measure SCENARIO ROUND PROXY: warm up, then one measured run; appends to RESULTS.
measure() {
  local scen=$1 round=$2 proxy=$3 tool=${SC_TOOL[$1]:-wrk} per=${SC_PER[$1]:-100000}
  local url=${PROXY_URL[$proxy]}${SC_PATH[$1]:-} root=${PROXY_PID[$proxy]}
  local out=$TMP/$tool.$scen.r$round.$proxy.txt
  local pids opids u0 u1 s0 s1 ou0 ou1 os0 os1 a0 a1 t0 t1
  alive "$root" || die "$proxy (pid $root) is not running"
  LOAD_HEADER=$(request_header "$scen" "$proxy")
  read -r -a pids <<<"$(proc_tree "$root")"
  read -r -a opids <<<"$(proc_tree "$ORIGIN_PID")"

  "load_$tool" warmup "$url" "$out.warmup" || die "$proxy: warm-up $tool failed: $(tail -n 3 "$out.warmup")"
  WARM_RATE=
  if "parse_$tool" "$out.warmup"; then WARM_RATE=$P_RATE; fi
  [[ -n $WARM_RATE ]] || { tail -n 20 "$out.warmup" >&2; die "$proxy: could not parse the warm-up $tool output"; }

  a0=$(origin_accepts); read -r u0 s0 <<<"$(cpu_ticks "${pids[@]}")"; read -r ou0 os0 <<<"$(cpu_ticks "${opids[@]}")"; t0=$(date +%s%N)
  "load_$tool" run "$url" "$out" || die "$proxy: $tool failed or timed out: $(tail -n 3 "$out")"
  t1=$(date +%s%N); read -r u1 s1 <<<"$(cpu_ticks "${pids[@]}")"; read -r ou1 os1 <<<"$(cpu_ticks "${opids[@]}")"; a1=$(origin_accepts)
  alive "$root" || die "$proxy (pid $root) died during the run"

  local now_pids; now_pids=$(proc_tree "$root")
  [[ $now_pids == "${pids[*]}" ]] || log "warning: $proxy process set changed during the run (${pids[*]} -> $now_pids)"

  "parse_$tool" "$out" || { tail -n 30 "$out" >&2; die "$proxy: could not parse $tool output"; }
  if [[ -n ${SC_ALPN[$scen]:-} && $P_ALPN != "${SC_ALPN[$scen]}" ]]; then
    die "$proxy: the client negotiated '$P_ALPN', not ${SC_ALPN[$scen]} (see $out)"
  fi

  awk -v s="$scen" -v r="$round" -v p="$proxy" -v rps="$P_RATE" -v l1="$P_LAT1" -v l2="$P_LAT2" -v reqs="$P_COUNT" \
      -v cu="$((u1 - u0))" -v cs="$((s1 - s0))" -v o="$((ou1 - ou0 + os1 - os0))" -v hz="$CLK_TCK" \
      -v up="$((a1 - a0 - 1))" -v e="$P_ERRS" -v wall="$((t1 - t0))" -v unit="$per" 'BEGIN {
        ucpu = cu / hz; scpu = cs / hz; cpu = ucpu + scpu; ocpu = o / hz
        per = (reqs > 0) ? cpu * unit / reqs : "nan"; oper = (reqs > 0) ? ocpu * unit / reqs : "nan"
        uper = (reqs > 0) ? ucpu * unit / reqs : "nan"; sper = (reqs > 0) ? scpu * unit / reqs : "nan"
        pct = (wall > 0) ? 100 * cpu / (wall / 1e9) : "nan"
        printf "%s\t%s\t%s\t%.2f\t%.3f\t%.2f\t%d\t%.4f\t%.4f\t%d\t%d\t%.3f\t%.1f\t%.4f\t%.4f\n", s, r, p, rps, l1, cpu, reqs, per, oper, up, e, l2, pct, uper, sper }' \
    >>"$RESULTS"
  ((P_ERRS == 0)) || log "warning: $proxy: $P_ERRS errors / non-2xx responses in round $round (see $out)"
}

# Columns shown for a scenario (labels from def_scenario; an empty latency label hides it).
table_vars() {  # scenario -> awk -v arguments
  local s=$1
  local pl=${SC_PERLABEL[$s]:-cpu s/100k}
  # user and system CPU per unit: "cpu s/100k" -> "user s/100k", "sys s/100k"
  printf '%s\n' -v "rl=${SC_RATE[$s]:-req/s}" -v "l1=${SC_LAT1[$s]-p99 ms}" -v "l2=${SC_LAT2[$s]:-}" \
    -v "pl=$pl" -v "ul=user ${pl#cpu }" -v "sl=sys ${pl#cpu }" -v "cl=${SC_COUNT[$s]:-requests}"
}

print_round_table() {  # scenario round
  local -a tv; mapfile -t tv < <(table_vars "$1")
  awk -F'\t' -v s="$1" -v r="$2" "${tv[@]}" '
    BEGIN { printf "\n[%s] round %s\n", s, r
            printf "  %-18s %12s", "proxy", rl
            if (l1 != "") printf " %9s", l1
            if (l2 != "") printf " %9s", l2
            printf " %8s %11s %13s %13s %13s %7s %18s %9s %7s\n", "cpu s", cl, pl, ul, sl, "cpu %", "origin " pl, "up conns", "errors" }
    $1 == s && $2 == r {
            printf "  %-18s %12.0f", $3, $4
            if (l1 != "") printf " %9.3f", $5
            if (l2 != "") printf " %9.3f", $12
            printf " %8.2f %11d %13.4f %13.4f %13.4f %7.1f %18.4f %9d %7d\n", $6, $7, $8, $14, $15, $13, $9, $10, $11 }' "$RESULTS"
}

# The proxy order for round R (1-based) over the scenario's proxies: A B C, B C A, C A B, ...
round_order() {
  local r=$1 i n=${#SCEN_PROXIES[@]} order=()
  for ((i = 0; i < n; i++)); do order+=("${SCEN_PROXIES[$(((r - 1 + i) % n))]}"); done
  echo "${order[@]}"
}

# run_rounds SCENARIO: ROUNDS rounds over the started proxies (SCEN_PROXIES), rotating the order
# (A B C, B C A, C A B, ...) so slow drifts of the machine hit every proxy alike.
run_rounds() {
  local scen=$1 r p
  for ((r = 1; r <= ROUNDS; r++)); do
    local order; read -r -a order <<<"$(round_order "$r")"
    log "[$scen] round $r/$ROUNDS: ${order[*]} (load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"
    for p in "${order[@]}"; do
      log "[$scen] round $r: $p (${PROXY_URL[$p]}, ${SC_TOOL[$scen]:-wrk})"
      measure "$scen" "$r" "$p"
    done
    print_round_table "$scen" "$r"
  done
}

# ----------------------------------------------------------------------------------------
# Reload under load: wrk holds RELOAD_CONNECTIONS keepalive connections for
# RELOAD_DURATION while each proxy's config is rewritten and reloaded RELOADS times,
# every RELOAD_INTERVAL seconds (a response header x-reload: GENERATION changes each time).
#   edgegate: the file is rewritten (in place, or RELOAD_WRITE=rename); it reloads on its
#             own, and its admin /config generation must rise by exactly RELOADS;
#   nginx:    the file is rewritten, then nginx -s reload (SIGHUP to the master);
#   haproxy:  master-worker (-W), the file is rewritten, then SIGUSR2 to the master.
# Reported: requests and every client-visible error (wrk socket errors by kind, non-2xx).
# ----------------------------------------------------------------------------------------
RELOAD_RESULTS=$TMP/reload.tsv   # scenario round proxy requests rps p99ms connect read write timeout non2xx errors reloads generation final_header max_seen
: >"$RELOAD_RESULTS"
declare -A RELOAD_GEN=()         # proxy -> x-reload value of its current config

write_reload_lua() {
  # Counts responses per thread and the highest x-reload value seen while under load
  # (shows that reloads took effect on the connections wrk holds).
  cat >"$TMP/reload.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0; maxgen = -1 end
function response(status, headers, body)
  if status >= 200 and status < 400 then ok = ok + 1 else bad = bad + 1 end
  for k, v in pairs(headers) do
    if string.lower(k) == "x-reload" then
      local n = tonumber(v)
      if n and n > maxgen then maxgen = n end
    end
  end
end
function done(summary, latency, requests)
  local t_ok, t_bad, t_max = 0, 0, -1
  for _, t in ipairs(threads) do
    t_ok = t_ok + t:get("ok"); t_bad = t_bad + t:get("bad")
    local m = t:get("maxgen"); if m > t_max then t_max = m end
  end
  io.write(string.format("lua: ok %d bad %d max_x_reload %d\n", t_ok, t_bad, t_max))
end
EOF
}

edgegate_generation() {
  curl -s --max-time 2 "http://127.0.0.1:$EDGEGATE_ADMIN_PORT/config" 2>/dev/null \
    | sed -n 's/.*"generation": *\([0-9][0-9]*\).*/\1/p' | head -n 1
}
edgegate_reload_metric() {  # success|failure
  curl -s --max-time 2 "http://127.0.0.1:$EDGEGATE_ADMIN_PORT/metrics" 2>/dev/null \
    | awk -v r="$1" '$1 == "edgegate_config_reloads_total{result=\"" r "\"}" { print $2; exit }'
}

# reload_proxy PROXY GENERATION: rewrite the config with x-reload: GENERATION and reload.
reload_proxy() {
  local proxy=$1 gen=$2 content f
  case $proxy in
    edgegate)
      f=$TMP/edgegate/edgegate.toml
      content=$(write_config_edgegate reload "$gen")
      if [[ $RELOAD_WRITE == rename ]]; then
        printf '%s\n' "$content" >"$f.tmp" && mv -f "$f.tmp" "$f"
      else
        printf '%s\n' "$content" >"$f"   # one open(O_TRUNC) + write, as an editor saving in place
      fi
      ;;
    nginx)
      f=$TMP/nginx/nginx.conf
      content=$(write_config_nginx reload "$gen")
      printf '%s\n' "$content" >"$f"
      timeout 5 nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$f" -g 'daemon off;' -s reload \
        >>"$TMP/nginx/reload.log" 2>&1 || log "warning: nginx -s reload failed (see $TMP/nginx/reload.log)"
      ;;
    haproxy)
      f=$TMP/haproxy/haproxy.cfg
      content=$(write_config_haproxy reload "$gen")
      printf '%s\n' "$content" >"$f"
      kill -USR2 "${PROXY_PID[haproxy]}" 2>/dev/null || log "warning: could not signal the HAProxy master"
      ;;
  esac
}

# The x-reload header a fresh request gets now (empty when none).
x_reload_now() {
  curl -s -o /dev/null -D - --max-time 2 "$1" 2>/dev/null \
    | awk -F': *' 'tolower($1) == "x-reload" { gsub(/\r/, "", $2); print $2; exit }'
}

reload_run() {  # round proxy
  local round=$1 proxy=$2 url=${PROXY_URL[$2]} root=${PROXY_PID[$2]}
  local out=$TMP/wrk.reload_under_load.r$round.$proxy.txt
  local g0="" g1="" gen=${RELOAD_GEN[$proxy]} i start target now d fail0="" fail1=""
  alive "$root" || die "$proxy (pid $root) is not running"
  if [[ $proxy == edgegate ]]; then g0=$(edgegate_generation); fail0=$(edgegate_reload_metric failure); fi

  local secs; secs=$(dur_secs "$RELOAD_DURATION")
  (
    cmd=(timeout -k 5 $((secs + 30)) wrk -t"$WRK_THREADS" -c"$RELOAD_CONNECTIONS" -d"$RELOAD_DURATION"
         --latency --timeout 2s -s "$TMP/reload.lua" "$url")
    if [[ $PIN == 1 ]]; then exec taskset -c "$CPU_WRK" "${cmd[@]}"; fi
    exec "${cmd[@]}"
  ) </dev/null >"$out" 2>&1 &
  WRK_PID=$!
  # Reloads on a fixed schedule: the first 0.25 s in, then every RELOAD_INTERVAL.
  start=$(date +%s.%N)
  for ((i = 0; i < RELOADS; i++)); do
    target=$(awk -v s="$start" -v i="$i" -v iv="$RELOAD_INTERVAL" 'BEGIN { printf "%.3f", s + 0.25 + i * iv }')
    now=$(date +%s.%N)
    d=$(awk -v t="$target" -v n="$now" 'BEGIN { d = t - n; printf "%.3f", (d > 0) ? d : 0 }')
    sleep "$d"
    alive "$WRK_PID" || { log "warning: wrk ended before reload $((i + 1)) of $RELOADS"; break; }
    gen=$((gen + 1))
    reload_proxy "$proxy" "$gen"
  done
  local sent=$((gen - RELOAD_GEN[$proxy]))
  RELOAD_GEN[$proxy]=$gen
  local rc=0
  wait "$WRK_PID" || rc=$?
  WRK_PID=
  ((rc == 0)) || die "$proxy: wrk failed or timed out during the reload run: $(tail -n 3 "$out")"
  alive "$root" || die "$proxy (pid $root) died during the reload run"

  # The last config must be the one served (bounded wait: nginx and HAProxy reload
  # asynchronously; edgegate within its debounce).
  local hdr="" deadline=$((SECONDS + 5))
  while ((SECONDS < deadline)); do
    hdr=$(x_reload_now "$url")
    [[ $hdr == "$gen" ]] && break
    sleep 0.1
  done
  local applied=$sent
  if [[ $proxy == edgegate ]]; then
    deadline=$((SECONDS + 3))
    while ((SECONDS < deadline)); do
      g1=$(edgegate_generation)
      [[ -n $g1 && -n $g0 ]] && ((g1 - g0 >= sent)) && break
      sleep 0.1
    done
    fail1=$(edgegate_reload_metric failure)
    applied=$(( ${g1:-0} - ${g0:-0} ))
    ((applied == sent)) || log "warning: edgegate: $sent config rewrites but generation went $g0 -> $g1"
    [[ ${fail1:-0} == "${fail0:-0}" ]] || log "warning: edgegate: failed reloads went $fail0 -> $fail1"
  fi
  [[ $hdr == "$gen" ]] || log "warning: $proxy: after the run it serves x-reload '$hdr', not the last config's '$gen'"

  local v
  v=$(awk '
    / requests in /           { reqs = $1 }
    /^Requests\/sec:/         { rps = $2 }
    $1 == "99%"               { p99 = $2 }
    /Socket errors:/          { gsub(/,/, ""); c = $4; r = $6; w = $8; t = $10 }
    /Non-2xx or 3xx responses:/ { n = $NF }
    /^lua: /                  { maxseen = $7 }
    END { printf "%s %s %s %d %d %d %d %d %s\n", reqs, rps, (p99 == "" ? "x" : p99), c, r, w, t, n, (maxseen == "" ? "-" : maxseen) }' "$out")
  local reqs rps p99 ce re we te ne maxseen
  read -r reqs rps p99 ce re we te ne maxseen <<<"$v"
  [[ -n $reqs && -n $rps ]] || { cat "$out" >&2; die "$proxy: could not parse wrk output of the reload run"; }
  local errs=$((ce + re + we + te + ne))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    reload_under_load "$round" "$proxy" "$reqs" "$rps" "$(to_ms "$p99")" "$ce" "$re" "$we" "$te" "$ne" "$errs" \
    "$applied/$sent" "${g1:--}" "${hdr:-none}" "$maxseen" >>"$RELOAD_RESULTS"
  ((errs == 0)) || log "warning: $proxy: $errs client-visible errors during $sent reloads in round $round (see $out)"
}

print_reload_round_table() {  # round
  awk -F'\t' -v r="$1" '
    BEGIN { printf "\n[reload_under_load] round %s\n", r
            printf "  %-12s %9s %9s %8s %8s %6s %6s %8s %8s %7s %8s %10s %7s %8s\n", "proxy", "requests", "req/s", "p99 ms", "connect", "read", "write", "timeout", "non-2xx", "errors", "reloads", "generation", "served", "max seen" }
    $2 == r { printf "  %-12s %9d %9.0f %8.3f %8d %6d %6d %8d %8d %7d %8s %10s %7s %8s\n", $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 }' "$RELOAD_RESULTS"
}

# ----------------------------------------------------------------------------------------
# Scenarios. Each one starts what it needs, calls run_rounds, and stops its proxies.
# Add a scenario by writing scenario_NAME (and a def_scenario line above), and listing
# NAME in SCENARIOS.
# ----------------------------------------------------------------------------------------

# HTTP/1.1 keepalive, tiny response: raw per-request proxy overhead.
scenario_http_keepalive() {
  start_proxies http_keepalive plain || return 0
  run_rounds http_keepalive
  stop_proxies
}

# HTTPS with keepalive: TLS termination cost per request once connections are up.
scenario_https_keepalive() {
  start_proxies https_keepalive tls || return 0
  run_rounds https_keepalive
  stop_proxies
}

# HTTP/2 over TLS (ALPN h2) from the client, HTTP/1.1 keepalive to the origin.
scenario_h2_tls() {
  start_proxies h2_tls tls || return 0
  local p
  for p in "${SCEN_PROXIES[@]}"; do
    [[ $(curl -s -o /dev/null -w '%{http_version}' --http2 --max-time 2 --cacert "$TLS_DIR/ca.pem" "${PROXY_URL[$p]}") == 2 ]] \
      || die "$p does not answer over HTTP/2 at ${PROXY_URL[$p]}"
  done
  run_rounds h2_tls
  stop_proxies
}

# The request s_time sends must get a 200 from every proxy.
check_s_time_request() {  # proxy
  local hp=${PROXY_URL[$1]#https://} line
  hp=${hp%%/*}
  line=$(printf 'GET %s HTTP/1.0\r\n\r\n' "$S_TIME_WWW" | timeout 5 openssl s_client -connect "$hp" -quiet 2>/dev/null | head -n 1 || true)
  [[ $line == HTTP/1.?\ 200* ]] || die "$1: the s_time request over TLS was answered '${line%$'\r'}', not 200"
}

# New full TLS handshakes per second (no resumption), one request per connection.
scenario_tls_handshakes() {
  start_proxies tls_handshakes tls || return 0
  local p
  for p in "${SCEN_PROXIES[@]}"; do check_s_time_request "$p"; done
  run_rounds tls_handshakes
  stop_proxies
}

# New TLS connections per second with session resumption (where the server offers it).
scenario_tls_resumed_handshakes() {
  start_proxies tls_resumed_handshakes tls || return 0
  run_rounds tls_resumed_handshakes
  stop_proxies
}

# A compressed 20 KiB JSON answer: edgegate's codings against nginx's gzip. Each row's
# coding and size are checked (and noted) first, so a row that did not compress cannot
# pass for a cheap one.
declare -A COMPRESSED_SIZE=()
scenario_compress_json() {
  start_proxies compress_json compress || return 0
  local p header size encoding
  for p in "${SCEN_PROXIES[@]}"; do
    header=$(request_header compress_json "$p")
    encoding=$(curl -s -o "$TMP/compressed.body" -D - --max-time 2 -H "$header" "${PROXY_URL[$p]}bench.json" \
      | awk -F': *' 'tolower($1) == "content-encoding" { gsub(/\r/, "", $2); print $2; exit }')
    size=$(wc -c <"$TMP/compressed.body")
    [[ -n $encoding && $encoding == "${header#Accept-Encoding: }" ]] \
      || die "$p: asked with '$header', answered with content-encoding '${encoding:-none}'"
    COMPRESSED_SIZE[$p]="$encoding: $size of $JSON_BYTES bytes (ratio $(awk -v a="$JSON_BYTES" -v b="$size" 'BEGIN { printf "%.2f", a / b }'))"
    log "compress_json $p: ${COMPRESSED_SIZE[$p]}"
  done
  run_rounds compress_json
  stop_proxies
}

# The latency a Redis-shared limit adds (one store round trip), at a light load.
scenario_global_limit() {
  start_proxies global_limit plain || return 0
  run_rounds global_limit
  stop_proxies
}

# Config reloads under keepalive load: client-visible errors per proxy.
scenario_reload_under_load() {
  use_proxies reload_under_load reload || return 0
  start_origin
  write_reload_lua
  local p r
  for p in "${SCEN_PROXIES[@]}"; do
    "start_proxy_$p" reload
    RELOAD_GEN[$p]=0
    [[ $(x_reload_now "${PROXY_URL[$p]}") == 0 ]] || die "$p does not send x-reload: 0 with its first config"
  done
  for ((r = 1; r <= ROUNDS; r++)); do
    local order; read -r -a order <<<"$(round_order "$r")"
    log "[reload_under_load] round $r/$ROUNDS: ${order[*]} (load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"
    for p in "${order[@]}"; do
      log "[reload_under_load] round $r: $p, $RELOADS reloads in $RELOAD_DURATION"
      reload_run "$r" "$p"
      sleep 1   # let old nginx/HAProxy workers finish before the next proxy's run
    done
    print_reload_round_table "$r"
  done
  stop_proxies
}

# ----------------------------------------------------------------------------------------
# auth_flood: FLOOD_CONNECTIONS keepalive connections send wrong passwords, each one new
# (so no credential is ever cached), to a basic-auth route (/flood/) of one edgegate,
# while a second wrk (PROBE_CONNECTIONS) measures a plain route of the same worker: its
# p99 alone, then under the flood. Every wrong password costs a bcrypt check (cost
# BCRYPT_COST) on the blocking pool; what this shows is whether the worker's event loop
# keeps serving the other route meanwhile. edgegate runs on FLOOD_CPU_PROXY (default:
# the same CPU as always, so the hashing threads compete with the worker for it).
# ----------------------------------------------------------------------------------------
FLOOD_RESULTS=$TMP/flood.tsv   # round quiet_rps quiet_p99ms flood_rps flood_p99ms probe_errors flood_requests flood_non2xx flood_timeouts denied error
: >"$FLOOD_RESULTS"

write_flood_lua() {
  cat >"$TMP/flood.lua" <<'EOF'
-- Wrong passwords for user "bench", a new one on every request.
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local d = { math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    out[#out + 1] = chars:sub(d[1] + 1, d[1] + 1) .. chars:sub(d[2] + 1, d[2] + 1)
      .. (b and chars:sub(d[3] + 1, d[3] + 1) or "=") .. (c and chars:sub(d[4] + 1, d[4] + 1) or "=")
  end
  return table.concat(out)
end
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local n = 0
function request()
  n = n + 1
  local credential = "bench:wrong-" .. tostring(tid) .. "-" .. n
  return wrk.format("GET", "/flood/", { ["Authorization"] = "Basic " .. b64(credential) })
end
EOF
}

# flood_auth_count RESULT: edgegate_auth_total{route="flood",result=RESULT} now.
flood_auth_count() {
  curl -s --max-time 2 "http://127.0.0.1:$EDGEGATE_ADMIN_PORT/metrics" \
    | awk -v want="result=\"$1\"" '/^edgegate_auth_total\{/ && /route="flood"/ && index($0, want) { n += $2 } END { printf "%d", n }'
}

# probe_run OUT: the plain route alone, PROBE_CONNECTIONS connections for DURATION.
probe_run() {
  local threads=$WRK_THREADS
  ((threads <= PROBE_CONNECTIONS)) || threads=$PROBE_CONNECTIONS
  run_client "$1" $((DURATION_S + 30)) \
    wrk -t"$threads" -c"$PROBE_CONNECTIONS" -d"$DURATION" --latency --timeout 2s "${PROXY_URL[edgegate]}"
}

scenario_auth_flood() {
  if ! want edgegate; then
    SCEN_NA[auth_flood]="${PROXY_LIST[*]}"
    log "[auth_flood] skipped: it measures the edgegate row, and PROXIES does not name it"
    return 0
  fi
  start_origin
  write_flood_lua
  LOAD_HEADER=
  MORE_ROUTES=$(printf '\n[[routes]]\nname = "flood"\npath_prefix = "/flood"\nupstream = "origin"\nauth = "bench_basic"\n') \
    AUTH_TABLES=$(auth_tables) EDGEGATE_CPUS=${FLOOD_CPU_PROXY:-$CPU_PROXY} \
    start_edgegate_as edgegate "$EDGEGATE_BIN" plain
  local flood_url="${PROXY_URL[edgegate]}flood/" code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$flood_url" || true)
  [[ $code == 401 ]] || die "the flood route answered $code without a credential, not 401"
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "$BASIC_HEADER" "$flood_url" || true)
  [[ $code == 200 ]] || die "the flood route answered $code to the right password, not 200"
  local r quiet flood fout flood_pid d0 d1 e0 e1 qrate qp99 qerr frate fp99 ferr
  for ((r = 1; r <= ROUNDS; r++)); do
    log "[auth_flood] round $r/$ROUNDS: the plain route alone (load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"
    quiet=$TMP/wrk.auth_flood.r$r.quiet.txt
    probe_run "$quiet" || die "the probe wrk failed: $(tail -n 3 "$quiet")"
    parse_wrk "$quiet" || { tail -n 30 "$quiet" >&2; die "could not parse $quiet"; }
    qrate=$P_RATE qp99=$P_LAT1 qerr=$P_ERRS
    d0=$(flood_auth_count denied); e0=$(flood_auth_count error)
    fout=$TMP/wrk.auth_flood.r$r.flood.txt
    log "[auth_flood] round $r: $FLOOD_CONNECTIONS connections of wrong passwords on /flood/, and the plain route again"
    start_bg flood "$CPU_WRK" "$fout" timeout -k 5 $((WARMUP_S + DURATION_S + 40)) \
      wrk -t1 -c"$FLOOD_CONNECTIONS" -d$((WARMUP_S + DURATION_S + 1))s --latency --timeout 10s \
      -s "$TMP/flood.lua" "$flood_url"
    flood_pid=$LAST_PID
    sleep "$WARMUP_S"
    flood=$TMP/wrk.auth_flood.r$r.probe.txt
    probe_run "$flood" || die "the probe wrk failed under the flood: $(tail -n 3 "$flood")"
    wait "$flood_pid" || log "warning: the flood wrk exited with $?"
    parse_wrk "$flood" || { tail -n 30 "$flood" >&2; die "could not parse $flood"; }
    frate=$P_RATE fp99=$P_LAT1 ferr=$P_ERRS
    d1=$(flood_auth_count denied); e1=$(flood_auth_count error)
    local freqs fnon2xx ftimeouts
    freqs=$(awk '/ requests in / { print $1; exit }' "$fout"); freqs=${freqs:-0}
    fnon2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF; exit }' "$fout"); fnon2xx=${fnon2xx:-0}
    ftimeouts=$(awk '/Socket errors:/ { gsub(/,/, ""); print $NF; exit }' "$fout"); ftimeouts=${ftimeouts:-0}
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$qrate" "$qp99" "$frate" "$fp99" "$((qerr + ferr))" \
      "$freqs" "$fnon2xx" "$ftimeouts" "$((d1 - d0))" "$((e1 - e0))" >>"$FLOOD_RESULTS"
    log "[auth_flood] round $r: plain route p99 ${qp99} ms alone, ${fp99} ms under the flood ($freqs flood requests answered, $((d1 - d0)) refused, $((e1 - e0)) errors)"
  done
  stop_proxies
}

# ----------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------
version_of() {
  case "$1" in
    edgegate) "$EDGEGATE_BIN" --version 2>&1 | head -n 1 || true ;;
    edgegate_base) "$EDGEGATE_BASE_BIN" --version 2>&1 | head -n 1 || true ;;
    edgegate_traced) echo "$("$EDGEGATE_BIN" --version 2>&1 | head -n 1), [gateway.tracing] sample_ratio 1.0 to a local nginx sink" ;;
    edgegate_logged) echo "$("$EDGEGATE_BIN" --version 2>&1 | head -n 1), access_log to a file" ;;
    edgegate_policy) echo "$("$EDGEGATE_BIN" --version 2>&1 | head -n 1), route with: $(tr '\n' ' ' <<<"$POLICY_ROUTE")" ;;
    edgegate_zstd|edgegate_br) echo "$("$EDGEGATE_BIN" --version 2>&1 | head -n 1), compress = true, asked for ${1#edgegate_} (n/a outside compress_json)" ;;
    edgegate_redis) echo "$("$EDGEGATE_BIN" --version 2>&1 | head -n 1), a scope = \"global\" rate_limit in $(redis-server --version 2>/dev/null | awk '{ print $1, $2, $3 }') on 127.0.0.1" ;;
    edgegate_jwt_rs256|edgegate_jwt_es256)
      echo "$("$EDGEGATE_BIN" --version 2>&1 | head -n 1), the route behind jwt (JWKS file), ${1#edgegate_jwt_} tokens" ;;
    edgegate_basic) echo "$("$EDGEGATE_BIN" --version 2>&1 | head -n 1), the route behind basic auth (bcrypt cost $BCRYPT_COST), a cached credential" ;;
    edgegate_token) echo "$("$EDGEGATE_BIN" --version 2>&1 | head -n 1), the plain route, the RS256 token sent but not checked" ;;
    bare_pingora)
      echo "examples/bare_pingora.rs ($BARE_PINGORA_BIN), pingora $(awk '$0 == "name = \"pingora\"" { getline; gsub(/"/, "", $3); print $3; exit }' "$REPO/Cargo.lock" 2>/dev/null)" ;;
    nginx) nginx -v 2>&1 | head -n 1 || true ;;
    haproxy) haproxy -v 2>&1 | head -n 1 || true ;;
    wrk) { wrk -v 2>&1 || true; } | head -n 1 ;;
    h2load) h2load --version 2>&1 | head -n 1 || true ;;
    openssl) openssl version 2>&1 | head -n 1 || true ;;
  esac
}

summarize_rates() {  # scenario
  local scen=$1
  local -a tv; mapfile -t tv < <(table_vars "$scen")
  awk -F'\t' -v s="$scen" -v order="$PROXIES" -v na="${SCEN_NA[$scen]:-}" "${tv[@]}" '
    function median(list,   a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
      if (n == 0) return "nan"
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function ratio(a, b) { return (b + 0 > 0 && a != "nan") ? sprintf("%.3f", a / b) : "n/a" }
    $1 == s { rps[$3] = rps[$3] " " $4; lat1[$3] = lat1[$3] " " $5; lat2[$3] = lat2[$3] " " $12
              cpu[$3] = cpu[$3] " " $8; pct[$3] = pct[$3] " " $13
              ucpu[$3] = ucpu[$3] " " $14; scpu[$3] = scpu[$3] " " $15
              up[$3] += $10; err[$3] += $11; nr[$3]++ }
    END {
      split(na, nalist, " "); for (k in nalist) isna[nalist[k]] = 1
      printf "  %-18s %12s", "proxy", rl
      if (l1 != "") printf " %9s", l1
      if (l2 != "") printf " %9s", l2
      printf " %12s %12s %12s %7s %13s %7s\n", pl, ul, sl, "cpu %", "new up conns", "errors"
      n = split(order, names, " ")
      for (i = 1; i <= n; i++) {
        p = names[i]
        if (p in isna) { printf "  %-18s %12s   (cannot run this scenario)\n", p, "n/a"; continue }
        if (!(p in nr)) continue
        R[p] = median(rps[p]); L1[p] = median(lat1[p]); L2[p] = median(lat2[p]); C[p] = median(cpu[p]); P[p] = median(pct[p])
        U[p] = median(ucpu[p]); S[p] = median(scpu[p])
        printf "  %-18s %12.0f", p, R[p]
        if (l1 != "") printf " %9.3f", L1[p]
        if (l2 != "") printf " %9.3f", L2[p]
        printf " %12.4f %12.4f %12.4f %7.1f %13d %7d\n", C[p], U[p], S[p], P[p], up[p], err[p]
      }
      printf "  (%s, %s%s, %s, %s, cpu %%: medians (so user + sys need not add up to the cpu median exactly);\n", rl, (l1 != "" ? "latency, " : ""), pl, ul, sl
      printf "   cpu = user + sys: the proxy'"'"'s utime and stime from /proc/PID/stat, its child processes included;\n"
      printf "   cpu %%: the proxy'"'"'s CPU time over wall time, 100 = one CPU busy;\n"
      printf "   new up conns: connections opened to the origin during the measured runs, all rounds; errors: all rounds)\n"
      if ("edgegate" in nr) {
        printf "\n  %-27s %12s", "ratio", rl
        if (l1 != "") printf " %9s", l1
        if (l2 != "") printf " %9s", l2
        printf " %12s %12s %12s\n", pl, ul, sl
        for (i = 1; i <= n; i++) {
          p = names[i]; if (p == "edgegate" || !(p in nr)) continue
          printf "  %-27s %12s", "edgegate/" p, ratio(R["edgegate"], R[p])
          if (l1 != "") printf " %9s", ratio(L1["edgegate"], L1[p])
          if (l2 != "") printf " %9s", ratio(L2["edgegate"], L2[p])
          printf " %12s %12s %12s\n", ratio(C["edgegate"], C[p]), ratio(U["edgegate"], U[p]), ratio(S["edgegate"], S[p])
        }
        printf "  (%s: higher is better; %s%s: lower is better)\n", rl, (l1 != "" ? "latency and " : ""), "CPU"
      }
      for (i = 1; i <= n; i++) {
        p = names[i]
        if (p ~ /^edgegate_(jwt_|basic)/ && (p in nr) && ("edgegate" in nr) && C["edgegate"] + 0 > 0)
          printf "  %s: %+.1f%% CPU per request against the edgegate row (bar: at most +10%%)\n", p, 100 * (C[p] / C["edgegate"] - 1)
        if (p == "edgegate_jwt_rs256" && (p in nr) && ("edgegate_token" in nr) && C["edgegate_token"] + 0 > 0)
          printf "  %s: %+.1f%% CPU per request against edgegate_token (the same request, unchecked): the verification alone\n", p, 100 * (C[p] / C["edgegate_token"] - 1)
      }
      for (p in err) if (err[p] > 0) printf "  WARNING: %s had %d errors/non-2xx responses; its numbers are suspect\n", p, err[p]
    }' "$RESULTS"
}

# global_limit: what the store adds, edgegate_redis minus edgegate (medians).
summarize_added_latency() {
  awk -F'\t' '
    function median(list,   a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $1 == "global_limit" && ($3 == "edgegate" || $3 == "edgegate_redis") { p50[$3] = p50[$3] " " $5; p99[$3] = p99[$3] " " $12 }
    END {
      if (!("edgegate" in p50) || !("edgegate_redis" in p50)) exit
      printf "  added by the Redis-shared limit (edgegate_redis - edgegate, medians): p50 %+.3f ms, p99 %+.3f ms\n",
        median(p50["edgegate_redis"]) - median(p50["edgegate"]), median(p99["edgegate_redis"]) - median(p99["edgegate"])
    }' "$RESULTS"
}

summarize_flood() {
  awk -F'\t' -v fc="$FLOOD_CONNECTIONS" -v pc="$PROBE_CONNECTIONS" '
    function median(list,   a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
      if (n == 0) return "nan"
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { nr++; qr = qr " " $2; qp = qp " " $3; fr = fr " " $4; fp = fp " " $5; perr += $6
      freq += $7; fnon += $8; fto += $9; den += $10; err += $11
      if ($5 + 0 > worst + 0) worst = $5 }
    END {
      if (!nr) { print "  (no round ran)"; exit }
      printf "  %-28s %12s %9s\n", "plain route (probe)", "req/s", "p99 ms"
      printf "  %-28s %12.0f %9.3f\n", "alone", median(qr), median(qp)
      printf "  %-28s %12.0f %9.3f\n", "under the flood", median(fr), median(fp)
      printf "  (medians over %d round(s); the worst round under the flood: p99 %.3f ms; probe errors, all rounds: %d)\n", nr, worst, perr
      printf "  flood, all rounds: %d answers (%d non-2xx), %d wrk socket errors/timeouts; edgegate counted %d refused (401) and %d errors (503: no place in the hashing pool in time)\n", freq, fnon, fto, den, err
      printf "  bar: the plain route keeps p99 under 5 ms during the flood: %s\n", (median(fp) + 0 < 5 && perr == 0) ? "met" : "NOT met"
    }' "$FLOOD_RESULTS"
}

summarize_reload() {
  awk -F'\t' -v order="$PROXIES" -v reloads="$RELOADS" -v na="${SCEN_NA[reload_under_load]:-}" '
    function median(list,   a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
      if (n == 0) return "nan"
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { p = $3; nr[p]++; reqs[p] += $4; rps[p] = rps[p] " " $5; p99[p] = p99[p] " " $6
      ce[p] += $7; re[p] += $8; we[p] += $9; te[p] += $10; ne[p] += $11; err[p] += $12
      split($13, ap, "/"); applied[p] += ap[1]; sent[p] += ap[2]; gen[p] = $14
    }
    END {
      printf "  %-12s %10s %9s %8s %8s %6s %6s %8s %8s %7s %9s %10s\n", "proxy", "requests", "req/s", "p99 ms", "connect", "read", "write", "timeout", "non-2xx", "errors", "reloads", "generation"
      split(na, nalist, " "); for (k in nalist) isna[nalist[k]] = 1
      n = split(order, names, " ")
      for (i = 1; i <= n; i++) {
        p = names[i]
        if (p in isna) { printf "  %-12s %10s   (nothing to reload: cannot run this scenario)\n", p, "n/a"; continue }
        if (!(p in nr)) continue
        printf "  %-12s %10d %9.0f %8.3f %8d %6d %6d %8d %8d %7d %9s %10s\n", p, reqs[p], median(rps[p]), median(p99[p]), ce[p], re[p], we[p], te[p], ne[p], err[p], applied[p] "/" sent[p], gen[p]
      }
      printf "  (requests and errors: sums over all rounds; req/s, p99: medians; errors = wrk socket errors (connect,\n"
      printf "   read, write, timeout) + non-2xx responses; reloads: applied/sent, where \"applied\" is verified only for\n"
      printf "   edgegate (admin /config generation), the others count signals sent; generation: edgegate'"'"'s final\n"
      printf "   /config generation, 1 + all reloads)\n"
      for (i = 1; i <= n; i++) { p = names[i]; if (p in nr && err[p] > 0) printf "  %s: %d client-visible errors in %d reloads\n", p, err[p], sent[p] }
      if ("edgegate" in nr) printf "  edgegate: %s (the bar is zero errors)\n", (err["edgegate"] == 0 && applied["edgegate"] == sent["edgegate"]) ? "zero errors, every reload applied" : "FAILED the bar"
    }' "$RELOAD_RESULTS"
}

summarize() {
  {
    echo "edgegate load benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $NCPU CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null))"
    echo "load average at start: $LOADAVG_START, at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) (the end includes this script's own load;"
    echo "  other work on the machine makes every number noisier; each round's start is in the log)"
    if [[ $PIN == 1 ]]; then
      echo "pinning: proxy cpu $CPU_PROXY, origin cpu $CPU_ORIGIN, load generator cpu $CPU_WRK"
    else
      echo "pinning: none"
    fi
    echo "rounds: $ROUNDS, measured runs $DURATION after a $WARMUP warm-up, proxy order rotated each round"
    echo "origin: nginx, 1 worker, 200 \"ok\\n\"; every proxy: 1 worker/thread, HTTP/1.1 keepalive to the origin, no access log"
    echo "  (except the edgegate_logged row; edgegate_traced exports every span)"
    for p in "${!ROW_NOTES[@]}"; do echo "  $p, at its last stop: ${ROW_NOTES[$p]}"; done
    local p
    for p in "${PROXY_LIST[@]}" wrk h2load openssl; do echo "  $p: $(version_of "$p")"; done
    if ((${#TLS_INFO[@]})); then
      echo "TLS (one ECDSA P-256 certificate for all; what a default OpenSSL client negotiates):"
      for p in "${PROXY_LIST[@]}"; do [[ -n ${TLS_INFO[$p]:-} ]] && echo "  $p: ${TLS_INFO[$p]}"; done
    fi
    local scen
    for scen in $SCENARIOS; do
      echo
      if [[ $scen == reload_under_load ]]; then
        echo "scenario $scen — ${SC_DESC[$scen]}, $ROUNDS round(s)"
        summarize_reload
      elif [[ $scen == auth_flood ]]; then
        echo "scenario $scen — ${SC_DESC[$scen]}"
        summarize_flood
      else
        echo "scenario $scen — median over $ROUNDS round(s)"
        echo "  load: ${SC_DESC[$scen]:-}"
        summarize_rates "$scen"
        if [[ $scen == compress_json ]]; then
          for p in "${PROXY_LIST[@]}"; do
            [[ -n ${COMPRESSED_SIZE[$p]:-} ]] && echo "  $p answer: ${COMPRESSED_SIZE[$p]}"
          done
        fi
        [[ $scen == global_limit ]] && summarize_added_latency
      fi
    done
    echo
    echo "per-run results (scenario round proxy rate lat1_ms cpu_s count cpu_per_unit origin_cpu_per_unit upstream_conns errors lat2_ms cpu_pct user_cpu_per_unit sys_cpu_per_unit):"
    sed 's/^/  /' "$RESULTS"
    if [[ -s $FLOOD_RESULTS ]]; then
      echo "auth_flood rounds (round quiet_rps quiet_p99ms flood_rps flood_p99ms probe_errors flood_answers flood_non2xx flood_socket_errors refused errors):"
      sed 's/^/  /' "$FLOOD_RESULTS"
    fi
    if [[ -s $RELOAD_RESULTS ]]; then
      echo "reload runs (scenario round proxy requests req/s p99ms connect read write timeout non2xx errors applied/sent generation served_x_reload max_x_reload_seen_under_load):"
      sed 's/^/  /' "$RELOAD_RESULTS"
    fi
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
  local scen
  for scen in $SCENARIOS; do
    declare -F "scenario_$scen" >/dev/null || die "unknown scenario: $scen (known: $ALL_SCENARIOS)"
  done
  ensure_tools
  ensure_edgegate
  ensure_bare_pingora
  make_certs
  if wants_auth; then make_auth_fixtures; fi
  log "proxies: ${PROXY_LIST[*]}; scenarios: $SCENARIOS; duration $DURATION x $ROUNDS round(s); tmp $TMP"
  for scen in $SCENARIOS; do
    "scenario_$scen"
  done
  summarize
}

main
