#!/usr/bin/env python3
"""Draw an attention-cache threshold sweep: the JSON that `attncache eval --cache DIR
--thresholds a,b,c --json FILE` (or --plot) writes, as a PNG.

  .venv/bin/python tools/py/plot_sweep.py SWEEP.json OUT.png

Top panel: end-to-end speedup over the whole stream and over hits only, and the hit rate
(right axis), against the threshold. Bottom panel: the task metric with the cache against
the threshold, the exact metric as a dashed line. Thresholds all > 0 and spread over more
than 20x: log axis; a value <= 0 with the values more than 100 apart: evenly spaced points
labelled with the thresholds as given; otherwise a linear axis. Exit 1 with a message on bad input.
"""
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def fail(msg):
    print(f"plot_sweep: error: {msg}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) != 3:
        fail("usage: plot_sweep.py SWEEP.json OUT.png")
    try:
        with open(argv[1], encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {argv[1]}: {e}")
    rows = d.get("sweep") if isinstance(d, dict) else None
    if not rows or not isinstance(rows, list):
        fail(f"{argv[1]} has no \"sweep\" rows (eval --cache DIR --thresholds a,b,...)")
    keys = ("threshold", "hit_rate", "value", "speedup_e2e", "speedup_e2e_hits")
    for i, r in enumerate(rows):
        for k in keys:
            if not isinstance(r.get(k), (int, float)) or not math.isfinite(r[k]):
                fail(f"{argv[1]}: sweep row {i}: \"{k}\" missing or not a finite number")
    rows = sorted(rows, key=lambda r: r["threshold"])
    thr = [r["threshold"] for r in rows]
    metric = d.get("metric", "metric")
    exact = d.get("value")

    positive = all(t > 0 for t in thr)
    spread = positive and max(thr) / min(thr) > 20  # log axis
    even = not positive and max(thr) - min(thr) > 100  # e.g. -1 and 1e9: points evenly spaced
    x = list(range(len(thr))) if even else thr

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True, constrained_layout=True)
    ax1.plot(x, [r["speedup_e2e"] for r in rows], "o-", color="tab:blue", label="speedup, whole stream")
    # hits only: no point where nothing hit (eval reports 0 there)
    hits_only = [r["speedup_e2e_hits"] if r["hit_rate"] > 0 else float("nan") for r in rows]
    ax1.plot(x, hits_only, "s--", color="tab:cyan", label="speedup, hits only")
    ax1.axhline(1.0, color="grey", lw=0.8)
    ax1.set_ylabel("end-to-end speedup (x)")
    ax1.grid(alpha=0.3)
    axh = ax1.twinx()
    axh.plot(x, [100 * r["hit_rate"] for r in rows], "^:", color="tab:orange", label="hit rate")
    axh.set_ylabel("hit rate (%)")
    axh.set_ylim(-5, 105)
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = axh.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, loc="best", fontsize=8)

    ax2.plot(x, [r["value"] for r in rows], "o-", color="tab:green", label=f"{metric}, with cache")
    if isinstance(exact, (int, float)):
        ax2.axhline(exact, color="black", ls="--", lw=1, label=f"{metric}, exact ({exact:.2f})")
    ax2.set_ylabel(metric)
    ax2.grid(alpha=0.3)
    ax2.legend(loc="best", fontsize=8)
    if even:
        ax2.set_xticks(x, [f"{t:g}" for t in thr])
        ax2.set_xlabel("threshold (key distance; points evenly spaced)")
    else:
        if spread:
            ax2.set_xscale("log")
        ax2.set_xlabel("threshold (key distance)")
    task, model = d.get("task", "?"), str(d.get("model", "?")).rsplit("/", 1)[-1]
    fig.suptitle(f"attention cache sweep: {task}, {model}, n={d.get('n', '?')}")
    try:
        fig.savefig(argv[2], dpi=120)
    except OSError as e:
        fail(f"cannot write {argv[2]}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
