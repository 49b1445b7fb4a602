#!/usr/bin/env python3
"""av_layout_sim.py — host simulation of the index logic of the A.V v3 kernels
(src/backends/cuda/cuda_codec_av.cu), checked against a plain product, for
review without a GPU: k_av_q8_mma's permuted k slots, shared-memory slot
swizzle, 4-byte (q8) and 2-byte (q4) row reads and the mma.sync m16n8k16 / ldmatrix.trans fragment
layouts (as the PTX ISA defines them); k_av_smem's pair mapping, key tiles and
entry compaction. It simulates the arithmetic only (no timing, no races): the
GPU tests (test_cuda_cache) are the real check. Needs numpy.
usage: python3 tests/gpu/av_layout_sim.py   (exit 1 on a mismatch)"""
import numpy as np, struct, sys
from av_sim_blocks import mma_warps, pair_blocks, pair_row, topk_row_offset
rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 1)

Q4 = False  # set per run: q4 rows (nibbles, low first) instead of q8 bytes

def row_offset_q8(L, t, causal):
    T = t
    if Q4:
        return 4 * T + (T + 1) * (T + 1) // 4 if causal else t * (4 + (L + 1) // 2)
    return 4 * T + T * (T + 1) // 2 if causal else t * (4 + L)

def make_maps(L, H, causal):
    mb = (row_offset_q8(L, L, causal) + 63) // 64 * 64
    buf = bytearray(mb * H)
    P = np.zeros((H, L, L))
    for h in range(H):
        for t in range(L):
            n = t + 1 if causal else L
            off = h * mb + row_offset_q8(L, t, causal)
            sc = np.float32(rng.random() * 0.01 + 1e-3)
            buf[off:off + 4] = struct.pack('<f', sc)
            if Q4:
                q = rng.integers(0, 16, n)
                nb = (n + 1) // 2
                packed = np.zeros(nb, dtype=np.uint8)
                for j in range(n): packed[j // 2] |= q[j] << (4 * (j & 1))
                if n & 1: packed[nb - 1] |= rng.integers(0, 16) << 4  # padding nibble: must be ignored
                buf[off + 4:off + 4 + nb] = bytes(packed)
            else:
                q = rng.integers(0, 256, n)
                buf[off + 4:off + 4 + n] = bytes(q.astype(np.uint8))
            P[h, t, :n] = q * float(sc)
    return buf, mb, P

def ld4n(buf, p, key, n):
    if key + 4 <= n:
        a = p + key // 2
        w = a & ~3
        sh = (a & 3) * 8
        lo = int.from_bytes(buf[w:w + 4], 'little')
        if sh <= 16: return (lo >> sh) & 0xffff
        hi = int.from_bytes(buf[w + 4:w + 8], 'little')
        return ((hi << 32 | lo) >> sh) & 0xffff
    r = 0
    for i in range(4):
        if key + i < n:
            b = buf[p + (key + i) // 2]
            r |= ((b >> 4) if i & 1 else (b & 15)) << (4 * i)
    return r

def ld4(buf, p, key, n):
    if key + 4 <= n:
        a = p + key
        w = a & ~3
        sh = (a & 3) * 8
        lo = int.from_bytes(buf[w:w + 4], 'little')
        if not sh: return lo
        hi = int.from_bytes(buf[w + 4:w + 8], 'little')
        return ((hi << 32 | lo) >> sh) & 0xffffffff
    r = 0
    for b in range(4):
        if key + b < n: r |= buf[p + key + b] << (8 * b)
    return r

def q8_slot(j):
    return (j & ~15) | ((j >> 1) & 1) << 3 | ((j >> 3) & 1) << 2 | ((j >> 2) & 1) << 1 | (j & 1)

def bf16(x):
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7fff + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32)

def sim(L, rows, H, Hkv, HD, causal):
    buf, mb, P = make_maps(L, H, causal)
    V = bf16(rng.standard_normal((L, Hkv * HD)).astype(np.float32))
    O = np.full((L, H * HD), np.nan)
    G = H // Hkv; BN = 64
    for g, h, t0, n_tiles, w_end in mma_warps(L, rows, H, Hkv, causal):
        o = np.zeros((16, HD))
        lanes = []
        for lane in range(32):
            gr, tq = lane >> 2, lane & 3
            rA = t0 + gr; rB = rA + 8
            def rowinfo(r):
                if r < rows:
                    rw = h * mb + row_offset_q8(L, r, causal)
                    return rw + 4, (r + 1 if causal else L), struct.unpack('<f', buf[rw:rw + 4])[0]
                return 0, 0, 0.0
            lanes.append((gr, tq, rA, rB, rowinfo(rA), rowinfo(rB)))
        for t in range(n_tiles):
            if t * BN >= w_end: continue
            Vs = np.zeros((BN, HD))
            for r in range(BN):
                if t * BN + r < L: Vs[q8_slot(r)] = V[t * BN + r, g * HD:(g + 1) * HD]
            for ks in range(BN // 16):
                A = np.full((16, 16), np.nan)
                for (gr, tq, rA, rB, ia, ib) in lanes:
                    key = t * BN + ks * 16 + 4 * tq
                    if Q4:
                        xa = ld4n(buf, ia[0], key, ia[1]); xb = ld4n(buf, ib[0], key, ib[1])
                        by = lambda x, i: (x >> (4 * i)) & 15
                    else:
                        xa = ld4(buf, ia[0], key, ia[1]); xb = ld4(buf, ib[0], key, ib[1])
                        by = lambda x, i: (x >> (8 * i)) & 255
                    A[gr, 2 * tq], A[gr, 2 * tq + 1] = by(xa, 0), by(xa, 1)      # a0
                    A[gr + 8, 2 * tq], A[gr + 8, 2 * tq + 1] = by(xb, 0), by(xb, 1)  # a1
                    A[gr, 2 * tq + 8], A[gr, 2 * tq + 9] = by(xa, 2), by(xa, 3)  # a2
                    A[gr + 8, 2 * tq + 8], A[gr + 8, 2 * tq + 9] = by(xb, 2), by(xb, 3)  # a3
                for db in range(HD // 16):
                    M = [[None] * 8 for _ in range(4)]
                    for lane in range(32):
                        slot = ks * 16 + (lane & 7) + (((lane >> 3) & 1) << 3)
                        col = db * 16 + ((lane >> 4) << 3)
                        M[lane >> 3][lane & 7] = Vs[slot, col:col + 8]
                    Mm = [np.array(m) for m in M]  # each 8x8: [row r][col c]
                    # trans: thread T gets Mm[2(T%4)+i][T/4] -> b frag B[k=2tq+i][n=gr]
                    for nt, (m0, m1) in enumerate(((0, 1), (2, 3))):
                        B = np.zeros((16, 8))
                        for T in range(32):
                            gr, tq = T >> 2, T & 3
                            for i in range(2):
                                B[2 * tq + i, gr] = Mm[m0][2 * tq + i][gr]
                                B[8 + 2 * tq + i, gr] = Mm[m1][2 * tq + i][gr]
                        o[:, (2 * db + nt) * 8:(2 * db + nt + 1) * 8] += A @ B
        for (gr, tq, rA, rB, ia, ib) in lanes:
            for i in range(HD // 8):
                c = h * HD + i * 8 + 2 * tq
                if rA < rows: O[rA, c:c + 2] = o[gr, i * 8 + 2 * tq:i * 8 + 2 * tq + 2] * ia[2]
                if rB < rows: O[rB, c:c + 2] = o[gr + 8, i * 8 + 2 * tq:i * 8 + 2 * tq + 2] * ib[2]
    ref = np.zeros((rows, H * HD))
    for h in range(H):
        g = h // G
        ref[:, h * HD:(h + 1) * HD] = P[h, :rows] @ V[:, g * HD:(g + 1) * HD]
    got = O[:rows]
    e = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    print(f"{'q4' if Q4 else 'q8'} L {L} rows {rows} H {H}/{Hkv} hd {HD} causal {causal}: rel err {e:.3g}, nan {np.isnan(got).sum()}")
    return e

ok_q8 = True
for args in [(77, 77, 8, 2, 32, True), (77, 50, 8, 2, 32, True), (130, 130, 4, 4, 16 * 2, False), (70, 70, 2, 1, 64, True), (200, 200, 8, 2, 32, False)]:
    for Q4 in (False, True):
        ok_q8 &= sim(*args) < 1e-9


# ---- k_av_smem ----
def sim_smem(L, rows, H, Hkv, HD, causal, k, KT, NW, PW, PB, damage=False):
    mb = (topk_row_offset(causal, k, L, L) + 63) // 64 * 64
    buf = bytearray(mb * H); P = np.zeros((H, L, L))
    for h in range(H):
        for t in range(L):
            n_t = t + 1 if causal else L; n = min(n_t, k)
            off = h * mb + topk_row_offset(causal, k, L, t)
            idx = rng.choice(n_t, n, replace=False)
            w = np.float16(rng.random(n))
            if damage: idx[0] = 0xffff
            for j in range(n):
                buf[off + 2 * j:off + 2 * j + 2] = struct.pack('<H', int(idx[j]))
                buf[off + 2 * n + 2 * j:off + 2 * n + 2 * j + 2] = w[j].tobytes()
                if idx[j] < n_t: P[h, t, idx[j]] += float(w[j])
    V = rng.standard_normal((L, Hkv * HD))
    O = np.full((L, H * HD), np.nan); G = H // Hkv
    for g, qb0, qb1, kend in pair_blocks(L, rows, G, Hkv, PB, causal, False):
        ntiles = (kend + KT - 1) // KT
        for qa in range(qb0, qb1, NW * PW):
            acc = {}
            for tile in range(ntiles):
                k0 = tile * KT; k1 = min(kend, k0 + KT)
                sv = V[k0:k1, g * HD:(g + 1) * HD]
                for i in range(PW):
                    for warp in range(NW):
                        pq = qa + i * NW + warp
                        if pq >= qb1: continue
                        t, h, row, n_t, n = pair_row(pq, g, G, mb, causal, k, L)
                        a = acc.setdefault(pq, np.zeros(HD))
                        for j0 in range(0, n, 32):
                            ent = []
                            for lane in range(32):
                                key, w = 0, 0.0
                                if j0 + lane < n:
                                    j = j0 + lane
                                    ix = struct.unpack('<H', buf[row + 2 * j:row + 2 * j + 2])[0]
                                    ww = float(np.frombuffer(buf[row + 2 * n + 2 * j:row + 2 * n + 2 * j + 2], np.float16)[0])
                                    key, w = (ix, ww) if ix < n_t else (0, 0.0)
                                inn = j0 + lane < n and k0 <= key < k1 and w != 0.0
                                if inn: ent.append((key - k0, w))
                            m = len(ent)
                            ent += [(0, 0.0)] * (32 - m)
                            for jj in range(0, m, 8):
                                for u in range(8):
                                    kk, ww = ent[jj + u]
                                    a += ww * sv[kk]
            for pq, a in acc.items():
                t, h = pq // G, g * G + pq % G
                O[t, h * HD:(h + 1) * HD] = a
    ref = np.zeros((rows, H * HD))
    for h in range(H):
        ref[:, h * HD:(h + 1) * HD] = P[h, :rows] @ V[:, (h // G) * HD:(h // G + 1) * HD]
    e = np.linalg.norm(O[:rows] - ref) / np.linalg.norm(ref)
    print(f"L {L} rows {rows} H {H}/{Hkv} causal {causal} k {k} KT {KT}: rel err {e:.3g} nan {np.isnan(O[:rows]).sum()}")
    return e < 1e-12
ok = ok_q8
ok &= sim_smem(90, 90, 4, 1, 8, True, 8, 32, 4, 2, 16)
ok &= sim_smem(90, 60, 8, 2, 8, True, 40, 37, 4, 2, 24)
ok &= sim_smem(70, 70, 6, 2, 8, False, 33, 20, 2, 3, 13, damage=True)
ok &= sim_smem(50, 50, 2, 2, 8, True, 64, 64, 4, 4, 64)
print("OK" if ok else "MISMATCH")
sys.exit(0 if ok else 1)

