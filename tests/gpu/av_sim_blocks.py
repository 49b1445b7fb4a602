"""av_sim_blocks.py — what the host simulations of the A.V kernels (av_layout_sim.py, av_v4_sim.py) share:
the block and warp loop of the tensor-core kernels k_av_q8_mma and k_av_topk_mma, and the row offsets of
top-k maps (src/backends/cuda/cuda_codec_av.cu). Imported, not run."""


def topk_row_offset(causal, k, L, t):
    """byte offset of row t of a top-k head map (rows of min(n, k) u16 keys then f16 weights)"""
    if not causal: return t * 4 * min(L, k)
    return 4 * (t * (t + 1) // 2 if t <= k else k * (k + 1) // 2 + (t - k) * k)


def mma_warps(L, rows, H, Hkv, causal, MT=2, BN=64):
    """The warps of k_av_q8_mma / k_av_topk_mma, in the kernels' order: blocks of BM = 16 MT rows per kv head g
    (the longest, causal, first), passes of GW = min(G, 8 / MT) heads of the group, warp (mt, hw) on m-tile mt of
    head g G + hp + hw. Yields (g, h, t0, n_tiles, w_end) for each warp with a head: its first row t0 (t0 may be
    past rows: the q8 kernel still walks the tiles, the top-k one skips them), the block's key tiles and the
    warp's last key + 1."""
    G = H // Hkv
    GW, BM = min(G, 8 // MT), 16 * MT
    nblk = (rows + BM - 1) // BM
    for g in range(Hkv):
        for bx in range(nblk):
            tb0 = (nblk - 1 - bx) * BM
            if tb0 >= rows: continue
            kv_end = min(L, tb0 + BM) if causal else L
            n_tiles = (kv_end + BN - 1) // BN
            for hp in range(0, G, GW):
                for warp in range(MT * GW):
                    mt, hw = warp % MT, warp // MT
                    hh = hp + hw
                    if hh >= G: continue
                    t0 = tb0 + mt * 16
                    yield g, g * G + hh, t0, n_tiles, min(L, t0 + 16) if causal else L


def pair_blocks(L, rows, G, Hkv, PB, causal, longest_first):
    """The blocks of the gather kernels k_av_smem (in grid order) and k_av_topk (longest_first: the last pairs'
    block first): per kv head g, PB consecutive (row, head-of-group) pairs, pair p being row p / G, head
    g G + p % G. Yields (g, qb0, qb1, kend): pairs qb0 .. qb1 - 1, keys below kend (causal: through the last
    pair's row)."""
    npairs = rows * G
    nblk = (npairs + PB - 1) // PB
    for g in range(Hkv):
        for bx in range(nblk):
            qb0 = ((nblk - 1 - bx) if longest_first else bx) * PB
            if qb0 >= npairs: continue
            qb1 = min(npairs, qb0 + PB)
            yield g, qb0, qb1, (qb1 - 1) // G + 1 if causal else L


def pair_row(pq, g, G, mb, causal, k, L):
    """Pair pq of kv head g of a top-k gather: its row t, head h, the byte offset of its row in the maps (head
    maps mb bytes apart), the row's keys n_t and its stored entries n = min(n_t, k)."""
    t, h = pq // G, g * G + pq % G
    n_t = t + 1 if causal else L
    return t, h, h * mb + topk_row_offset(causal, k, L, t), n_t, min(n_t, k)
