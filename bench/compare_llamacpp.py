#!/usr/bin/env python3
"""Prefill throughput of attncache and llama.cpp side by side, same GGUF file,
same thread count, same lengths, alternating runs in one process.

    python bench/compare_llamacpp.py -m models-cache/synth-llama-1b-f16.gguf -L 128,512,1024 -t 2

llama.cpp comes from PyPI's llama-cpp-python (built from source by pip; a
benchmark-only dependency, never the engine's): install it into any venv, e.g.
    python3 -m venv /tmp/lcpp && CMAKE_ARGS="-DGGML_NATIVE=ON" /tmp/lcpp/bin/pip install llama-cpp-python==0.3.36
and run this script with that venv's python. attncache is run as the CLI
(`build/attncache bench ... --json`). Prints tokens/s for both and the ratio.

bench/compare_peers.py is the fuller comparison (llama.cpp's CLI tools built from source, an
AVX2-only build for AC_CPU=avx2, ONNX Runtime and PyTorch on the real MiniLM); this script stays
for quick checks against the Python bindings.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time


def llamacpp_prefill(path, lengths, threads, reps, embedding):
    import llama_cpp  # noqa: PLC0415

    out = {}
    n_ctx = max(lengths) + (0 if embedding else 8)
    kw = dict(pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN) if embedding else {}
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                          n_threads_batch=threads, embedding=embedding, verbose=False, **kw)
    from llama_cpp import _internals  # noqa: PLC0415
    vocab = llm.n_vocab()
    rng = random.Random(42)
    for L in lengths:
        toks = [rng.randrange(3, vocab) for _ in range(L)]
        times = []
        batch = _internals.LlamaBatch(n_tokens=L, embd=0, n_seq_max=1) if embedding else None
        for r in range(reps + 1):
            if embedding:  # encoder: one llama_encode of L tokens (mean pooling)
                batch.set_batch(toks, n_past=0, logits_all=True)
                t0 = time.perf_counter()
                if llama_cpp.llama_encode(llm._ctx.ctx, batch.batch) != 0:
                    raise RuntimeError("llama_encode failed")
            else:  # decoder: one prefill of L tokens
                llm.reset()
                t0 = time.perf_counter()
                llm.eval(toks)
            dt = time.perf_counter() - t0
            if r:  # first run is the warm-up
                times.append(dt)
        out[L] = L / min(times)
    return out


def attncache_prefill(binary, path, lengths, threads, reps, fast):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [binary, "bench", "-m", path, "-L", ",".join(map(str, lengths)), "-t", str(threads), "-r", str(reps),
               "--json", f.name] + (["--fast"] if fast else [])
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        res = json.load(open(f.name))
    return {r["L"]: r["tok_s_best"] for r in res["results"]}, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", required=True)
    ap.add_argument("-L", default="128,512")
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "attncache"))
    ap.add_argument("--embedding", action="store_true", help="llama.cpp embedding mode (BERT models)")
    ap.add_argument("--fast", action="store_true", help="attncache's bf16 mode (default: exact f32 products)")
    a = ap.parse_args()
    lengths = [int(x) for x in a.L.split(",")]
    ours, _ = attncache_prefill(a.bin, a.m, lengths, a.t, a.r, a.fast)
    theirs = llamacpp_prefill(a.m, lengths, a.t, a.r, a.embedding)
    ours2, _ = attncache_prefill(a.bin, a.m, lengths, a.t, a.r, a.fast)  # again, after llama.cpp: drift check
    print(f"model {a.m}, {a.t} threads, best of {a.r}, attncache {'--fast (bf16)' if a.fast else 'exact (f32 products)'}")
    print(f"{'L':>6} {'attncache t/s':>14} {'(2nd run)':>10} {'llama.cpp t/s':>14} {'ratio':>7}")
    for L in lengths:
        o = max(ours[L], ours2[L])
        print(f"{L:>6} {ours[L]:>14.1f} {ours2[L]:>10.1f} {theirs[L]:>14.1f} {o / theirs[L]:>7.2f}x")


if __name__ == "__main__":
    main()
