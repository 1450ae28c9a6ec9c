#!/usr/bin/env bash
# Cost of the module in Envoy, 10 KB bodies (the issue's figure) and 220 KB bodies: p50/p99 latency
# added (sequential requests) and maximum requests per second at saturation (SATURATION_CLIENTS,
# SATURATION_SECS). The module runs its default profile.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p integration --bin bench_overhead
for kib in 10 220; do
  target/release/bench_overhead "${REQUESTS:-3000}" "$kib"
done
