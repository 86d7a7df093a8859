#!/usr/bin/env bash
# Installs what building edgegate needs on a fresh Debian machine with Rust and gcc:
# cmake (pingora builds zlib-ng with it), and what its tests need: chromium and
# chromium-driver for the status page tests. Pass extra Debian package names to add them
# (the load benchmark wants nginx haproxy wrk nghttp2-client; benches/tcp.sh also wants
# libnginx-mod-stream, nginx's stream module). It also installs grpcio
# for the gRPC end-to-end tests.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
# The status page tests drive a real headless Chromium over WebDriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# The global rate limit tests start their own redis-server on a free loopback port.
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The ACME end-to-end tests run pebble, the ACME test server (with pebble-challtestsrv).
command -v pebble >/dev/null 2>&1 || need+=(pebble)
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# The gRPC end-to-end tests drive a real gRPC server and client (grpcio, from PyPI).
python3 -c "import grpc" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check grpcio
# packaging/check.sh validates the rendered Kubernetes manifests against the schemas.
command -v kubernetes-validate >/dev/null 2>&1 ||
  python3 -m pip install -q --disable-pip-version-check kubernetes-validate
# packaging/check.sh builds the Debian package (from the debug build; about a minute
# to install once).
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked --quiet cargo-deb
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
