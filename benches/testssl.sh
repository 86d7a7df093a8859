#!/usr/bin/env bash
# benches/testssl.sh — runs testssl.sh against an edgegate TLS listener on 127.0.0.1 and
# prints a short summary: protocols offered, ciphers per protocol, ALPN, the rating, and
# every finding at SEVERITY (default LOW) or above.
#
#   benches/testssl.sh                 # full scan, bounded by TESTSSL_TIMEOUT (600 s)
#   FAST=1 benches/testssl.sh          # testssl --fast (fewer checks, quicker)
#   SEVERITY=MEDIUM benches/testssl.sh # only findings at MEDIUM and above in the summary
#
# Needs: testssl.sh (Debian package testssl.sh, installed with apt-get when missing),
# openssl, curl, python3 (to read testssl's JSON) and the release binary
# ${EDGEGATE_BIN:-target/release/edgegate} (built with cargo when missing).
# Everything stays on loopback; the temp dir is removed at exit (KEEP_TMP=1 keeps it).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
EDGEGATE_BIN=${EDGEGATE_BIN:-$REPO/target/release/edgegate}
SEVERITY=${SEVERITY:-LOW}
TESTSSL_TIMEOUT=${TESTSSL_TIMEOUT:-600}
FAST=${FAST:-0}
KEEP_TMP=${KEEP_TMP:-0}
BASE_PORT=${BASE_PORT:-18700}
OUT=${OUT:-/tmp/edgegate-testssl-summary.txt}

case $SEVERITY in LOW|MEDIUM|HIGH|CRITICAL) ;; *) echo "SEVERITY must be LOW, MEDIUM, HIGH or CRITICAL" >&2; exit 2 ;; esac
[[ $TESTSSL_TIMEOUT =~ ^[1-9][0-9]*$ ]] || { echo "TESTSSL_TIMEOUT must be a number of seconds" >&2; exit 2; }

log() { printf '[testssl.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

# --- prerequisites ----------------------------------------------------------------------
TESTSSL=$(command -v testssl || command -v testssl.sh || true)
if [[ -z $TESTSSL ]]; then
  command -v apt-get >/dev/null || die "testssl.sh is missing and there is no apt-get to install it"
  log "installing the Debian package testssl.sh"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y testssl.sh >/dev/null || { as_root apt-get update >/dev/null && as_root apt-get install -y testssl.sh >/dev/null; }
  TESTSSL=$(command -v testssl || command -v testssl.sh || true)
  [[ -n $TESTSSL ]] || die "testssl.sh installed but not found on PATH"
fi
for bin in openssl curl python3 timeout; do
  command -v "$bin" >/dev/null || die "missing required tool: $bin"
done
if [[ ! -x $EDGEGATE_BIN ]]; then
  log "$EDGEGATE_BIN does not exist; building it with cargo build --release --locked"
  (cd "$REPO" && cargo build --release --locked)
  [[ -x $EDGEGATE_BIN ]] || die "build finished but $EDGEGATE_BIN is still missing"
fi

# --- temp dir and cleanup ---------------------------------------------------------------
TMP=$(mktemp -d -t edgegate-testssl.XXXXXX)
GW_PID=
SCAN_PID=
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [[ -n $SCAN_PID ]] && kill -TERM -- "-$SCAN_PID" 2>/dev/null
  if [[ -n $GW_PID ]]; then
    kill -TERM "$GW_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$GW_PID" 2>/dev/null
    wait "$GW_PID" 2>/dev/null
  fi
  if ((rc != 0)) && [[ -s $TMP/logs/edgegate.log ]]; then
    echo "----- tail of $TMP/logs/edgegate.log" >&2; tail -n 20 "$TMP/logs/edgegate.log" >&2
  fi
  if [[ $KEEP_TMP == 1 ]]; then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- ports ------------------------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=$BASE_PORT
alloc_port() {  # VAR: keeps a value given in the environment, else the next free port
  [[ -n ${!1:-} ]] && return 0
  while ! port_free "$next_port"; do
    next_port=$((next_port + 1))
    ((next_port < BASE_PORT + 200)) || die "no free port from $BASE_PORT"
  done
  printf -v "$1" '%s' "$next_port"
  next_port=$((next_port + 1))
}
alloc_port PORT
alloc_port ADMIN_PORT

# --- certificate: a throwaway CA and an ECDSA P-256 server certificate ------------------
mkdir -p "$TMP/conf/tls" "$TMP/logs"
(
  cd "$TMP/conf/tls"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 397 -subj "/CN=edgegate testssl CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
  openssl req -new -key server.key -subj "/CN=bench.example.com" -out server.csr
  printf '%s\n' "subjectAltName=DNS:bench.example.com,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 397 -sha256 \
    -extfile server.ext -out server.pem
) >"$TMP/logs/openssl.log" 2>&1 || { cat "$TMP/logs/openssl.log" >&2; die "could not make the certificates"; }

# --- edgegate: one TLS listener (min_version 1.2, default ALPN), a direct response with
# HSTS set the way the spec's example route does ----------------------------------------
cat >"$TMP/conf/edgegate.toml" <<EOF
# generated by benches/testssl.sh
[gateway]
threads = 1
grace_period = "1s"
shutdown_delay = "0s"

[admin]
address = "127.0.0.1:$ADMIN_PORT"

[[listeners]]
name = "websecure"
address = "127.0.0.1:$PORT"
[listeners.tls]
certificates = [{ cert = "tls/server.pem", key = "tls/server.key" }]
min_version = "1.2"

[[routes]]
name = "ok"
path_prefix = "/"
respond = { status = 200, body = "ok\n" }
response_headers = { set = { "strict-transport-security" = "max-age=31536000" } }
EOF
"$EDGEGATE_BIN" check --config "$TMP/conf/edgegate.toml" >"$TMP/logs/check.log" 2>&1 \
  || { cat "$TMP/logs/check.log" >&2; die "edgegate check rejected the config"; }
RUST_LOG=${EDGEGATE_RUST_LOG:-warn} "$EDGEGATE_BIN" run --config "$TMP/conf/edgegate.toml" \
  </dev/null >"$TMP/logs/edgegate.log" 2>&1 &
GW_PID=$!
log "edgegate (pid $GW_PID) on https://127.0.0.1:$PORT/"
deadline=$((SECONDS + 10))
until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 --cacert "$TMP/conf/tls/ca.pem" "https://127.0.0.1:$PORT/" || true) == 200 ]]; do
  kill -0 "$GW_PID" 2>/dev/null || die "edgegate exited"
  ((SECONDS < deadline)) || die "edgegate did not answer on https://127.0.0.1:$PORT/ within 10 s"
  sleep 0.1
