#!/usr/bin/env bash
# `make bench`: every routing choice in front of the same simulated pods, on the reference's
# shared-prefix workloads scaled to this machine (bench/README.md). Writes bench/results/.
#
# Knobs (environment): SCENARIOS (default "shared-prefix-high shared-prefix-low sharegpt chat-bursty
# overload replicas seed-scale kv-events"), TARGETS
# (comma list, default the scenario's), BENCH_GROUPS (shared-prefix groups, default the scenario's),
# TIME_SCALE, LENGTH_DIVISOR (default 4; 1 = the reference's own lengths), ROUTER_VENV (default
# target/router-venv), SIM_CPUS / CLIENT_CPUS (default 0 / 1 on a machine with 2+ CPUs), TOKENIZER
# (a tokenizer.json for the kv-events scenario's pods and precise targets; default the bench's own).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
venv="${ROUTER_VENV:-$target_dir/router-venv}"
scenarios="${SCENARIOS:-shared-prefix-high shared-prefix-low sharegpt chat-bursty overload replicas seed-scale kv-events}"

# The peers and matplotlib live in their own virtualenv, not the project's .venv. A peer that
# cannot be installed is skipped by the runner (its entry says why); the run goes on.
if [[ ! -x "$venv/bin/python" ]]; then python3 -m venv "$venv"; fi
if ! "$venv/bin/python" -c 'import sglang_router' 2>/dev/null || [[ ! -x "$venv/bin/vllm-router" ]]; then
  "$venv/bin/pip" install --quiet sglang-router==0.3.2 vllm-router==0.1.17 \
    || echo "bench: could not install the peer routers; their targets will be skipped" >&2
fi
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  "$venv/bin/pip" install --quiet 'matplotlib>=3.8' || echo "bench: could not install matplotlib; no plots" >&2
fi

cargo build --release --quiet -p inference-bench -p inference-sim -p inference-scheduler
# Two cores: the simulated pods get one to themselves (their timing must stay exact), the
# gateway under test and the load generator share the other.
sim_cpus="${SIM_CPUS:-}" client_cpus="${CLIENT_CPUS:-}"
if [[ -z "$sim_cpus" && $(nproc) -ge 2 ]] && command -v taskset > /dev/null; then sim_cpus=0 client_cpus=1; fi
pin=(); [[ -n "$client_cpus" ]] && pin=(taskset -c "$client_cpus")

echo "bench: load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$SECONDS
for scenario in $scenarios; do
  args=(suite --scenario "$scenario" --out-dir bench/results --log-dir "$target_dir/bench/logs"
        --sim-bin "$target_dir/release/inference-sim" --router-venv "$venv")
  [[ -n "$sim_cpus" ]] && args+=(--sim-cpus "$sim_cpus")
  [[ -n "${TARGETS:-}" ]] && args+=(--targets "$TARGETS")
  [[ -n "${BENCH_GROUPS:-}" ]] && args+=(--groups "$BENCH_GROUPS")
  [[ -n "${TIME_SCALE:-}" ]] && args+=(--time-scale "$TIME_SCALE")
  [[ -n "${LENGTH_DIVISOR:-}" ]] && args+=(--length-divisor "$LENGTH_DIVISOR")
  [[ -n "${TOKENIZER:-}" ]] && args+=(--tokenizer "$TOKENIZER")
  "${pin[@]}" "$target_dir/release/inference-bench" "${args[@]}"
done
echo "bench: load average at end: $(cut -d' ' -f1-3 /proc/loadavg); $((SECONDS - start)) s"

python3 bench/tables.py bench/results   # also bench/results/summary.md
if "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  "$venv/bin/python" bench/plot.py bench/results
fi
