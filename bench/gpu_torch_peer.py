"""gpu_torch_peer.py — the PyTorch side of the GPU benchmark (bench/gpu_run.sh
runs it beside bench/gpu_bench on the same GPU, same shapes).

  python3 gpu_torch_peer.py run [repeats]     time the peers, print RESULT lines
  python3 gpu_torch_peer.py table OURS PEER   side-by-side markdown tables
  python3 gpu_torch_peer.py attnprof [reps]   attention inside PyTorch's Llama-1B 8192 x 1 forward
  python3 gpu_torch_peer.py attn [repeats]    SDPA alone: flash (FA2) and cuDNN backends

Peers, all bf16 with random weights of the real shapes, median of `repeats`
(10) CUDA-event timings after 3 warm-ups, torch.inference_mode:
  torch  a plain PyTorch forward (F.rms_norm / F.layer_norm, nn.Linear with
         separate q/k/v, rotate-half RoPE, F.scaled_dot_product_attention with
         enable_gqa (no K/V expansion), SwiGLU / GELU(erf) MLP), batch x L
         tensors (no padding: every sequence has length L);
  hf     transformers' LlamaModel / BertModel with attn_implementation="sdpa";
  sdpa   F.scaled_dot_product_attention alone, flash backend, [B, H, L, hd].
"""
import math
import statistics
import sys

SHAPES = {  # name: (arch, D, layers, heads, kv heads, head dim, ff, vocab)
    "llama-1b": ("llama", 2048, 16, 32, 8, 64, 8192, 128256),
    "bert-base": ("bert", 768, 12, 12, 12, 64, 3072, 30522),
    "minilm-l6": ("bert", 384, 6, 12, 12, 32, 1536, 30522),
}
FORWARD_CASES = [("llama-1b", 512, 16), ("llama-1b", 2048, 4), ("llama-1b", 8192, 1), ("bert-base", 128, 256),
                 ("bert-base", 512, 64), ("minilm-l6", 128, 256), ("minilm-l6", 512, 64),
                 # single requests (launch-bound: where attncache's CUDA graphs matter)
                 ("minilm-l6", 16, 1), ("minilm-l6", 128, 1), ("bert-base", 128, 1), ("llama-1b", 128, 1)]
ATTN_CASES = [(8, 16, 2048, 128, 0), (8, 16, 2048, 128, 1), (8, 32, 2048, 64, 0), (8, 32, 2048, 64, 1),
              (2, 16, 8192, 128, 1), (2, 32, 8192, 64, 1)]


def timed(fn, reps):
    import torch
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def plain_model(name):
    import torch
    import torch.nn.functional as F
    arch, D, nl, H, Hkv, hd, ff, V = SHAPES[name]
    dev, dt = "cuda", torch.bfloat16

    def lin(n_out, n_in, bias=False):
        m = torch.nn.Linear(n_in, n_out, bias=bias, device=dev, dtype=dt)
        return m

    emb = torch.nn.Embedding(V, D, device=dev, dtype=dt)
    layers = []
    for _ in range(nl):
        l = {"q": lin(H * hd, D, arch == "bert"), "k": lin(Hkv * hd, D, arch == "bert"),
             "v": lin(Hkv * hd, D, arch == "bert"), "o": lin(D, H * hd, arch == "bert"),
             "n1": torch.ones(D, device=dev, dtype=dt), "n2": torch.ones(D, device=dev, dtype=dt),
             "b1": torch.zeros(D, device=dev, dtype=dt), "b2": torch.zeros(D, device=dev, dtype=dt)}
        if arch == "llama":
            l.update(gate=lin(ff, D), up=lin(ff, D), down=lin(D, ff))
        else:
            l.update(up=lin(ff, D, True), down=lin(D, ff, True))
        layers.append(l)
    pos = torch.randn(512, D, device=dev, dtype=dt) * 0.02
    eps = 1e-5 if arch == "llama" else 1e-12

    def rope(L):
        inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))
        f = torch.outer(torch.arange(L, device=dev, dtype=torch.float32), inv)
        e = torch.cat([f, f], -1)
        return e.cos().to(dt), e.sin().to(dt)

    def rot_half(x):
        x1, x2 = x.chunk(2, -1)
        return torch.cat([-x2, x1], -1)

    def forward(ids):
        B, L = ids.shape
        x = emb(ids)
        if arch == "llama":
            cos, sin = rope(L)
            for l in layers:
                h = F.rms_norm(x, (D,), l["n1"], eps)
                q = l["q"](h).view(B, L, H, hd).transpose(1, 2)
                k = l["k"](h).view(B, L, Hkv, hd).transpose(1, 2)
                v = l["v"](h).view(B, L, Hkv, hd).transpose(1, 2)
                q, k = q * cos + rot_half(q) * sin, k * cos + rot_half(k) * sin
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                x = x + l["o"](a.transpose(1, 2).reshape(B, L, H * hd))
                h = F.rms_norm(x, (D,), l["n2"], eps)
                x = x + l["down"](F.silu(l["gate"](h)) * l["up"](h))
            return F.rms_norm(x, (D,), None, eps)[:, -1]
        x = F.layer_norm(x + pos[:L], (D,), None, None, eps)
        for l in layers:
            q = l["q"](x).view(B, L, H, hd).transpose(1, 2)
            k = l["k"](x).view(B, L, Hkv, hd).transpose(1, 2)
            v = l["v"](x).view(B, L, Hkv, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v)
            x = F.layer_norm(x + l["o"](a.transpose(1, 2).reshape(B, L, H * hd)), (D,), l["n1"], l["b1"], eps)
            x = F.layer_norm(x + l["down"](F.gelu(l["up"](x))), (D,), l["n2"], l["b2"], eps)
        return x.mean(1)

    return forward