done

# --- testssl.sh -------------------------------------------------------------------------
# The JSON file keeps every result (--severity would drop the OK/INFO ones, which the
# summary needs for protocols and ciphers); the SEVERITY threshold is applied below.
args=(--quiet --color 0 --warnings off --nodns none --add-ca "$TMP/conf/tls/ca.pem"
      --connect-timeout 10 --openssl-timeout 10
      --jsonfile "$TMP/testssl.json" --logfile "$TMP/testssl.log")
((FAST)) && args+=(--fast)
log "running: testssl ${args[*]} https://127.0.0.1:$PORT/ (at most ${TESTSSL_TIMEOUT}s)"
started=$SECONDS
rc=0
setsid -w timeout -k 10 "$TESTSSL_TIMEOUT" "$TESTSSL" "${args[@]}" "https://127.0.0.1:$PORT/" \
  </dev/null >"$TMP/testssl.out" 2>&1 &
SCAN_PID=$!
wait "$SCAN_PID" || rc=$?
SCAN_PID=
elapsed=$((SECONDS - started))
((rc != 124)) || log "warning: testssl.sh hit the ${TESTSSL_TIMEOUT}s limit; the summary covers what it finished"
[[ -s $TMP/testssl.json ]] || { tail -n 30 "$TMP/testssl.out" >&2; die "testssl.sh wrote no JSON (exit $rc)"; }
kill -0 "$GW_PID" 2>/dev/null || die "edgegate died during the scan"

