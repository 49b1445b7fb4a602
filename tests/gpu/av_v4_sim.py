#!/usr/bin/env python3
"""av_v4_sim.py — host simulation of the index logic of the A.V v4 top-k kernels (k_av_topk and
k_av_topk_mma in src/backends/cuda/cuda_codec_av.cu, variants 4, 5), checked against a plain
product, for review
without a GPU: the pair mapping of a block (the row/head carry of pair p + NW), the 4-byte-word
reads of keys and weights (and the byte path for maps that are not 4-byte aligned), damaged keys
and zero weights dropped, the reversed block order, the ballot compaction in stored order and the
walk 8 then 4 entries at a time (the last group's slots past the list not read); for the tensor-core kernel the rows' copy into scratch and the entries read there,
repeated keys summed, bf16 weights, the per-warp P tile of each 64-key tile and the ldmatrix /
ldmatrix.trans / mma.sync m16n8k16 fragment layouts as the PTX ISA defines them. Arithmetic only (no
timing, no races): test_cuda_cache on a GPU is the real check.
Needs numpy. usage: python3 tests/gpu/av_v4_sim.py [seed]   (exit 1 on a mismatch)"""
import numpy as np, struct, sys
from av_sim_blocks import mma_warps, pair_blocks, pair_row, topk_row_offset
rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 1)

def make_maps(L, H, causal, k, damage):
    mb = (topk_row_offset(causal, k, L, L) + 63) // 64 * 64
    buf = bytearray(mb * H)
    P = np.zeros((H, L, L))
    for h in range(H):
        for t in range(L):
            nt = t + 1 if causal else L
            n = min(nt, k)
            keys = np.sort(rng.choice(nt, n, replace=False))
            w = rng.random(n).astype(np.float16)
            if n > 2: w[rng.integers(0, n)] = 0  # a zero weight: dropped
            off = h * mb + topk_row_offset(causal, k, L, t)
            for j in range(n):
                buf[off + 2 * j:off + 2 * j + 2] = struct.pack('<H', int(keys[j]))
                buf[off + 2 * n + 2 * j:off + 2 * n + 2 * j + 2] = w[j].tobytes()
            if damage == 1: buf[off:off + 2] = b'\xff\xff'  # first key past the row: ignored
            if damage == 2 and n >= 2: buf[off + 2:off + 4] = buf[off:off + 2]  # key 0 twice: weights add
            for j in range(n):
                key = struct.unpack('<H', buf[off + 2 * j:off + 2 * j + 2])[0]
                if key < nt: P[h, t, key] += float(w[j])
    return buf, mb, P

def u16(buf, a): return struct.unpack('<H', buf[a:a + 2])[0]
def u32(buf, a): return struct.unpack('<I', buf[a:a + 4])[0]

def f16(bits): return float(np.frombuffer(struct.pack('<H', bits), dtype=np.float16)[0])

