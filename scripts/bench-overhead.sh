#!/usr/bin/env bash
# Cost of the module in Envoy, 10 KB bodies (the issue's figure) and 220 KB bodies: p50/p99
# latency (sequential requests) and maximum requests per second at saturation, plain Envoy and
# Envoy with the module's default profile measured in the same run, interleaved, in ROUNDS
# rounds (default 5) with the median and spread reported. Both Envoys are pinned to one CPU
# (ENVOY_CPU, default the last); clients and backend run where CLIENT_CPUS says (a taskset list,
# default all CPUs: on 2 CPUs, clients confined to the other one are the bottleneck).
# Environment: REQUESTS (per target per round, default 1000), ROUNDS, SATURATION_CLIENTS (32),
# SATURATION_SECS (3). Writes target/bench/overhead-10k.json and overhead-220k.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p integration --bin bench_overhead
pin=()
if [[ -n ${CLIENT_CPUS:-} ]]; then
  pin=(taskset -c "$CLIENT_CPUS")
fi
for kib in 10 220; do
  "${pin[@]}" target/release/bench_overhead "${REQUESTS:-1000}" "$kib"
done
