#!/usr/bin/env bash
# Puts SGLang's and vLLM's routers in front of three simulated pods and checks that they register
# the pods and route completions and streaming chat through them, printing each policy's
# prefix-cache hit ratio. Offline: the routers talk only to the loopback pods.
# The routers live in their own virtualenv (ROUTER_VENV, default target/router-venv), created on
# first use from PyPI; they are not part of the project's .venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
venv="${ROUTER_VENV:-$root/target/router-venv}"
if [[ ! -x "$venv/bin/vllm-router" || ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sglang_router' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet sglang-router==0.3.2 vllm-router==0.1.17
fi
cargo build --release --quiet -p inference-sim --bin inference-sim
sim_bin="${CARGO_TARGET_DIR:-$root/target}/release/inference-sim"
export HF_HUB_OFFLINE=1 NO_PROXY=127.0.0.1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

workdir="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; rm -rf "$workdir"; }
trap cleanup EXIT

model="meta-llama/Llama-3.1-8B-Instruct"  # SGLang's router rejects requests that name no model
shared="$(python3 -c "print(' '.join('shared%d' % i for i in range(300)))")"
failures=0
check() {
  local router=$1 policy=$2
  "$sim_bin" --pods 3 --base-port 0 --time-scale 0.1 > "$workdir/sim.out" 2> "$workdir/sim.err" &
  local sim=$!; pids+=("$sim")
  for _ in $(seq 1 100); do [[ "$(grep -c listening "$workdir/sim.out" || true)" -ge 3 ]] && break; sleep 0.05; done
  local urls; urls=$(awk '/listening on/ {print "http://" $NF}' "$workdir/sim.out" | paste -sd' ' -)
  local port metrics_port; port=$(free_port); metrics_port=$(free_port)
  if [[ $router == sglang ]]; then
    "$venv/bin/python" -m sglang_router.launch_router --worker-urls $urls --policy "$policy" --host 127.0.0.1 \
      --port "$port" --prometheus-host 127.0.0.1 --prometheus-port "$metrics_port" > "$workdir/router.log" 2>&1 &
  else
    "$venv/bin/vllm-router" --host 127.0.0.1 --port "$port" --prometheus-port "$metrics_port" --worker-urls $urls \
      --policy "$policy" > "$workdir/router.log" 2>&1 &
  fi
  local router_pid=$!; pids+=("$router_pid")
  local started=$SECONDS ready=0
  for _ in $(seq 1 300); do
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/models" || true)" == 200 ]]; then ready=1; break; fi
    sleep 0.1
  done
  local codes=""
  if [[ $ready == 1 ]]; then
    for group in 0 1 2 3 4 5; do for question in 0 1 2 3; do
      codes+=$(curl -s -o /dev/null -w '%{http_code} ' "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
        -d "{\"model\": \"$model\", \"prompt\": \"group$group $shared question $question\", \"max_tokens\": 4}")
      codes+=$(curl -s -o /dev/null -w '%{http_code} ' "http://127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' \
        -d "{\"model\": \"$model\", \"messages\": [{\"role\": \"user\", \"content\": \"group$group $shared question $question\"}], \"max_tokens\": 4, \"stream\": true}")
    done; done
  fi
  local queries=0 hits=0 spread=""
  for url in $urls; do
    local text; text=$(curl -s "$url/metrics")
    local q h; q=$(awk '/^vllm:prefix_cache_queries_total/ {print $2}' <<< "$text"); h=$(awk '/^vllm:prefix_cache_hits_total/ {print $2}' <<< "$text")
    queries=$((queries + ${q%.*})); hits=$((hits + ${h%.*}))
    spread+="$(awk '/^vllm:request_success_total/ {s += $2} END {print s + 0}' <<< "$text") "
  done
  kill "$router_pid" "$sim" 2>/dev/null || true; wait "$router_pid" "$sim" 2>/dev/null || true
  local ok=$(( ready == 1 )) non200; non200=$(tr ' ' '\n' <<< "$codes" | grep -cv '^200$\|^$' || true)
  [[ $non200 -eq 0 && -n "$codes" ]] || ok=0
  printf '%-7s %-13s ready=%-3s requests/pod=[%s] non-200=%s prefix hits %s%%\n' "$router" "$policy" \
    "$([[ $ready == 1 ]] && echo "$((SECONDS - started))s" || echo no)" "${spread% }" "$non200" \
    "$(( queries > 0 ? 100 * hits / queries : 0 ))"
  if [[ $ok != 1 ]]; then failures=$((failures + 1)); sed 's/\x1b\[[0-9;]*m//g' "$workdir/router.log" | tail -5; fi
}

for policy in cache_aware round_robin power_of_two; do check sglang "$policy"; done
for policy in cache_aware kv_aware round_robin power_of_two; do check vllm "$policy"; done
[[ $failures -eq 0 ]] || { echo "check-routers: $failures configuration(s) failed" >&2; exit 1; }
echo "check-routers: both routers accept and route through the simulator"
