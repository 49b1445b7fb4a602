#!/usr/bin/env python3
"""Offline replay of a tighter key threshold from `attncache eval --items FILE` dumps (docs/CACHE.md
"Nearer neighbours: a larger cache"): an input whose served entry lies farther than t would have
missed and run exactly, so its answer becomes the exact one. For each t: the hit share, the median
key distance of the served entries, the accuracy change, the answers changed (right -> wrong /
wrong -> right), the flips per served input, and the median shift of the classifier's logit
difference |dz| on the served inputs (how far the maps move an output, flips or not). The
estimated end-to-end speed is 1 / ((1 - h) + h / s_hit) for the run's speedup over hits s_hit
(misses cost their exact time; the lookup's own cost is left out).

  threshold_analysis.py ITEMS.tsv [--split HALVES.txt] [--thresholds 0.02,0.03,...] [--hit-speedup S]
  threshold_analysis.py --choose CALIB.tsv --apply HELD.tsv [--split HALVES.txt] [--max-loss 0.5]
                        [--hit-speedup S]

--split (one line per item: A or B) adds the change on each half. --choose picks, on CALIB, the
loosest t (most hits) whose change is >= -max-loss at t and at every tighter t of the grid, and
reports it on HELD (and its halves).
"""
from __future__ import annotations

import argparse
import csv

import numpy as np


def load(path: str) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise SystemExit(f"{path}: no items")
    for col in ("label", "exact_pred", "cache_pred", "hit", "exact_out0", "exact_out1", "cache_out0",
                "cache_out1", "distance"):
        if col not in rows[0]:
            raise SystemExit(f"{path}: no column '{col}' (not an imdb/sst2 `eval --items` file)")
    d = {}
    for k in rows[0]:
        d[k] = np.array([float(r[k]) if r[k] not in ("", "-", "nan") else np.nan for r in rows])
    d["dz"] = np.abs((d["cache_out1"] - d["cache_out0"]) - (d["exact_out1"] - d["exact_out0"]))
    return d


def at(d: dict[str, np.ndarray], t: float, keep: np.ndarray | None = None) -> dict[str, float]:
    """The stream as it would run at threshold t (t <= the run's threshold)."""
    if keep is None:
        keep = np.ones(len(d["label"]), bool)
    served = keep & (d["hit"] > 0) & (d["distance"] <= t)
    pred = np.where(served, d["cache_pred"], d["exact_pred"])[keep]
    ex, lab = d["exact_pred"][keep], d["label"][keep]
    n = int(keep.sum())
    to_wrong = int(np.sum((ex == lab) & (pred != lab)))
    to_right = int(np.sum((ex != lab) & (pred == lab)))
    ns = int(served.sum())
    return {
        "n": n, "served": ns, "h": ns / n if n else 0.0,
        "dist": float(np.median(d["distance"][served])) if ns else float("nan"),
        "change": 100.0 * (to_right - to_wrong) / n if n else 0.0,
        "to_wrong": to_wrong, "to_right": to_right,
        "flip_rate": (to_wrong + to_right) / ns if ns else 0.0,
        "dz": float(np.median(d["dz"][served])) if ns else float("nan"),
    }


def halves(path: str | None, n: int) -> np.ndarray | None:
    if not path:
        return None
    h = np.array([ln.strip() for ln in open(path) if ln.strip()])
    if len(h) != n:
        raise SystemExit(f"{path}: {len(h)} lines for {n} items")
    return h


def row(d, t, half, s_hit) -> str:
    r = at(d, t)
    sp = f" {1 / ((1 - r['h']) + r['h'] / s_hit):.3f}x" if s_hit else ""
    hv = ""
    if half is not None:
        hv = " " + " ".join(f"{at(d, t, half == x)['change']:+6.2f}" for x in ("A", "B"))
    return (f"  {t:6.3f} {100 * r['h']:6.1f}% {r['dist']:7.4f} {r['change']:+7.2f} "
            f"{r['to_wrong'] + r['to_right']:4d} ({r['to_wrong']}/{r['to_right']}) "
            f"{100 * r['flip_rate']:6.1f}% {r['dz']:6.3f}{hv}{sp}")


def grid(d) -> list[float]:
    top = float(np.nanmax(np.where(d["hit"] > 0, d["distance"], np.nan))) if np.any(d["hit"] > 0) else 0.0
    return sorted(set(np.round(np.arange(0.0, top + 0.0025, 0.0025), 4)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("items", nargs="?")
    ap.add_argument("--split")
    ap.add_argument("--thresholds", default="0.02,0.025,0.03,0.035,0.04,0.045,0.05,0.06,0.08,0.1")
    ap.add_argument("--hit-speedup", type=float, default=0.0)
    ap.add_argument("--choose")
    ap.add_argument("--apply")
    ap.add_argument("--max-loss", type=float, default=0.5)
    a = ap.parse_args()
    head = "       t   hits  median d  change  changed (->wrong/->right) flips/served median|dz|"
    if a.items:
        d = load(a.items)
        half = halves(a.split, len(d["label"]))
        print(f"{a.items}: {len(d['label'])} items, exact accuracy "
              f"{100 * np.mean(d['exact_pred'] == d['label']):.2f}")
        print(head + ("  half A  half B" if half is not None else "") + (" est. speed" if a.hit_speedup else ""))
        for t in (float(x) for x in a.thresholds.split(",")):
            print(row(d, t, half, a.hit_speedup))
        hit = d["hit"] > 0
        if hit.sum() > 2:
            rho = np.corrcoef(np.argsort(np.argsort(d["distance"][hit])), np.argsort(np.argsort(d["dz"][hit])))[0, 1]
            print(f"  Spearman correlation of key distance and |dz| over the served inputs: {rho:+.3f}")
    if a.choose:
        c, h = load(a.choose), load(a.apply)
        pick = None
        for t in grid(c):  # loosest t such that every t' <= t passes
            if at(c, t)["change"] >= -a.max_loss:
                pick = t
            else:
                break
        if pick is None:
            print(f"no threshold keeps the loss within {a.max_loss} on {a.choose}")
            return
        rc = at(c, pick)
        print(f"chosen on {a.choose}: t = {pick} (hits {100 * rc['h']:.1f}%, change {rc['change']:+.2f})")
        half = halves(a.split, len(h["label"]))
        print(head + ("  half A  half B" if half is not None else "") + (" est. speed" if a.hit_speedup else ""))
        print(row(h, pick, half, a.hit_speedup))


if __name__ == "__main__":
    main()
