#!/usr/bin/env bash
# Soak: 1,000 reloads under light load; prints the gateway's RSS before and after, and
# the request outcome. Loopback only; every loop is bounded in count and time.
#   RELOADS=1000 bash benches/soak_reload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RELOADS=${RELOADS:-1000}
BIN=${EDGEGATE_BIN:-target/release/edgegate}
[ -x "$BIN" ] || { bash scripts/setup.sh wrk; cargo build --release --locked; }
command -v wrk >/dev/null || bash scripts/setup.sh wrk

dir=$(mktemp -d)
gw=""
trap '[ -n "$gw" ] && kill "$gw" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

write_config() { # $1: generation marker, changes a route and a pool so each reload rebuilds them
  cat > "$dir/edgegate.toml.tmp" <<TOML
[gateway]
threads = 1
[admin]
address = "127.0.0.1:0"
[[listeners]]
name = "web"
address = "127.0.0.1:0"
[[listeners]]
name = "backend"
address = "127.0.0.1:0"
[[routes]]
name = "backend"
listeners = ["backend"]
respond = { status = 200, body = "ok $1\n" }
[[routes]]
name = "main-$1"
listeners = ["web"]
upstream = "pool"
response_headers = { set = { "x-generation" = "$1" } }
[upstreams.pool]
endpoints = ["127.0.0.1:BACKEND_PORT"]
retries = $(( $1 % 2 ))
TOML
  sed "s/BACKEND_PORT/${backend_port:-1}/" "$dir/edgegate.toml.tmp" > "$dir/edgegate.toml.new"
  mv "$dir/edgegate.toml.new" "$dir/edgegate.toml"
}

write_config 0
"$BIN" run --config "$dir/edgegate.toml" --log-format json 2> "$dir/log" &
gw=$!
for _ in $(seq 100); do grep -q '"edgegate ready"' "$dir/log" && break; sleep 0.05; done
addr() { grep "\"listening\"" "$dir/log" | grep "\"listener\":\"$1\"" | tail -1 | sed 's/.*"address":"\([^"]*\)".*/\1/'; }
admin=$(grep '"admin listening"' "$dir/log" | sed 's/.*"address":"\([^"]*\)".*/\1/')
web=$(addr web); backend=$(addr backend); backend_port=${backend##*:}
write_config 1   # now with the real backend port
generation() { curl -s "http://$admin/config" | sed -n 's/.*"generation": \([0-9]*\).*/\1/p'; }
for _ in $(seq 100); do [ "$(generation)" = 2 ] && break; sleep 0.05; done

rss() { awk '/VmRSS/ {print $2}' "/proc/$gw/status"; }
rss_start=$(rss)
# Light load for the whole soak: two connections, one thread.
wrk -t1 -c2 -d600s "http://$web/" > "$dir/wrk.txt" 2>&1 &
load=$!
started=$(date +%s)
for i in $(seq 2 "$RELOADS"); do
  write_config "$i"
  kill -HUP "$gw"
  # Bounded wait for the reload to land before the next one.
  for _ in $(seq 200); do [ "$(generation)" -ge $((i + 1)) ] && break; sleep 0.005; done
  [ $((i % 250)) = 0 ] && echo "reload $i: rss $(rss) KiB"
done
elapsed=$(( $(date +%s) - started ))
kill -INT "$load"; wait "$load" 2>/dev/null || true
rss_end=$(rss)
echo "reloads: $RELOADS in ${elapsed}s; final generation $(generation)"
echo "rss before: ${rss_start} KiB, after: ${rss_end} KiB, change: $((rss_end - rss_start)) KiB"
echo "failures: $(curl -s "http://$admin/metrics" | grep 'edgegate_config_reloads_total{result="failure"}')"
grep -E "requests in|Non-2xx|Socket errors" "$dir/wrk.txt" || true