def hf_model(name):
    import torch
    arch, D, nl, H, Hkv, hd, ff, V = SHAPES[name]
    if arch == "llama":
        from transformers import LlamaConfig, LlamaModel
        cfg = LlamaConfig(hidden_size=D, intermediate_size=ff, num_hidden_layers=nl, num_attention_heads=H,
                          num_key_value_heads=Hkv, head_dim=hd, vocab_size=V, rope_theta=500000.0,
                          max_position_embeddings=131072, attn_implementation="sdpa")
        cls = LlamaModel
    else:
        from transformers import BertConfig, BertModel
        cfg = BertConfig(hidden_size=D, intermediate_size=ff, num_hidden_layers=nl, num_attention_heads=H,
                         vocab_size=V, attn_implementation="sdpa")
        cls = BertModel
    with torch.device("cuda"):
        m = cls(cfg).to(torch.bfloat16).eval()
    return lambda ids: m(input_ids=ids).last_hidden_state


def attn(reps, cudnn=False):
    """SDPA alone on ATTN_CASES: the flash backend (FlashAttention-2: RESULT sdpa ...) and, with cudnn,
    cuDNN's attention (RESULT sdpa_cudnn ...; what PyTorch's own forward picks on Hopper)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backends = [("sdpa", SDPBackend.FLASH_ATTENTION)] + ([("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)] if cudnn else [])
    with torch.inference_mode():
        for (B, H, L, hd, causal) in ATTN_CASES:
            q, k, v = (torch.randn(B, H, L, hd, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            fl = 4.0 * B * H * L * L * hd * (0.5 if causal else 1.0)
            for name, be in backends:
                try:
                    with sdpa_kernel(be):
                        ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal)), reps)
                    print(f"RESULT {name} {B} {H} {L} {hd} {causal} {ms:.4f}   # {fl / ms / 1e9:.1f} TFLOP/s",
                          flush=True)
                except RuntimeError as e:  # a backend that does not run this case
                    print(f"RESULT {name} {B} {H} {L} {hd} {causal} nan   # {str(e)[:120]}", flush=True)
            del q, k, v


def run(reps):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, flush=True)
    attn(reps)
    with torch.inference_mode():
        for kind in ("torch", "hf"):
            last, fwd = None, None
            for (name, L, B) in FORWARD_CASES:
                try:
                    if name != last:
                        fwd = None
                        torch.cuda.empty_cache()
                        fwd = plain_model(name) if kind == "torch" else hf_model(name)
                        last = name
                    V = SHAPES[name][7]
                    ids = torch.randint(0, V, (B, L), device="cuda")
                    ms = timed(lambda: fwd(ids), reps)
                    print(f"RESULT {kind} {name} {L} {B} {ms:.4f}", flush=True)
                except Exception as e:  # report and go on (e.g. out of memory)
                    print(f"RESULT {kind} {name} {L} {B} nan   # {type(e).__name__}: {str(e)[:120]}", flush=True)


def table(ours_path, peer_path):
    rows = {}
    for path in (ours_path, peer_path):
        for line in open(path):
            if line.startswith("RESULT"):
                f = line.split("#")[0].split()
                rows[tuple(f[1:-1])] = float(f[-1])
    print("| model | L × batch | attncache ms | tok/s | PyTorch SDPA ms | tok/s | vs PyTorch | transformers sdpa ms | vs transformers |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (name, L, B) in FORWARD_CASES:
        k = (name, str(L), str(B))
        o, t, h = rows.get(("forward",) + k), rows.get(("torch",) + k), rows.get(("hf",) + k)
        if o is None:
            continue
        tok = L * B / (o * 1e-3)
        ts = f"{t:.2f} | {L * B / (t * 1e-3) / 1e3:.0f}k | {t / o:.2f}×" if t and not math.isnan(t) else "– | – | –"
        hs = f"{h:.2f} | {h / o:.2f}×" if h and not math.isnan(h) else "– | –"
        print(f"| {name} | {L} × {B} | {o:.2f} | {tok / 1e3:.0f}k | {ts} | {hs} |")
    print()
    print("| attention B, H, L, hd, causal | ours 4×1 warps ms | 8×1 ms | 4×2 ms | 4×1, 128-key tiles ms | wgmma 1×128 ms | wgmma 2×64 ms | wgmma 2×128 ms | pipelined 2×64 ms | pipelined 2×128 ms | ours TFLOP/s (best) | SDPA flash ms | SDPA TFLOP/s | ours vs SDPA |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (B, H, L, hd, c) in ATTN_CASES:
        k = tuple(str(x) for x in (B, H, L, hd, c))
        v = [rows.get(("attn",) + k + (str(i),)) for i in (1, 2, 3, 4, 5, 6, 7, 8, 9)]
        s = rows.get(("sdpa",) + k)
        have = [x for x in v if x is not None]
        if not have:
            continue
        best = min(have)
        fl = 4.0 * B * H * L * L * hd * (0.5 if c else 1.0)
        ss = f"{s:.3f} | {fl / s / 1e9:.0f} | {s / best:.2f}×" if s else "– | – | –"
        cols = " | ".join(f"{x:.3f}" if x is not None else "–" for x in v)
        print(f"| {B}, {H}, {L}, {hd}, {c} | {cols} | {fl / best / 1e9:.0f} | {ss} |")


def attnprof(reps):
    """PyTorch's attention kernel inside its own Llama-1B forward at 8192 x 1 (torch.profiler, CUDA time of
    the kernels whose name holds flash/fmha/attention) beside SDPA alone at the same layout (B 1, 32 heads
    over 8 kv heads, enable_gqa) and at the kernel bench's B 2 without GQA."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile
    with torch.inference_mode():
        for (B, H, Hkv, L) in ((1, 32, 8, 8192), (2, 32, 32, 8192), (1, 32, 32, 8192)):
            q = torch.randn(B, H, L, 64, device="cuda", dtype=torch.bfloat16)
            k, v = (torch.randn(B, Hkv, L, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            for be in ("flash", "default"):
                try:
                    f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=Hkv != H)
                    if be == "flash":
                        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                            ms = timed(f, reps)
                    else:
                        ms = timed(f, reps)
                    print(f"RESULT sdpax {be} {B} {H} {Hkv} {L} {ms:.4f}", flush=True)
                except Exception as e:
                    print(f"RESULT sdpax {be} {B} {H} {Hkv} {L} nan   # {type(e).__name__}: {str(e)[:100]}", flush=True)
        fwd = plain_model("llama-1b")
        ids = torch.randint(0, SHAPES["llama-1b"][7], (1, 8192), device="cuda")
        for _ in range(3):
            fwd(ids)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fwd(ids)
            torch.cuda.synchronize()
        tot, att, names = 0.0, 0.0, {}
        for e in prof.key_averages():
            t = e.device_time_total / 1e3  # ms
            tot += t
            n = e.key.lower()
            if "flash" in n or "fmha" in n or "attention" in n:
                att += t
                names[e.key[:90]] = t
        print(f"RESULT torch_inforward_attn llama-1b 8192 1 {att:.4f}   # of {tot:.2f} ms kernel time", flush=True)
        for n, t in names.items():
            print(f"#   {t:.3f} ms  {n}")

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "attn":
        import torch
        print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, flush=True)
        attn(int(sys.argv[2]) if len(sys.argv) > 2 else 10, cudnn=True)
    elif len(sys.argv) > 1 and sys.argv[1] == "attnprof":
        attnprof(int(sys.argv[2]) if len(sys.argv) > 2 else 10)
    else:
        run(int(sys.argv[2]) if len(sys.argv) > 2 else 10)
