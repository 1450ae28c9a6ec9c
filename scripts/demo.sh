#!/usr/bin/env bash
# `make demo`: four simulated vLLM pods (inference-sim), Envoy with the module on 127.0.0.1:10000 (envoy.yaml), shared-prefix
# traffic, and a table of which pod served each group. Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
envoy_bin=$(ls .venv/lib/python3*/site-packages/envoy/_bin/envoy | head -1)
logs=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

for port in 8001 8002 8003 8004 10000 9901; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use; stop whatever listens there and retry" >&2
    exit 1
  fi
done

target/release/inference-sim --pods 4 --base-port 8001 --time-scale 0.2 >"$logs/pods.log" 2>&1 &
pids+=($!)
ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$PWD/target/release" \
  "$envoy_bin" -c envoy.yaml --concurrency 2 --disable-hot-restart --log-path "$logs/envoy.log" &
pids+=($!)

for _ in $(seq 100); do
  if curl -sf http://127.0.0.1:9901/ready >/dev/null 2>&1 && grep -q 8004 "$logs/pods.log"; then break; fi
  sleep 0.1
done
curl -sf http://127.0.0.1:9901/ready >/dev/null || { echo "Envoy did not become ready:"; cat "$logs/envoy.log"; exit 1; }

python3 scripts/demo_client.py http://127.0.0.1:10000 8 4 8001 8002 8003 8004
echo "(logs in $logs)"
