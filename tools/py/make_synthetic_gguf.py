#!/usr/bin/env python3
"""Synthetic GGUF models: real shapes, random weights, real tokenizers; for speed work and tests.

  make_synthetic_gguf.py --shape llama-1b  --type f16 -o models-cache/synth-llama-1b-f16.gguf
  make_synthetic_gguf.py --shape bert-base --type f32 -o models-cache/synth-bert-base-f32.gguf
  make_synthetic_gguf.py --shape tiny-llama|tiny-bert ...   (small, for unit tests)

Options: --type f32|f16|bf16|q8_0 (2-D weights; 1-D, norms, biases, position/token-type
embeddings stay F32 as llama.cpp stores them), --seed N (default 1234), --no-output
(llama: no output.weight, i.e. tied embeddings), --vocab-dir DIR (default /work/shared/vocab
or $AC_SHARED_DIR/vocab).

Shapes (n_embd, n_layer, n_head, n_head_kv, n_ff, vocab):
  llama-1b   2048 16 32 8 8192  llama-spm (32000)  rope theta 500000, rms eps 1e-5, ctx 4096
  tiny-llama   64  2  4 2  160  llama-spm (32000)  rope theta 10000,  rms eps 1e-5, ctx 512
  bert-base   768 12 12 12 3072 bert-bge (30522)   ctx 512, 2 token types, ln eps 1e-12, MEAN pooling
  minilm      384  6 12 12 1536 bert-bge (30522)   all-MiniLM-L6-v2's shape (the GPU machine has no
                                                   room for the real one: a stream's speed there)
  tiny-bert    64  2  4 4  128  bert-bge (30522)   ctx 128
The tokenizer.* keys are copied verbatim from llama.cpp's vocab fixtures ggml-vocab-llama-spm.gguf
/ ggml-vocab-bert-bge.gguf; keys and tensor names are those llama.cpp's converter writes.

Weights: N(0, 0.02) for matrices, embeddings and biases; norm weights 1, norm biases 0. Each
tensor draws from its own generator seeded by (seed, tensor index), so files are reproducible
and independent of write order. Tensors are generated and written one at a time (tensor info
first, then data), so memory stays at about one tensor (~0.5 GB for llama-1b's embeddings).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gguf

Q = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class Shape:
    arch: str  # "llama" or "bert"
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int
    vocab: str  # fixture file name under vocab/
    rope_theta: float = 10000.0
    eps: float = 1e-5


SHAPES = {
    "llama-1b": Shape("llama", 2048, 16, 32, 8, 8192, 4096, "ggml-vocab-llama-spm.gguf", 500000.0, 1e-5),
    "tiny-llama": Shape("llama", 64, 2, 4, 2, 160, 512, "ggml-vocab-llama-spm.gguf", 10000.0, 1e-5),
    "bert-base": Shape("bert", 768, 12, 12, 12, 3072, 512, "ggml-vocab-bert-bge.gguf", eps=1e-12),
    "tiny-bert": Shape("bert", 64, 2, 4, 4, 128, 128, "ggml-vocab-bert-bge.gguf", eps=1e-12),
    "minilm": Shape("bert", 384, 6, 12, 12, 1536, 512, "ggml-vocab-bert-bge.gguf", eps=1e-12),
}
TYPES = {
    "f32": (gguf.LlamaFileType.ALL_F32, Q.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, Q.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
}


def tensor_list(s: Shape, n_vocab: int, n_tt: int, with_output: bool) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape (= reversed ggml ne), init) in the order llama.cpp's converter writes."""
    d, f, hd = s.n_embd, s.n_ff, s.n_embd // s.n_head
    kv = s.n_head_kv * hd
    out: list[tuple[str, tuple[int, ...], str]] = []
    if s.arch == "llama":
        out.append(("token_embd.weight", (n_vocab, d), "normal"))
        for i in range(s.n_layer):
            b = f"blk.{i}."
            out += [
                (b + "attn_norm.weight", (d,), "ones"),
                (b + "attn_q.weight", (d, d), "normal"),
                (b + "attn_k.weight", (kv, d), "normal"),
                (b + "attn_v.weight", (kv, d), "normal"),
                (b + "attn_output.weight", (d, d), "normal"),
                (b + "ffn_norm.weight", (d,), "ones"),
                (b + "ffn_gate.weight", (f, d), "normal"),
                (b + "ffn_up.weight", (f, d), "normal"),
                (b + "ffn_down.weight", (d, f), "normal"),
            ]
        out.append(("output_norm.weight", (d,), "ones"))
        if with_output:
            out.append(("output.weight", (n_vocab, d), "normal"))
    else:
        out += [
            ("token_embd.weight", (n_vocab, d), "normal"),
            ("position_embd.weight", (s.n_ctx, d), "normal"),
            ("token_types.weight", (n_tt, d), "normal"),
            ("token_embd_norm.weight", (d,), "ones"),
            ("token_embd_norm.bias", (d,), "zeros"),
        ]
        for i in range(s.n_layer):
            b = f"blk.{i}."
            for x in ("q", "k", "v"):
                out += [(b + f"attn_{x}.weight", (d, d), "normal"), (b + f"attn_{x}.bias", (d,), "normal")]
            out += [
                (b + "attn_output.weight", (d, d), "normal"),
                (b + "attn_output.bias", (d,), "normal"),
                (b + "attn_output_norm.weight", (d,), "ones"),
                (b + "attn_output_norm.bias", (d,), "zeros"),
                (b + "ffn_up.weight", (f, d), "normal"),
                (b + "ffn_up.bias", (f,), "normal"),
                (b + "ffn_down.weight", (d, f), "normal"),
                (b + "ffn_down.bias", (d,), "normal"),
                (b + "layer_output_norm.weight", (d,), "ones"),
                (b + "layer_output_norm.bias", (d,), "zeros"),
            ]
    return out


