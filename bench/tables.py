"""Markdown tables of `make bench` results: one per bench/results/<scenario>.json, printed and
written to bench/results/summary.md (standard library only).

Usage: python3 bench/tables.py bench/results
"""
import json
import pathlib
import sys

COLUMNS = [("hit_ratio", "hit ratio", "{:.3f}"), ("ttft_p50_ms", "P50 TTFT", "{:.0f}"),
           ("ttft_p95_ms", "P95 TTFT", "{:.0f}"), ("itl_p50_ms", "P50 ITL", "{:.1f}"),
           ("itl_p95_ms", "P95 ITL", "{:.1f}"), ("req_per_s", "req/s", "{:.1f}"),
           ("input_tok_per_s", "input tok/s", "{:.0f}"), ("errors", "errors", "{}"),
           ("max_pod_share", "busiest pod ÷ even share", "{:.2f}"),
           ("turns_on_session_pod", "turns on conversation's pod", "{:.3f}"),
           ("returning_first_hit_ratio", "hit of a returning burst's first", "{:.3f}"),
           ("bursts_on_one_pod", "bursts on one pod", "{:.3f}")]


def max_pod_share(r):
    per_pod = r.get("requests_per_pod") or []
    total = sum(per_pod)
    return max(per_pod) * len(per_pod) / total if total else None


def ceiling(doc):
    c = doc["setup"]["workload"].get("hit_ratio_ceiling")
    if c is None:
        cs = [r.get("multi_turn_hit_ceiling") for r in doc["results"] if r.get("multi_turn_hit_ceiling")]
        c = cs[0] if cs else None
    return "-" if c is None else f"{c:.3f}"


def table(doc):
    # Only the columns some target of this scenario has a value for.
    columns = [c for c in COLUMNS if c[0] in ("max_pod_share", "errors")
               or any(r.get(c[0]) is not None for r in doc["results"] if not r.get("skipped"))]
    lines = [f"### {doc['scenario']}", "",
             f"load average at start {doc.get('load_average_at_start')}; "
             f"{doc.get('finished_at_unix', 0) - doc.get('started_at_unix', 0)} s; "
             f"hit-ratio ceiling {ceiling(doc)}", "",
             "| target | " + " | ".join(c[1] for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for r in doc["results"]:
        if r.get("skipped"):
            reason = r["skipped"].replace("|", "/").replace("\n", " ")
            lines.append(f"| `{r['target']}` | skipped: {reason} |" + " |" * (len(columns) - 1))
            continue
        r = dict(r, max_pod_share=max_pod_share(r))
        cells = [fmt.format(r[key]) if r.get(key) is not None else "-" for key, _, fmt in columns]
        lines.append(f"| `{r['target']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(results_dir: pathlib.Path) -> None:
    parts = []
    for path in sorted(results_dir.glob("*.json")):
        doc = json.loads(path.read_text())
        if "results" in doc:
            parts.append(table(doc))
    text = "\n".join(parts)
    (results_dir / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results"))
