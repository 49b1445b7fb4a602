# Emulates k_flash<HD, NW, MT, PFX>'s index math (blocks, rows, key tiles, sources, masks, online
# softmax per tile) in numpy, against a plain reference. Mirrors the kernel's integer expressions.
import numpy as np
rng = np.random.default_rng(1)
BN = 64
def kernel(Q, K, V, KP, VP, cu, cp, H, Hkv, HD, NW, MT, causal, pfx):
    BM = 16 * NW * MT
    n_seq = len(cu) - 1
    Lq = max(cu[s+1]-cu[s] for s in range(n_seq))
    O = np.full((Q.shape[0], H*HD), np.nan)
    gridx = (Lq + BM - 1) // BM
    for s in range(n_seq):
        for h in range(H):
            g = h // (H // Hkv)
            start = cu[s]; n = cu[s+1] - start
            P = cp[s+1] - cp[s] if pfx else 0
            L = P + n
            for bx in range(gridx):
                q0 = (gridx - 1 - bx) * BM
                if q0 >= n: continue
                for warp in range(NW):
                    wrow = q0 + warp * 16 * MT
                    rows = [wrow + mt*16 + r for mt in range(MT) for r in range(16)]
                    kv_end = min(L, P + q0 + BM) if causal else L
                    n_tiles = (kv_end + BN - 1) // BN
                    m = {r: -np.inf for r in rows}; l = {r: 0.0 for r in rows}; o = {r: np.zeros(HD) for r in rows}
                    for t in range(n_tiles):
                        j0 = t * BN
                        ks = np.zeros((BN, HD)); vs = np.zeros((BN, HD))
                        for r in range(BN):
                            key = j0 + r; ok = key < L
                            if pfx and key < P:
                                ks[r] = KP[cp[s] + key, g*HD:(g+1)*HD]; vs[r] = VP[cp[s] + key, g*HD:(g+1)*HD]
                            else:
                                off = (key - P) if ok else 0
                                if ok:
                                    ks[r] = K[start + off, g*HD:(g+1)*HD]; vs[r] = V[start + off, g*HD:(g+1)*HD]
                                # (not ok: src-size 0 -> zeros)
                        need_mask = j0 + BN > L or (causal and j0 + BN - 1 > P + wrow)
                        for r in rows:
                            qv = Q[start + r, h*HD:(h+1)*HD] if r < n else np.zeros(HD)
                            sc = ks @ qv / np.sqrt(HD)
                            if need_mask:
                                for c in range(BN):
                                    key = j0 + c; pos = P + r
                                    if key >= L or (causal and key > pos): sc[c] = -np.inf
                            mx = max(m[r], sc.max())
                            b = 0.0 if mx == -np.inf else mx
                            a = np.exp(m[r] - b)
                            m[r] = mx; l[r] *= a; o[r] *= a
                            p = np.exp(sc - b)
                            l[r] += p.sum(); o[r] += p @ vs
                    for r in rows:
                        if r < n: O[start + r, h*HD:(h+1)*HD] = o[r] / l[r] if l[r] > 0 else 0
    return O

def ref(Q, K, V, KP, VP, cu, cp, H, Hkv, HD, causal):
    O = np.zeros((Q.shape[0], H*HD))
    for s in range(len(cu)-1):
        st = cu[s]; n = cu[s+1]-st; P = cp[s+1]-cp[s]
        Kf = np.concatenate([KP[cp[s]:cp[s]+P], K[st:st+n]]); Vf = np.concatenate([VP[cp[s]:cp[s]+P], V[st:st+n]])
        for h in range(H):
            g = h // (H // Hkv)
            for i in range(n):
                nk = P + i + 1 if causal else P + n
                sc = Kf[:nk, g*HD:(g+1)*HD] @ Q[st+i, h*HD:(h+1)*HD] / np.sqrt(HD)
                p = np.exp(sc - sc.max()); p /= p.sum()
                O[st+i, h*HD:(h+1)*HD] = p @ Vf[:nk, g*HD:(g+1)*HD]
    return O

for (NW, MT) in [(4,1),(8,1),(4,2)]:
    for causal in (1, 0):
        H, Hkv, HD = 4, 2, 8
        Ps = [0, 130, 37, 129, 64, 5]; ns = [70, 1, 150, 1, 64, 200]
        cu = np.concatenate([[0], np.cumsum(ns)]); cp = np.concatenate([[0], np.cumsum(Ps)])
        T = cu[-1]; PT = cp[-1]
        Q = rng.standard_normal((T, H*HD)); K = rng.standard_normal((T, Hkv*HD)); V = rng.standard_normal((T, Hkv*HD))
        KP = rng.standard_normal((PT, Hkv*HD)); VP = rng.standard_normal((PT, Hkv*HD))
        got = kernel(Q, K, V, KP, VP, cu, cp, H, Hkv, HD, NW, MT, causal, True)
        want = ref(Q, K, V, KP, VP, cu, cp, H, Hkv, HD, causal)
        assert not np.isnan(got).any()
        print(NW, MT, causal, "max abs err", np.abs(got - want).max())
        # no prefix: pfx=False equals ref with zero prefixes
        cp0 = np.zeros_like(cp)
        got0 = kernel(Q, K, V, KP, VP, cu, cp0, H, Hkv, HD, NW, MT, causal, False)
        want0 = ref(Q, K, V, KP, VP, cu, cp0, H, Hkv, HD, causal)
        print("   no prefix: max abs err", np.abs(got0 - want0).max())