# --- summary ----------------------------------------------------------------------------
{
  echo "testssl.sh summary — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "target: edgegate $("$EDGEGATE_BIN" --version 2>&1 | awk '{ print $2; exit }'), TLS listener 127.0.0.1:$PORT, min_version 1.2, default ALPN,"
  echo "        ECDSA P-256 certificate from a throwaway CA (given with --add-ca), a respond route with HSTS"
  echo "scanner: $("$TESTSSL" --version 2>/dev/null | awk '/testssl.sh/ && /[0-9]+\.[0-9]+/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]/) { print "testssl.sh " $i; exit } }'), $(openssl version)$( ((FAST)) && echo ', --fast'), ${elapsed}s, exit code $rc"
  python3 - "$TMP/testssl.json" "$SEVERITY" <<'PY'
import json, sys

path, threshold = sys.argv[1], sys.argv[2]
levels = ["OK", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
with open(path) as f:
    data = json.load(f)
rows = data if isinstance(data, list) else data.get("scanResult", [])
by_id = {}
for r in rows:
    by_id.setdefault(r.get("id", ""), []).append(r)

def get(i):
    v = by_id.get(i)
    return v[0].get("finding", "") if v else None

print("protocols:")
for pid, name in [("SSLv2", "SSLv2"), ("SSLv3", "SSLv3"), ("TLS1", "TLS 1.0"), ("TLS1_1", "TLS 1.1"),
                  ("TLS1_2", "TLS 1.2"), ("TLS1_3", "TLS 1.3")]:
    v = get(pid)
    if v is not None:
        print(f"  {name:8} {v}")
for i, label in [("ALPN_HTTP2", "ALPN (HTTP/2)"), ("ALPN", "ALPN (others)"), ("NPN", "NPN"),
                 ("protocol_negotiated", "negotiated"), ("cipher_negotiated", "negotiated cipher"),
                 ("cipher_order", "cipher order"), ("PFS", "forward secrecy"), ("FS", "forward secrecy"),
                 ("PFS_ECDHE_curves", "ECDHE curves"), ("FS_ECDHE_curves", "ECDHE curves"),
                 ("sessionresumption_ticket", "resumption (tickets)"),
                 ("sessionresumption_ID", "resumption (IDs)"), ("secure_renego", "secure renegotiation"),
                 ("OCSP_stapling", "OCSP stapling"), ("HSTS_time", "HSTS"), ("HSTS", "HSTS")]:
    v = get(i)
    if v is not None:
        print(f"  {label + ':':24} {v}")
ciphers = [r.get("finding", "").split() for r in rows if r.get("id", "").startswith("cipher_x")]
if ciphers:
    print(f"ciphers offered ({len(ciphers)}):")
    for c in ciphers:
        # hexcode  openssl-name  kx bits  enc  bits  rfc-name
        if len(c) >= 6:
            print(f"  {c[1]:34} {c[2]} {c[3]:5} {c[4]:9} {c[5]}")
cats = [k for k in by_id if k.startswith("cipherlist_")]
if cats:
    print("cipher categories: " + ", ".join(f"{k[len('cipherlist_'):]} {get(k)}" for k in cats))
vulns = ["heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_client_renego", "CRIME_TLS", "BREACH",
         "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN", "LOGJAM", "BEAST", "LUCKY13", "RC4"]
seen = [(v, by_id[v][0].get("severity", "")) for v in vulns if v in by_id]
if seen:
    bad = [f"{v} ({sev})" for v, sev in seen if sev not in ("OK", "INFO")]
    print(f"vulnerability checks: {len(seen)} run; " + ("all not vulnerable" if not bad else "flagged: " + ", ".join(bad)))
sims = [(k[len("clientsimulation-"):], get(k)) for k in by_id if k.startswith("clientsimulation-")]
if sims:
    none = [k for k, v in sims if "No connection" in (v or "")]
    print(f"client simulations: {len(sims)}, {len(sims) - len(none)} connect" + (f"; no connection: {', '.join(none)}" if none else ""))
grade = get("overall_grade")
if grade is not None:
    caps = [r.get("finding", "") for k, v in by_id.items() if k.startswith("grade_cap_reason") for r in v]
    print(f"rating: {grade}" + (f" (capped: {'; '.join(caps)})" if caps else ""))

findings = [r for r in rows if r.get("severity") in levels and levels.index(r["severity"]) >= levels.index(threshold)]
print(f"findings at {threshold} or above: {len(findings)}")
for r in findings:
    extra = f" [{r['cve']}]" if r.get("cve") else ""
    rid = r.get("id", "")
    note = ("  (the throwaway test certificate, not edgegate)" if rid.startswith("cert_") else
            "  (HTTP response headers: set per route with response_headers, not TLS)"
            if rid in ("security_headers", "HSTS") or rid.startswith("HSTS_") else "")
    print(f"  {r['severity']:8} {r.get('id', '')}: {r.get('finding', '')}{extra}{note}")
warns = [r for r in rows if r.get("severity") in ("WARN", "DEBUG") or r.get("id") == "scanProblem"]
if warns:
    print(f"scan warnings: {len(warns)}")
    for r in warns:
        print(f"  {r.get('severity', ''):8} {r.get('id', '')}: {r.get('finding', '')}")
PY
} >"$TMP/summary.txt"
echo
cat "$TMP/summary.txt"
mkdir -p "$(dirname "$OUT")"
cp "$TMP/summary.txt" "$OUT"
cp "$TMP/testssl.log" "${OUT%.txt}.log" 2>/dev/null || true
log "summary written to $OUT (full testssl output: ${OUT%.txt}.log)"
