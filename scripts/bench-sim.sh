#!/usr/bin/env bash
# Speed of the simulator itself: one process serving 4 pods, pinned to CPU 0, under streaming
# load from a driver pinned to CPU 1. Prints the driver's throughput and the simulator's CPU use.
# Knobs (environment): PODS, CONCURRENCY, DURATION (s), TIME_SCALE, MAX_TOKENS, PROMPT_WORDS,
# MAX_RUNNING_SEQS. The target is >= 2,000 concurrent streams and >= 50,000 tokens/s.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

pods=${PODS:-4}
concurrency=${CONCURRENCY:-2000}
duration=${DURATION:-30}
time_scale=${TIME_SCALE:-0.1}
max_tokens=${MAX_TOKENS:-128}
prompt_words=${PROMPT_WORDS:-200}
max_running_seqs=${MAX_RUNNING_SEQS:-512}

cargo build --release --quiet -p inference-sim --bin inference-sim --example load
target_dir="${CARGO_TARGET_DIR:-$root/target}"
sim_bin="$target_dir/release/inference-sim"
load_bin="$target_dir/release/examples/load"

# Every stream is a socket on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

sim_cpu=(taskset -c 0)
load_cpu=(taskset -c 1)
if [[ "$(nproc)" -lt 2 ]] || ! command -v taskset >/dev/null; then
  echo "bench-sim: fewer than 2 CPUs or no taskset; running unpinned (numbers are not comparable)" >&2
  sim_cpu=(); load_cpu=()
fi

workdir="$(mktemp -d)"
sim_pid=""
cleanup() {
  if [[ -n "$sim_pid" ]]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
  rm -rf "$workdir"
}
trap cleanup EXIT

"${sim_cpu[@]}" "$sim_bin" --pods "$pods" --base-port 0 --time-scale "$time_scale" \
  --max-running-seqs "$max_running_seqs" > "$workdir/sim.out" 2> "$workdir/sim.err" &
sim_pid=$!
for _ in $(seq 1 100); do
  [[ "$(grep -c 'listening on' "$workdir/sim.out" || true)" -ge "$pods" ]] && break
  sleep 0.05
done
targets="$(awk '/listening on/ {print $NF}' "$workdir/sim.out" | paste -sd, -)"
[[ -n "$targets" ]] || { echo "bench-sim: the simulator did not start" >&2; cat "$workdir/sim.err" >&2; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$sim_pid/stat"; }
ticks_before=$(cpu_ticks)
started=$(date +%s.%N)
"${load_cpu[@]}" "$load_bin" --targets "$targets" --concurrency "$concurrency" --duration "$duration" \
  --max-tokens "$max_tokens" --prompt-words "$prompt_words" | tee "$workdir/load.out"
elapsed=$(echo "$(date +%s.%N) - $started" | bc)
ticks_after=$(cpu_ticks)
# The engines' own view of inter-token latency; the driver's mean ITL exceeds it when delivery
# (the simulator's HTTP side or the driver) cannot keep up with the modelled pods.
itl_sum=0; itl_count=0
for target in ${targets//,/ }; do
  read -r s c < <(curl -s "http://$target/metrics" | awk '/^vllm:inter_token_latency_seconds_sum/ {s=$2} /^vllm:inter_token_latency_seconds_count/ {c=$2} END {print s+0, c+0}')
  itl_sum=$(echo "$itl_sum + $s" | bc -l); itl_count=$(echo "$itl_count + $c" | bc)
done
engine_itl_ms="?"
[[ "$itl_count" != 0 ]] && engine_itl_ms=$(echo "scale=2; 1000 * $itl_sum / $itl_count" | bc -l)
sim_cpu_seconds=$(echo "scale=3; ($ticks_after - $ticks_before) / $(getconf CLK_TCK)" | bc)
sim_cpu_pct=$(echo "scale=1; 100 * $sim_cpu_seconds / $elapsed" | bc)
tokens=$(sed -n 's/.*summary.* tokens=\([0-9]*\).*/\1/p' "$workdir/load.out")
us_per_token=$(echo "scale=2; 1000000 * $sim_cpu_seconds / $tokens" | bc)
one_core_capacity=$(echo "scale=0; 1000000 / $us_per_token" | bc)
driver_ticks=$(sed -n 's/.*driver_cpu_ticks=\([0-9]*\).*/\1/p' "$workdir/load.out")
driver_cpu_pct=$(echo "scale=1; 100 * $driver_ticks / $(getconf CLK_TCK) / $elapsed" | bc)

echo "bench-sim: pods=$pods concurrency=$concurrency time_scale=$time_scale max_running_seqs=$max_running_seqs \
max_tokens=$max_tokens prompt_words=$prompt_words"
echo "bench-sim: $(grep 'load: summary' "$workdir/load.out" | sed 's/^load: summary //')"
echo "bench-sim: simulator CPU ${sim_cpu_pct}% of one core over ${elapsed%.*} s: ${us_per_token} us of CPU per streamed token (one core could stream ~${one_core_capacity} tokens/s)"
echo "bench-sim: engines' mean ITL ${engine_itl_ms} ms (modelled pods, real time) vs the driver's $(sed -n 's/.*mean_itl_ms=\([0-9.]*\).*/\1/p' "$workdir/load.out") ms"
echo "bench-sim: load driver CPU ${driver_cpu_pct}% of one core (at 100% the driver, not the simulator, limits the numbers)"
