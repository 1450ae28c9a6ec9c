#!/usr/bin/env bash
# Cost of the scraper thread for 16 and 256 pods (simulated, in another process).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p integration --bin bench_scrape -p inference-sim
taskset -c 0 target/release/bench_scrape "${SECONDS_PER_SIZE:-10}" 16 256
