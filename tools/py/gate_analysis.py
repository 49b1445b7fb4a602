#!/usr/bin/env python3
"""Offline check of a confidence-gated exact fallback (docs/CACHE.md "Confidence-gated exact
fallback") from `attncache eval --items FILE` dumps: for each recheck margin m, the share f of
the stream whose cached answer is served with a decision margin (top-1 minus top-2 class
probability) under m and would be recomputed exactly, and the accuracy change once those answers
are the exact ones. The estimated end-to-end speed is 1 / (1/s + f), s the cached run's
end-to-end speedup (a rechecked input costs one exact forward more).

  gate_analysis.py ITEMS.tsv [--speedup S] [--margins 0.05,0.1,...]
  gate_analysis.py --choose CALIB.tsv --apply HELD.tsv [--speedup S] [--max-loss 0.5]
  gate_analysis.py --choose HELD.tsv --split HALVES.txt [--speedup S] [--max-loss 0.5]

--choose picks the smallest m whose gated accuracy change on CALIB is >= -max-loss (a stricter
--max-loss leaves room for noise), and reports it on HELD (where nothing was chosen). With
--split (one line per item of HELD: A or B), it chooses on half A and reports on half B, then the
other way round.
"""
from __future__ import annotations

import argparse
import csv

import numpy as np


def load(path: str) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    d = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    z = d["cache_out1"] - d["cache_out0"]
    d["margin"] = np.abs(np.tanh(z / 2))  # |p1 - p0| of the softmax of the two outputs
    return d


def gated(d: dict[str, np.ndarray], m: float) -> tuple[float, float, int]:
    """(f, accuracy change in points, answers still changed) at margin m."""
    redo = (d["hit"] > 0) & (d["margin"] < m)
    pred = np.where(redo, d["exact_pred"], d["cache_pred"])
    n = len(pred)
    change = 100.0 * (np.sum(pred == d["label"]) - np.sum(d["exact_pred"] == d["label"])) / n
    return float(np.mean(redo)), float(change), int(np.sum(pred != d["exact_pred"]))


def subset(d: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[keep] for k, v in d.items()}


def choose(c, h, name_c, name_h, max_loss, speedup):
    fine = sorted(set(np.round(np.arange(0, 1.0001, 0.005), 3)))
    pick = next((m for m in fine if gated(c, m)[1] >= -max_loss), None)
    if pick is None:
        print(f"no margin keeps the loss within {max_loss} on {name_c}")
        return
    fc, cc, _ = gated(c, pick)
    fh, chh, kh = gated(h, pick)
    sp = f", est. {1 / (1 / speedup + fh):.3f}x" if speedup else ""
    print(f"chosen on {name_c}: m = {pick} (f {100 * fc:.1f}%, change {cc:+.2f}); "
          f"on {name_h}: f {100 * fh:.1f}%, change {chh:+.2f}, {kh} answers still changed{sp}")


def table(d, margins, s):
    print(f"  {'m':>6} {'f':>7} {'change':>8} {'changed':>8} {'est. speed':>10}")
    for m in margins:
        f, c, k = gated(d, m)
        sp = f"{1 / (1 / s + f):.3f}x" if s else "-"
        print(f"  {m:6.3f} {100 * f:6.1f}% {c:+8.2f} {k:8d} {sp:>10}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("items", nargs="?")
    ap.add_argument("--choose")
    ap.add_argument("--apply")
    ap.add_argument("--split")
    ap.add_argument("--speedup", type=float, default=0.0)
    ap.add_argument("--max-loss", type=float, default=0.5)
    ap.add_argument("--margins", default="0,0.02,0.05,0.1,0.15,0.2,0.25,0.3,0.4,0.5,0.6")
    a = ap.parse_args()
    margins = [float(x) for x in a.margins.split(",")]
    if a.items:
        d = load(a.items)
        n = len(d["label"])
        print(f"{a.items}: {n} items, exact accuracy {100 * np.mean(d['exact_pred'] == d['label']):.2f}, "
              f"cached {100 * np.mean(d['cache_pred'] == d['label']):.2f}, hits {100 * np.mean(d['hit']):.1f}%")
        ch = d["cache_pred"] != d["exact_pred"]
        ez = np.abs(np.tanh((d["exact_out1"] - d["exact_out0"]) / 2))
        print(f"  changed answers: {int(ch.sum())}; their cached margin: median {np.median(d['margin'][ch]):.3f}, "
              f"their exact margin: median {np.median(ez[ch]):.3f}; unchanged: median cached margin "
              f"{np.median(d['margin'][~ch]):.3f}")
        table(d, margins, a.speedup)
    if a.choose and a.split:
        d = load(a.choose)
        half = np.array([ln.strip() for ln in open(a.split) if ln.strip()])
        if len(half) != len(d["label"]):
            raise SystemExit(f"{a.split}: {len(half)} lines for {len(d['label'])} items")
        for x, y in (("A", "B"), ("B", "A")):
            choose(subset(d, half == x), subset(d, half == y), f"half {x}", f"half {y}", a.max_loss, a.speedup)
    elif a.choose:
        choose(load(a.choose), load(a.apply), a.choose, a.apply, a.max_loss, a.speedup)


if __name__ == "__main__":
    main()
