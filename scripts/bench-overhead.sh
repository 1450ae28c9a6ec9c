#!/usr/bin/env bash
# Latency the module adds to Envoy: 10 KB bodies (the issue's figure) and 220 KB bodies.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p integration --bin bench_overhead
for kib in 10 220; do
  target/release/bench_overhead "${REQUESTS:-3000}" "$kib"
done