def sim(L, H, Hkv, HD, causal, k, NW, PW, aligned, damage):
    G = H // Hkv
    buf, mb, P = make_maps(L, H, causal, k, damage)
    V = rng.standard_normal((L, Hkv * HD))
    O = np.full((L, H * HD), np.nan)
    PB = NW * PW
    rows = L
    for g, qb0, qb1, kend in pair_blocks(L, rows, G, Hkv, PB, causal, True):
        Vg = V[:, g * HD:(g + 1) * HD]
        ent = np.zeros((NW, PW, 32), dtype=np.uint64)
        for warp in range(NW):
            if aligned:
                dt, dh = NW // G, NW % G
                t0, hh0 = (qb0 + warp) // G, (qb0 + warp) % G
                for lane in range(32):
                    t, hh = t0, hh0
                    for i in range(PW):
                        if i:
                            carry = 1 if hh + dh >= G else 0
                            t += dt + carry; hh += dh - (G if carry else 0)
                        tc = min(t, (qb1 - 1) // G)
                        row = (g * G + hh) * mb + topk_row_offset(causal, k, L, tc)
                        nt = tc + 1 if causal else L
                        n = min(nt, k); j = min(lane, n - 1)
                        kw = u32(buf, row + 4 * (j >> 1)); ww = u32(buf, row + 4 * ((n + j) >> 1))
                        key = kw >> 16 if j & 1 else kw & 0xffff
                        w = ww >> 16 if (n + j) & 1 else ww & 0xffff
                        pq = qb0 + i * NW + warp
                        assert pq >= qb1 or (t == pq // G and hh == pq % G), "pair mapping"
                        ent[warp, i, lane] = key | w << 16 if (pq < qb1 and lane < n and key < nt) else 0
            else:
                for i in range(PW):
                    pq = qb0 + i * NW + warp
                    if pq >= qb1: continue
                    t, h, row, nt, n = pair_row(pq, g, G, mb, causal, k, L)
                    for lane in range(n):
                        key = u16(buf, row + 2 * lane); w = u16(buf, row + 2 * n + 2 * lane)
                        ent[warp, i, lane] = key | w << 16 if key < nt else 0
        acc = np.zeros((NW, PW, HD))
        for warp in range(NW):
            for i in range(PW):
                e = ent[warp, i]
                key = (e & 0xffff).astype(np.int64)
                inn = (key < kend) & ((e & 0x7fff0000) != 0)
                m = int(inn.sum())
                if m == 0: continue
                lst = [(int(key[l]), f16(int(e[l]) >> 16)) for l in range(32) if inn[l]]
                jj = 0
                while jj + 8 <= m:
                    for u in range(8): acc[warp, i] += lst[jj + u][1] * Vg[lst[jj + u][0]]
                    jj += 8
                while jj < m:
                    for u in range(4):
                        if jj + u < m: acc[warp, i] += lst[jj + u][1] * Vg[lst[jj + u][0]]
                    jj += 4
        for warp in range(NW):
            for i in range(PW):
                pq = qb0 + i * NW + warp
                if pq >= qb1: continue
                t, h = pq // G, g * G + pq % G
                O[t, h * HD:(h + 1) * HD] = acc[warp, i]
    ref = np.zeros_like(O)
    for h in range(H):
        g = h // G
        ref[:, h * HD:(h + 1) * HD] = P[h] @ V[:, g * HD:(g + 1) * HD]
    err = np.abs(O - ref).max() / max(np.abs(ref).max(), 1e-30)
    return err


def bf16r(x):
    """round a float to bf16 (nearest even), as __float2bfloat16_rn"""
    b = np.array([x], dtype=np.float32).view(np.uint32)[0]
    if (b & 0x7f800000) == 0x7f800000: return float(np.array([b & 0xffff0000], dtype=np.uint32).view(np.float32)[0])
    b = (int(b) + 0x7fff + ((int(b) >> 16) & 1)) & 0xffff0000
    return float(np.array([b], dtype=np.uint32).view(np.float32)[0])

def ldsm_x4(mem, addr):
    """ldmatrix .x4 (no trans): addr[lane] = (row, col) of the 8-element row lane supplies; returns regs[lane][4][2]"""
    regs = np.zeros((32, 4, 2))
    for T in range(32):
        gr, tq = T >> 2, T & 3
        for i in range(4):
            r, c = addr[8 * i + gr]
            regs[T, i] = mem[r, c + 2 * tq], mem[r, c + 2 * tq + 1]
    return regs

def ldsm_x4_t(mem, addr):
    regs = np.zeros((32, 4, 2))
    for T in range(32):
        gr, tq = T >> 2, T & 3
        for i in range(4):
            r0, c0 = addr[8 * i + 2 * tq]; r1, c1 = addr[8 * i + 2 * tq + 1]
            regs[T, i] = mem[r0, c0 + gr], mem[r1, c1 + gr]
    return regs

def mma16816(o, a, b):
    """o[32][4] += A B with A from a[32][4][2], B from b[32][2][2], per the PTX m16n8k16 layouts"""
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for T in range(32):
        gr, tq = T >> 2, T & 3
        A[gr, 2 * tq:2 * tq + 2] = a[T, 0]; A[gr + 8, 2 * tq:2 * tq + 2] = a[T, 1]
        A[gr, 2 * tq + 8:2 * tq + 10] = a[T, 2]; A[gr + 8, 2 * tq + 8:2 * tq + 10] = a[T, 3]
        B[2 * tq:2 * tq + 2, gr] = b[T, 0]; B[2 * tq + 8:2 * tq + 10, gr] = b[T, 1]
    C = A @ B
    for T in range(32):
        gr, tq = T >> 2, T & 3
        o[T] += [C[gr, 2 * tq], C[gr, 2 * tq + 1], C[gr + 8, 2 * tq], C[gr + 8, 2 * tq + 1]]

def sim_mma(L, H, Hkv, HD, causal, k, aligned, damage, MT=2):
    """k_av_topk_mma: rows copied to scratch, entries per lane, repeated keys summed, bf16 weights, per
    64-key tile the warp's zeroed P tile, ldmatrix A / ldmatrix.trans B, mma, the output layout"""
    G = H // Hkv
    buf, mb, P = make_maps(L, H, causal, k, damage)
    V = rng.standard_normal((L, Hkv * HD))
    O = np.full((L, H * HD), np.nan)
    BN, LDS, LDP, DT = 64, HD + 8, 72, HD // 8
    rows = L
    Pr = np.zeros_like(P)  # the reference with bf16 weights (sums of repeated keys rounded once)
    for h in range(H):
        for t in range(L):
            for j in range(L):
                if P[h, t, j] != 0: Pr[h, t, j] = bf16r(P[h, t, j])
    for g, h, t0, n_tiles, w_end in mma_warps(L, rows, H, Hkv, causal, MT):
        if t0 >= rows: continue
        Vg = V[:, g * HD:(g + 1) * HD]
        # entries: scratch copy of rows t0 .. min(t0 + 15, rows - 1)
        o0 = topk_row_offset(causal, k, L, t0)
        tl = min(t0 + 15, rows - 1)
        nbytes = topk_row_offset(causal, k, L, tl + 1) - o0
        assert nbytes <= 2048 and nbytes % 4 == 0
        src = h * mb + o0
        scratch = bytes(buf[src:src + nbytes])  # word or byte copies: the same bytes
        ent = np.zeros((16, 32), dtype=np.int64)
        off = 0
        for r in range(16):
            t = t0 + r; nt = t + 1 if causal else L; n = min(nt, k)
            for lane in range(32):
                if t < rows and lane < n:
                    key = u16(scratch, off + 2 * lane); w = u16(scratch, off + 2 * n + 2 * lane)
                    ent[r, lane] = key | w << 16 if key < nt else 0
            if t < rows: off += 4 * n
        # rows whose stored keys are not strictly ascending (lane l vs l - 1, raw keys): only
        # those take the repeated-key path; an ascending row cannot hold a key twice
        unsorted = set()
        off = 0
        for r in range(16):
            t = t0 + r; nt = t + 1 if causal else L; n = min(nt, k)
            if t >= rows: continue
            raw = [u16(scratch, off + 2 * l) for l in range(n)]
            if any(raw[l] <= raw[l - 1] for l in range(1, n)): unsorted.add(r)
            off += 4 * n
        wt = np.zeros((16, 32))
        for r in range(16):  # repeated keys summed into the lowest lane, bf16
            if r not in unsorted:
                keys = [int(ent[r, l]) & 0xffff for l in range(32) if int(ent[r, l]) & 0x7fff0000]
                assert len(keys) == len(set(keys)), "an ascending row holds a key twice"
                for lane in range(32): wt[r, lane] = bf16r(f16(int(ent[r, lane]) >> 16)) if int(ent[r, lane]) & 0x7fff0000 else 0.0
                continue
            for lane in range(32):
                e = int(ent[r, lane]); valid = (e & 0x7fff0000) != 0
                if not valid: ent[r, lane] = 0; continue
                same = [l2 for l2 in range(32) if (int(ent[r, l2]) & 0x7fff0000) and (int(ent[r, l2]) & 0xffff) == (e & 0xffff)]
                sm = sum(f16(int(ent[r, l2]) >> 16) for l2 in same) if len(same) > 1 else f16(e >> 16)
                if same[0] != lane: sm = 0.0
                wt[r, lane] = bf16r(sm)
        o = np.zeros((DT, 32, 4))
        for t in range(n_tiles):
            if t * BN >= w_end: continue
            k0 = t * BN
            vs = np.zeros((BN, LDS))
            for r in range(BN):
                if k0 + r < L: vs[r, :HD] = Vg[k0 + r]
            pt = np.zeros((16, LDP))
            for r in range(16):
                for lane in range(32):
                    key = int(ent[r, lane]) & 0xffff
                    if wt[r, lane] != 0 and 0 <= key - k0 < BN: pt[r, key - k0] = wt[r, lane]
            for ks in range(BN // 16):
                a = ldsm_x4(pt, [(l & 15, ks * 16 + (l >> 4) * 8) for l in range(32)])
                for db in range(HD // 16):
                    v = ldsm_x4_t(vs, [(ks * 16 + (l & 7) + (((l >> 3) & 1) << 3), db * 16 + ((l >> 4) << 3)) for l in range(32)])
                    mma16816(o[2 * db], a, v[:, 0:2])
                    mma16816(o[2 * db + 1], a, v[:, 2:4])
        for T in range(32):
            gr, tq = T >> 2, T & 3
            rA, rB = t0 + gr, t0 + gr + 8
            for i in range(DT):
                col = h * HD + i * 8 + 2 * tq
                if rA < rows: O[rA, col:col + 2] = o[i, T, 0:2]
                if rB < rows: O[rB, col:col + 2] = o[i, T, 2:4]
    ref = np.zeros_like(O)
    for h in range(H):
        g = h // G
        ref[:, h * HD:(h + 1) * HD] = Pr[h] @ V[:, g * HD:(g + 1) * HD]
    return np.abs(O - ref).max() / max(np.abs(ref).max(), 1e-30)

def run(fn, cases, what):
    """fn(*case) for each case: the number that failed (max relative error over 1e-12), each printed"""
    failed = 0
    for c in cases:
        e = fn(*c)
        ok = e < 1e-12
        failed += not ok
        print(("ok  " if ok else "FAIL"), what % c, "max rel err %.2e" % e)
    return failed


cases = [  # L, H, Hkv, HD, causal, k, NW, PW, aligned, damage
    (37, 8, 2, 8, 1, 8, 8, 16, 1, 0),
    (90, 8, 2, 8, 1, 32, 8, 16, 1, 0),
    (90, 4, 4, 8, 0, 32, 8, 8, 1, 1),      # dense, damaged
    (70, 14, 2, 4, 1, 8, 8, 16, 1, 0),     # G 7
    (70, 16, 1, 4, 1, 8, 8, 16, 1, 1),     # G 16: no row step, head carry
    (60, 8, 2, 8, 1, 1, 8, 16, 1, 0),      # k 1
    (64, 8, 2, 8, 1, 32, 8, 16, 1, 0),
    (64, 7, 1, 8, 0, 8, 8, 16, 0, 1),      # byte path (maps not 4-byte aligned)
    (50, 8, 2, 8, 1, 32, 8, 16, 0, 0),
    (1, 8, 2, 8, 1, 8, 8, 16, 1, 0),
]
mcases = [  # L, H, Hkv, HD, causal, k, aligned, damage (2: a key repeated)
    (40, 4, 1, 16, 1, 8, 1, 0),
    (150, 8, 2, 32, 1, 32, 1, 2),    # several 64-key tiles, repeated keys
    (70, 7, 1, 16, 0, 32, 0, 1),     # dense, G 7 (two passes), byte path, damaged
    (33, 2, 2, 32, 1, 1, 1, 0),
]
fails = run(sim, cases, "L %d H %d/%d hd %d causal %d k %d NW %d PW %d aligned %d damage %d")
fails += run(sim_mma, mcases, "tensor cores: L %d H %d/%d hd %d causal %d k %d aligned %d damage %d")
print("av_v4_sim: %d of %d cases failed" % (fails, len(cases) + len(mcases)))
sys.exit(1 if fails else 0)
