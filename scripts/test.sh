#!/usr/bin/env bash
# The whole test suite: unit tests, end-to-end tests against the real binary on loopback,
# the shipped and example configs through `edgegate check`, and the packaging checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --locked --bins --tests
bin="${CARGO_TARGET_DIR:-target}/debug/edgegate"
for f in config/*.toml; do
  echo "check $f"
  "$bin" check --config "$f"
done
EDGEGATE_BIN="$bin" bash packaging/check.sh
# Benchmarks once each in test mode (a smoke run), then every test; the end-to-end tests
# come last, so their summary is the run's closing line.
cargo test --locked --benches
cargo test --locked --lib --bins --tests