def out_type(name: str, shape: tuple[int, ...], wtype: Q) -> Q:
    if len(shape) == 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return Q.F32
    if name in ("position_embd.weight", "token_types.weight"):
        return Q.F32
    if wtype == Q.Q8_0 and shape[-1] % 32 != 0:
        return Q.F16
    return wtype


def make_tensor(shape: tuple[int, ...], init: str, seed: int, index: int, std: float) -> np.ndarray:
    if init == "ones":
        return np.ones(shape, dtype=np.float32)
    if init == "zeros":
        return np.zeros(shape, dtype=np.float32)
    rng = np.random.default_rng([seed, index])
    a = rng.standard_normal(shape, dtype=np.float32)
    a *= np.float32(std)
    return a


def encode(a: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.F32:
        return a
    if qtype == Q.F16:
        return a.astype(np.float16)
    return gguf.quants.quantize(a, qtype)


def copy_tokenizer(w: gguf.GGUFWriter, vocab_path: Path) -> tuple[int, int]:
    """Copy every tokenizer.* key of a llama.cpp vocab fixture; returns (n_vocab, token_type_count)."""
    r = gguf.GGUFReader(vocab_path)
    n_vocab, n_tt = 0, 0
    for key, field in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            val = field.contents()
            if sub == gguf.GGUFValueType.STRING:
                # raw bytes: token texts are copied byte for byte, even if not valid UTF-8
                val = [bytes(field.parts[i]) for i in field.data]
            w.add_key_value(key, val, vtype, sub_type=sub)
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(val)
        else:
            w.add_key_value(key, field.contents(), vtype)
        if key == "tokenizer.ggml.token_type_count":
            n_tt = int(field.contents())
    if n_vocab == 0:
        raise ValueError(f"{vocab_path}: no tokenizer.ggml.tokens")
    return n_vocab, n_tt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--type", default="f16", choices=sorted(TYPES))
    ap.add_argument("-o", "--outfile", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--no-output", action="store_true", help="llama: omit output.weight (tied embeddings)")
    shared = Path(os.environ.get("AC_SHARED_DIR", "/work/shared"))
    ap.add_argument("--vocab-dir", type=Path, default=shared / "vocab")
    a = ap.parse_args(argv)

    s = SHAPES[a.shape]
    ftype, wtype = TYPES[a.type]
    t0 = time.time()
    w = gguf.GGUFWriter(path=None, arch=s.arch)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"synthetic-{a.shape}")
    w.add_description(f"synthetic: random weights N(0,{a.std}) seed {a.seed}, real shapes of {a.shape}; "
                      f"made by tools/py/make_synthetic_gguf.py")
    w.add_block_count(s.n_layer)
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.n_embd)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    if s.arch == "llama":
        w.add_head_count_kv(s.n_head_kv)
        w.add_rope_freq_base(s.rope_theta)
        w.add_layer_norm_rms_eps(s.eps)
    else:
        w.add_layer_norm_eps(s.eps)
    w.add_file_type(ftype)
    if s.arch == "llama":
        w.add_rope_dimension_count(s.n_embd // s.n_head)
    else:
        w.add_causal_attention(False)
        w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    n_vocab, n_tt = copy_tokenizer(w, a.vocab_dir / s.vocab)
    if s.arch == "llama":
        w.add_vocab_size(n_vocab)
    elif n_tt == 0:
        n_tt = 2
        w.add_token_type_count(n_tt)

    tensors = tensor_list(s, n_vocab, n_tt, not a.no_output)
    total = 0
    for name, shape, _ in tensors:
        qt = out_type(name, shape, wtype)
        if qt in (Q.F32, Q.F16):
            dt = np.dtype(np.float32 if qt == Q.F32 else np.float16)
            w.add_tensor_info(name, shape, dt, int(np.prod(shape)) * dt.itemsize)
        else:
            bshape = gguf.quant_shape_to_byte_shape(shape, qt)
            w.add_tensor_info(name, bshape, np.dtype(np.uint8), int(np.prod(bshape)), raw_dtype=qt)
        total += int(np.prod(shape))

    a.outfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.outfile.with_name(a.outfile.name + ".tmp")
    w.write_header_to_file(path=tmp)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for idx, (name, shape, init) in enumerate(tensors):
        qt = out_type(name, shape, wtype)
        w.write_tensor_data(encode(make_tensor(shape, init, a.seed, idx, a.std), qt))
    w.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, a.outfile)
    print(f"wrote {a.outfile}: {a.shape} {a.type}, {total / 1e6:.1f}M params, "
          f"{a.outfile.stat().st_size / 2**20:.1f} MiB in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
