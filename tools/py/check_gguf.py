#!/usr/bin/env python3
"""Check that a GGUF file looks like one llama.cpp's converter writes, and print a summary.

  check_gguf.py FILE [FILE...]                    # generic checks for llama / qwen2 / bert
  check_gguf.py --expect minilm FILE              # + all-MiniLM-L6-v2 specifics
  check_gguf.py --expect minilm-cls FILE          # + the SST-2 head (cls.output.*)
  check_gguf.py --expect llama-1b|bert-base|tiny-llama|tiny-bert FILE   (synthetic shapes)
  check_gguf.py -q ...                            # print only errors
  check_gguf.py --loose FILE                      # file not from convert_hf_to_gguf.py (e.g. stories260K)

Generic checks: GGUF v3; general.architecture known; the hyper-parameter keys llama.cpp reads
for the architecture present; every tensor name one of gguf.MODEL_TENSORS[arch] (+ .weight/.bias);
the full per-layer tensor set present with shapes that agree with the hyper-parameters
(ggml order: ne0 first); 1-D tensors, norms, biases, position_embd and token_types stored F32.
Exit status 0 when all checks pass, 1 otherwise.
"""
from __future__ import annotations

import argparse
import re
import sys

import gguf
import numpy as np

ARCH_KEYS = {
    "llama": ["block_count", "context_length", "embedding_length", "feed_forward_length",
              "attention.head_count", "attention.head_count_kv", "attention.layer_norm_rms_epsilon",
              "rope.dimension_count"],
    "qwen2": ["block_count", "context_length", "embedding_length", "feed_forward_length",
              "attention.head_count", "attention.head_count_kv", "attention.layer_norm_rms_epsilon"],
    "bert": ["block_count", "context_length", "embedding_length", "feed_forward_length",
             "attention.head_count", "attention.layer_norm_epsilon", "attention.causal"],  # pooling_type: only sentence-transformers models
}

SYNTH = {  # --expect for synthetic shapes: (arch, n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab)
    "llama-1b": ("llama", 2048, 16, 32, 8, 8192, 32000),
    "tiny-llama": ("llama", 64, 2, 4, 2, 160, 32000),
    "bert-base": ("bert", 768, 12, 12, 12, 3072, 30522),
    "tiny-bert": ("bert", 64, 2, 4, 4, 128, 30522),
}


