"""Plots for `make bench`: for each bench/results/<scenario>.json, a TTFT CDF per target
(<scenario>-ttft-cdf.png) and bars of prefix-cache hit ratio, P50 TTFT and throughput
(<scenario>-bars.png).

Usage: python bench/plot.py bench/results
"""
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def main(results_dir: pathlib.Path) -> None:
    for path in sorted(results_dir.glob("*.json")):
        doc = json.loads(path.read_text())
        if "results" not in doc:
            continue
        ran = [r for r in doc["results"] if not r.get("skipped")]
        if not ran:
            continue
        scenario = doc["scenario"]
        cdf(ran, scenario, results_dir / f"{scenario}-ttft-cdf.png")
        bars(doc["results"], scenario, results_dir / f"{scenario}-bars.png")
        print(f"plot: {scenario}: {len(ran)} targets")


def cdf(ran, scenario, out):
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in ran:
        xs = r["ttft_cdf_ms"]
        ax.plot(xs, [i / (len(xs) - 1) for i in range(len(xs))], label=r["target"],
                linestyle="-" if r["target"].startswith("module") else "--")
    ax.set_xscale("log")
    ax.set_xlabel("time to first token (ms, modelled H100)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{scenario}: TTFT CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def bars(results, scenario, out):
    names = [r["target"] for r in results]
    panels = [("hit_ratio", "prefix-cache hit ratio"), ("ttft_p50_ms", "P50 TTFT (ms)"),
              ("req_per_s", "requests / s")]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 4.8))
    for ax, (key, title) in zip(axes, panels):
        values = [0 if r.get("skipped") else (r.get(key) or 0) for r in results]
        colors = ["#1f77b4" if n.startswith("module") else "#999999" for n in names]
        ax.bar(range(len(names)), values, color=colors)
        for i, r in enumerate(results):
            label = "skipped" if r.get("skipped") else (f"{values[i]:.2f}" if key == "hit_ratio" else f"{values[i]:.0f}")
            ax.text(i, values[i], label, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set_title(title)
    fig.suptitle(scenario)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results"))
