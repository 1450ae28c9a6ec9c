#!/usr/bin/env bash
# Scheduler benchmarks (`make bench-scheduler`):
#   1. criterion: mean time of one decision and of its parts, with confidence intervals;
#   2. the percentile report: p50/p99 of single decisions (seed-like 10 KB prompt over 16 pods
#      and a 1,000,000-block index, 220 KB prompts, 8 threads contending), index memory at the
#      reference configuration, and decision time against pod count and prompt size. It writes
#      target/bench/scheduler.json and prints the table as markdown;
#   3. decisions that include tokenization (prompt-tokenizer's bench: 10 KB completion and chat
#      requests, warm chunk cache, block keys, the default decision; whole-prompt tokenizing
#      without the cache), merged into the same scheduler.json (tokenized_* keys).
# Options: --quick (a tenth of the samples, shorter criterion runs), --report-only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

quick=0
criterion=1
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --report-only) criterion=0 ;;
    *) echo "usage: $0 [--quick] [--report-only]" >&2; exit 2 ;;
  esac
done

target="${CARGO_TARGET_DIR:-$root/target}"
out="$target/bench/scheduler.json"
mkdir -p "$(dirname "$out")"

if [[ $criterion == 1 ]]; then
  measure=5
  [[ $quick == 1 ]] && measure=2
  cargo bench --quiet -p scheduler --bench decision -- --warm-up-time 1 --measurement-time "$measure" \
    2>&1 | grep -E '^decision/|time:|thrpt:' || true
fi

SCHEDULER_BENCH_QUICK=$quick SCHEDULER_BENCH_JSON="$out" cargo bench --quiet -p scheduler --bench report
SCHEDULER_BENCH_QUICK=$quick SCHEDULER_BENCH_JSON="$out" cargo bench --quiet -p prompt-tokenizer --bench decision