class Checker:
    def __init__(self, path: str, quiet: bool, loose: bool = False):
        self.path, self.quiet, self.loose, self.errors = path, quiet, loose, 0
        self.r = gguf.GGUFReader(path)
        self.kv = {k: f for k, f in self.r.fields.items()}
        self.t = {t.name: t for t in self.r.tensors}

    def err(self, msg: str) -> None:
        self.errors += 1
        print(f"{self.path}: ERROR: {msg}", file=sys.stderr)

    def get(self, key: str, default=None):
        f = self.kv.get(key)
        return default if f is None else f.contents()

    def shape(self, name: str) -> list[int] | None:
        t = self.t.get(name)
        return None if t is None else [int(x) for x in t.shape]

    def want_shape(self, name: str, shape: list[int]) -> None:
        s = self.shape(name)
        if s is None:
            self.err(f"tensor {name} missing")
        elif s != shape:
            self.err(f"tensor {name}: shape {s}, want {shape}")

    def generic(self) -> None:
        if self.get("GGUF.version") != 3:
            self.err(f"GGUF version {self.get('GGUF.version')}, want 3")
        arch = self.get("general.architecture")
        if arch not in ARCH_KEYS:
            self.err(f"general.architecture {arch!r} not one of {sorted(ARCH_KEYS)}")
            return
        self.arch = arch
        for k in ARCH_KEYS[arch]:
            if f"{arch}.{k}" not in self.kv:
                self.err(f"key {arch}.{k} missing")
        for k in ("general.name", "tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
            if k not in self.kv:
                self.err(f"key {k} missing")
        # keys convert_hf_to_gguf.py always writes (other writers, e.g. llama.cpp's llama2.c
        # converter that made stories260K.gguf, leave some out): errors unless --loose
        conv = ["general.type", "general.file_type", "general.quantization_version"]
        if arch == "llama":
            conv.append("llama.vocab_size")
        for k in conv:
            if k not in self.kv:
                if self.loose:
                    print(f"{self.path}: note: {k} absent (not written by convert_hf_to_gguf.py)", file=sys.stderr)
                else:
                    self.err(f"key {k} missing")
        if self.errors:
            return
        march = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
        pats = []
        for key in gguf.MODEL_TENSORS[march]:
            base = re.escape(gguf.TENSOR_NAMES[key]).replace(r"\{bid\}", r"\d+")
            pats.append(re.compile(base + r"\.(weight|bias)$"))
        for name, t in self.t.items():
            if not any(p.match(name) for p in pats):
                self.err(f"tensor name {name!r} is not a llama.cpp {arch} tensor")
            one_d = len(t.shape) == 1
            must_f32 = one_d or name.endswith("_norm.weight") or name.endswith(".bias") or \
                name in ("position_embd.weight", "token_types.weight")
            if must_f32 and t.tensor_type != gguf.GGMLQuantizationType.F32:
                self.err(f"tensor {name} is {t.tensor_type.name}, llama.cpp stores it F32")

        n_embd = int(self.get(f"{arch}.embedding_length"))
        n_layer = int(self.get(f"{arch}.block_count"))
        n_ff = int(self.get(f"{arch}.feed_forward_length"))
        n_head = int(self.get(f"{arch}.attention.head_count"))
        n_head_kv = int(self.get(f"{arch}.attention.head_count_kv", n_head))
        n_vocab = len(self.kv["tokenizer.ggml.tokens"].data)
        hd = int(self.get(f"{arch}.attention.key_length", n_embd // n_head))
        self.dims = dict(n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv, n_vocab=n_vocab)
        if len(self.kv["tokenizer.ggml.token_type"].data) != n_vocab:
            self.err("tokenizer.ggml.token_type length != tokens length")
        self.want_shape("token_embd.weight", [n_embd, n_vocab])
        if arch in ("llama", "qwen2"):
            self.want_shape("output_norm.weight", [n_embd])
            if "output.weight" in self.t:
                self.want_shape("output.weight", [n_embd, n_vocab])
            for i in range(n_layer):
                b = f"blk.{i}."
                self.want_shape(b + "attn_norm.weight", [n_embd])
                self.want_shape(b + "attn_q.weight", [n_embd, n_head * hd])
                self.want_shape(b + "attn_k.weight", [n_embd, n_head_kv * hd])
                self.want_shape(b + "attn_v.weight", [n_embd, n_head_kv * hd])
                self.want_shape(b + "attn_output.weight", [n_head * hd, n_embd])
                self.want_shape(b + "ffn_norm.weight", [n_embd])
                self.want_shape(b + "ffn_gate.weight", [n_embd, n_ff])
                self.want_shape(b + "ffn_up.weight", [n_embd, n_ff])
                self.want_shape(b + "ffn_down.weight", [n_ff, n_embd])
                if arch == "qwen2":
                    for x, n in (("q", n_head), ("k", n_head_kv), ("v", n_head_kv)):
                        self.want_shape(b + f"attn_{x}.bias", [n * hd])
            if self.get("tokenizer.ggml.model") not in ("llama", "gpt2"):
                self.err(f"tokenizer.ggml.model {self.get('tokenizer.ggml.model')!r} unexpected for {arch}")
        else:
            n_ctx = int(self.get("bert.context_length"))
            n_tt = int(self.get("tokenizer.ggml.token_type_count", 0))
            self.want_shape("position_embd.weight", [n_embd, n_ctx])
            self.want_shape("token_types.weight", [n_embd, n_tt])
            for s in ("weight", "bias"):
                self.want_shape(f"token_embd_norm.{s}", [n_embd])
            for i in range(n_layer):
                b = f"blk.{i}."
                for x in ("q", "k", "v"):
                    self.want_shape(b + f"attn_{x}.weight", [n_embd, n_embd])
                    self.want_shape(b + f"attn_{x}.bias", [n_embd])
                self.want_shape(b + "attn_output.weight", [n_embd, n_embd])
                self.want_shape(b + "attn_output.bias", [n_embd])
                self.want_shape(b + "ffn_up.weight", [n_embd, n_ff])
                self.want_shape(b + "ffn_up.bias", [n_ff])
                self.want_shape(b + "ffn_down.weight", [n_ff, n_embd])
                self.want_shape(b + "ffn_down.bias", [n_embd])
                for s in ("weight", "bias"):
                    self.want_shape(b + f"attn_output_norm.{s}", [n_embd])
                    self.want_shape(b + f"layer_output_norm.{s}", [n_embd])
            if self.get("tokenizer.ggml.model") != "bert":
                self.err(f"tokenizer.ggml.model {self.get('tokenizer.ggml.model')!r}, want 'bert'")
            if self.get("bert.attention.causal") is not False:
                self.err("bert.attention.causal should be false")
            toks = self.kv["tokenizer.ggml.tokens"].contents()
            types = self.kv["tokenizer.ggml.token_type"].contents()
            if any(t.startswith("##") for t in toks):
                self.err("WordPiece '##' continuation prefix not stripped")
            bad = [t for t, ty in zip(toks, types) if ty != gguf.TokenType.CONTROL and not t.startswith("\u2581")
                   and t.startswith(("a", "e", "the"))]
            if len(bad) > 0.9 * sum(1 for t in toks if t.lstrip("\u2581").startswith(("a", "e", "the"))):
                self.err("word-start tokens lack the '\u2581' prefix")
        known = set(self.t)
        expected_n = len(known)
        if expected_n == 0:
            self.err("no tensors")

    def expect_minilm(self, with_cls: bool) -> None:
        d = self.dims
        want = dict(n_embd=384, n_layer=6, n_ff=1536, n_head=12, n_vocab=30522)
        for k, v in want.items():
            if d[k] != v:
                self.err(f"{k} = {d[k]}, all-MiniLM-L6-v2 has {v}")
        if self.get("bert.pooling_type") != int(gguf.PoolingType.MEAN):
            self.err(f"bert.pooling_type {self.get('bert.pooling_type')}, want MEAN (1)")
        ids = {k: self.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "seperator", "padding", "mask")}
        want_ids = dict(bos=101, eos=102, unknown=100, seperator=102, padding=0, mask=103)
        if ids != want_ids:
            self.err(f"special ids {ids}, want {want_ids}")
        toks = self.kv["tokenizer.ggml.tokens"].contents()
        for i, t in ((0, "[PAD]"), (101, "[CLS]"), (1996, "\u2581the"), (2015, "s")):
            if toks[i] != t:
                self.err(f"token {i} = {toks[i]!r}, want {t!r}")
        # against llama.cpp's own WordPiece fixture (same uncased vocab): equal except the
        # [unusedN] tokens, which today's converter prefixes with U+2581 (older ones did not)
        try:
            ref = gguf.GGUFReader("/work/shared/vocab/ggml-vocab-bert-bge.gguf").fields["tokenizer.ggml.tokens"].contents()
        except (FileNotFoundError, OSError):
            ref = None
        if ref is not None:
            diff = [i for i, (a, b) in enumerate(zip(toks, ref)) if a != b and a != "\u2581" + b]
            if len(ref) != len(toks) or diff:
                self.err(f"vocab differs from ggml-vocab-bert-bge.gguf at {len(diff)} ids, e.g. {diff[:5]}")
        emb = self.t["token_embd.weight"]
        row = gguf.quants.dequantize(np.asarray(emb.data[1996:1997]), emb.tensor_type).reshape(-1)
        if not (0.1 < float(np.linalg.norm(row)) < 10):
            self.err(f"token_embd row of 'the' has norm {np.linalg.norm(row)}: weights look wrong")
        if with_cls:
            self.want_shape("cls.output.weight", [384, 2])
            self.want_shape("cls.output.bias", [2])
            labels = self.get("bert.classifier.output_labels")
            if labels != ["negative", "positive"]:
                self.err(f"bert.classifier.output_labels {labels}, want ['negative', 'positive']")
        elif "cls.output.weight" in self.t:
            self.err("unexpected classifier head")

    def expect_synth(self, shape: str) -> None:
        arch, n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab = SYNTH[shape]
        got = (self.arch, self.dims["n_embd"], self.dims["n_layer"], self.dims["n_head"], self.dims["n_head_kv"],
               self.dims["n_ff"], self.dims["n_vocab"])
        if got != SYNTH[shape]:
            self.err(f"shape {got}, want {SYNTH[shape]} for {shape}")

    def summary(self) -> None:
        if self.quiet:
            return
        types: dict[str, int] = {}
        for t in self.r.tensors:
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        d = getattr(self, "dims", {})
        print(f"{self.path}: {getattr(self, 'arch', '?')} {d} tensors={len(self.t)} {types} "
              f"tokenizer={self.get('tokenizer.ggml.model')}/{self.get('tokenizer.ggml.pre')} "
              f"{'OK' if self.errors == 0 else f'{self.errors} ERRORS'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--expect", choices=["minilm", "minilm-cls", *SYNTH])
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("--loose", action="store_true", help="files from other GGUF writers: converter-only keys optional")
    a = ap.parse_args()
    bad = 0
    for f in a.files:
        c = Checker(f, a.quiet, a.loose)
        c.generic()
        if c.errors == 0 and a.expect in ("minilm", "minilm-cls"):
            c.expect_minilm(a.expect == "minilm-cls")
        elif c.errors == 0 and a.expect in SYNTH:
            c.expect_synth(a.expect)
        c.summary()
        bad += c.errors > 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
