#!/usr/bin/env python3
"""Convert a Hugging Face checkpoint directory to GGUF, writing what llama.cpp's
convert_hf_to_gguf.py writes for the same model (same keys, tensor names, tensor layouts,
tensor types and vocab encoding), for three architectures:

  LlamaForCausalLM  -> general.architecture = llama  (Q/K rows permuted for ggml's RoPE)
  Qwen2ForCausalLM  -> general.architecture = qwen2  (no permutation: NEOX RoPE)
  BertModel (also BertForSequenceClassification) -> general.architecture = bert

Usage:
  convert_hf_to_gguf.py MODEL_DIR --outfile OUT.gguf [--outtype f32|f16|bf16|q8_0]
                        [--model-name NAME] [--tokenizer-pre NAME] [--verbose]

MODEL_DIR holds config.json, model.safetensors (or model-0000x-of-0000y.safetensors with
model.safetensors.index.json, or pytorch_model*.bin) and the tokenizer files
(tokenizer.json / tokenizer_config.json / vocab.txt / tokenizer.model), plus modules.json
and 1_Pooling/config.json for sentence-transformers models (-> {arch}.pooling_type).

Rules kept from llama.cpp (see docs in the gguf package: gguf/constants.py, tensor_mapping.py):
  * HF tensor names are mapped with gguf.get_tensor_name_map(arch, n_layer).
  * 1-D tensors, *_norm.weight, biases (anything not ending in .weight), position_embd and
    token_types are always F32; other tensors take --outtype (Q8_0 falls back to F16 when a
    row is not a multiple of 32).
  * llama: q_proj/k_proj rows are permuted per head, (n_head, 2, hd/2, ...) -> (n_head, hd/2,
    2, ...), k with n_head_kv, so that ggml's "normal" RoPE (adjacent pairs) equals HF's
    rotate_half RoPE.
  * bert: "bert." prefix, gamma/beta, position_ids, pooler.*, cls.predictions*, cls.seq_rel*
    dropped/renamed; vocab written as tokenizer.ggml.model = "bert" with WordPiece pieces
    converted to the phantom-space form: "##xx" -> "xx", other non-control tokens -> "\u2581"+tok.
  * tokenizer.ggml.pre for BPE/WordPiece vocabs comes from the sha256 of the token ids of
    llama.cpp's check text (table below; the last match wins, as in llama.cpp).

Tensors are written in two passes (tensor info first, then data one tensor at a time), so
memory stays at about one tensor.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from hashlib import sha256
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gguf  # noqa: E402
import torch  # noqa: E402

log = logging.getLogger("convert_hf_to_gguf")

# --outtype -> (general.file_type, tensor type for 2-D weights)
OUTTYPES: dict[str, tuple[gguf.LlamaFileType, gguf.GGMLQuantizationType]] = {
    "f32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}

# The check text llama.cpp's get_vocab_base_pre() encodes; sha256(str(ids)) names the pre-tokenizer.
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f "
    "(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 "
    "33333333 3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f"
    "\u17a2\u17b6\u1785\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e "
    "------======= \u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440"
    "\u0441\u043a\u0438 ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
# (hash, name) in llama.cpp's order; a hash listed twice takes the later name, as there.
KNOWN_PRE: list[tuple[str, str]] = [
    ("d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c", "qwen2"),
    ("0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5", "llama-bpe"),
    ("049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754", "deepseek-llm"),
    ("347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821", "deepseek-coder"),
    ("0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f", "bert-bge"),
    ("8e62295832751ca1e8f92f2226f403dea30dc5165e448b5bfa05af5340c64ec7", "bert-bge-large"),
    ("3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454", "gpt-2"),
    ("e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea", "qwen2"),
    ("0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f", "jina-v2-en"),
    ("855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249", "smollm"),
    ("b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5", "deepseek-r1-qwen"),
]

ALWAYS_F32 = (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES, gguf.MODEL_TENSOR.FFN_GATE_INP)


# --------------------------------------------------------------------------------------------
# checkpoint access


def load_hparams(dir_model: Path) -> dict:
    """config.json as transformers' AutoConfig sees it (defaults filled in), like llama.cpp."""
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(dir_model, trust_remote_code=False).to_dict()
    except Exception as e:  # noqa: BLE001 - same fallback as llama.cpp
        log.warning("AutoConfig failed on %s (%s); reading config.json", dir_model, e)
        with open(dir_model / "config.json", encoding="utf-8") as f:
            return json.load(f)


def index_tensors(dir_model: Path) -> dict[str, tuple[tuple[int, ...], Callable[[], torch.Tensor]]]:
    """name -> (shape, loader) for every tensor of the checkpoint, without reading data."""
    out: dict[str, tuple[tuple[int, ...], Callable[[], torch.Tensor]]] = {}
    names = sorted(os.listdir(dir_model))
    st = [n for n in names if n.startswith("model") and n.endswith(".safetensors")]
    if st:
        from safetensors import safe_open

        for part in st:
            f = safe_open(str(dir_model / part), framework="pt", device="cpu")
            for name in f.keys():
                shape = tuple(f.get_slice(name).get_shape())
                out[name] = (shape, lambda f=f, name=name: f.get_tensor(name))
        return out
    bins = [n for n in names if n.startswith("pytorch_model") and n.endswith(".bin")]
    if not bins:
        raise FileNotFoundError(f"{dir_model}: no model*.safetensors nor pytorch_model*.bin")
    for part in bins:
        sd = torch.load(str(dir_model / part), map_location="cpu", mmap=True, weights_only=True)
        for name, t in sd.items():
            out[name] = (tuple(t.shape), lambda t=t: t)
    return out


# --------------------------------------------------------------------------------------------
# models


class Model:
    arch: gguf.MODEL_ARCH

    def __init__(self, dir_model: Path, outtype: str, model_name: str | None, tokenizer_pre: str | None):
        self.dir_model = dir_model
        self.ftype, self.wtype = OUTTYPES[outtype]
        self.model_name = model_name
        self.tokenizer_pre = tokenizer_pre
        self.hparams = load_hparams(dir_model)
        self.hf_arch = (self.hparams.get("architectures") or ["?"])[0]
        self.block_count = self.find_hparam(["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
        self.tensor_map = gguf.get_tensor_name_map(self.arch, self.block_count)
        self.rope = self.hparams.get("rope_parameters", self.hparams.get("rope_scaling")) or {}
        if "rope_theta" not in self.rope and "rope_theta" in self.hparams:
            self.rope = {**self.rope, "rope_theta": self.hparams["rope_theta"]}
        self.w = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[self.arch])

    def find_hparam(self, keys: list[str], optional: bool = False):
        for k in keys:
            if k in self.hparams and self.hparams[k] is not None:
                return self.hparams[k]
        if optional:
            return None
        raise KeyError(f"config.json: none of {keys}")

    # ---- tensors
    def filter_name(self, name: str) -> str | None:
        """HF name -> HF name to map, or None to drop."""
        if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
            return None
        return name

    def modify(self, name: str, data: torch.Tensor) -> torch.Tensor:
        return data

    def map_name(self, name: str) -> str:
        new = self.tensor_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"cannot map tensor {name!r} for {self.arch.name}")
        return new

    def is_tensor(self, new_name: str, key: gguf.MODEL_TENSOR, bid: int | None) -> bool:
        if key not in gguf.MODEL_TENSORS[self.arch]:
            return False
        base = gguf.TENSOR_NAMES[key]
        if "{bid}" in base:
            if bid is None:
                return False
            base = base.format(bid=bid)
        elif bid is not None:
            return False
        return new_name == base + ".weight"

    def out_type(self, new_name: str, shape: tuple[int, ...], bid: int | None) -> gguf.GGMLQuantizationType:
        if len(shape) <= 1 or new_name.endswith("_norm.weight") or not new_name.endswith(".weight"):
            return gguf.GGMLQuantizationType.F32
        if any(self.is_tensor(new_name, k, bid) for k in ALWAYS_F32):
            return gguf.GGMLQuantizationType.F32
        if self.wtype == gguf.GGMLQuantizationType.Q8_0:
            block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]
            if shape[-1] % block != 0:
                log.warning("%s: row of %d not a multiple of %d, falling back to F16", new_name, shape[-1], block)
                return gguf.GGMLQuantizationType.F16
        return self.wtype

    def plan(self) -> list[tuple[str, str, tuple[int, ...], gguf.GGMLQuantizationType, Callable[[], torch.Tensor]]]:
        plan = []
        for name, (shape, load) in index_tensors(self.dir_model).items():
            hf = self.filter_name(name)
            if hf is None:
                continue
            new = self.map_name(hf)
            bid = next((int(p) for p in hf.split(".") if p.isdecimal()), None)
            plan.append((hf, new, shape, self.out_type(new, shape, bid), load))
        return plan

    @staticmethod
    def encode(data: torch.Tensor, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
        if data.dtype not in (torch.float16, torch.float32):
            data = data.to(torch.float32)
        arr = data.contiguous().numpy()
        if qtype == gguf.GGMLQuantizationType.F32:
            return arr.astype(np.float32, copy=False)
        if qtype == gguf.GGMLQuantizationType.F16:
            return arr.astype(np.float16, copy=False)
        return gguf.quants.quantize(arr.astype(np.float32, copy=False), qtype)

    # ---- metadata
    def set_params(self) -> None:
        w, h = self.w, self.find_hparam
        w.add_block_count(self.block_count)
        if (v := h(["max_position_embeddings", "n_ctx", "n_positions", "max_length"], True)) is not None:
            w.add_context_length(v)
        if (v := h(["hidden_size", "n_embd", "dim"], True)) is not None:
            w.add_embedding_length(v)
        if (v := h(["intermediate_size", "n_inner", "hidden_dim"], True)) is not None:
            w.add_feed_forward_length(v)
        if (v := h(["num_attention_heads", "n_head", "n_heads"], True)) is not None:
            w.add_head_count(v)
        if (v := h(["num_key_value_heads", "n_kv_heads"], True)) is not None:
            w.add_head_count_kv(v)
        if self.hparams.get("is_causal") is False:
            w.add_causal_attention(False)
        rope_type = self.rope.get("rope_type", self.rope.get("type"))
        factor = self.rope.get("factor")
        if rope_type == "linear" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(factor)
        elif rope_type == "yarn" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(factor)
            w.add_rope_scaling_orig_ctx_len(self.rope["original_max_position_embeddings"])
        elif rope_type not in (None, "default"):
            raise NotImplementedError(f"rope type {rope_type!r} not supported by this converter")
        if (v := self.rope.get("rope_theta")) is not None:
            w.add_rope_freq_base(v)
        if (v := h(["rms_norm_eps", "norm_eps"], True)) is not None:
            w.add_layer_norm_rms_eps(v)
        if (v := h(["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"], True)) is not None:
            w.add_layer_norm_eps(v)
        if (v := self.hparams.get("head_dim")) is not None:
            w.add_key_length(v)
            w.add_value_length(v)
        w.add_file_type(self.ftype)

    def try_set_pooling_type(self) -> None:
        modules = self.dir_model / "modules.json"
        if not modules.is_file():
            return
        with open(modules, encoding="utf-8") as f:
            path = next((m["path"] for m in json.load(f) if m["type"].endswith("Pooling")), None)
        if path is None:
            return
        with open(self.dir_model / path / "config.json", encoding="utf-8") as f:
            pooling = json.load(f)
        if pooling.get("pooling_mode_mean_tokens"):
            pt = gguf.PoolingType.MEAN
        elif pooling.get("pooling_mode_cls_token"):
            pt = gguf.PoolingType.CLS
        elif pooling.get("pooling_mode_lasttoken"):
            pt = gguf.PoolingType.LAST
        else:
            raise NotImplementedError(f"{path}/config.json: only MEAN, CLS and LAST pooling supported")
        self.w.add_pooling_type(pt)

    # ---- vocab
    def vocab_base(self) -> tuple[list[str], list[int], str]:
        """Token strings and types from the HF tokenizer, and the pre-tokenizer name."""
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.dir_model)
        vocab = tok.get_vocab()
        n_vocab = self.hparams.get("vocab_size", len(vocab))
        if max(vocab.values()) >= n_vocab:
            raise ValueError(f"tokenizer has ids >= vocab_size {n_vocab}")
        pre = self.vocab_pre(tok)
        rev = {i: t for t, i in vocab.items()}
        added = tok.get_added_vocab()
        decoder = tok.added_tokens_decoder
        tokens: list[str] = []
        types: list[int] = []
        for i in range(n_vocab):
            if i not in rev:
                tokens.append(f"[PAD{i}]")
                types.append(gguf.TokenType.UNUSED)
                continue
            t = rev[i]
            if t in added:
                if not decoder[i].normalized:
                    t = tok.decode(tok.encode(t, add_special_tokens=False))
                if decoder[i].special or looks_special(t):
                    types.append(gguf.TokenType.CONTROL)
                else:
                    t = t.replace("\u2581", " ")
                    types.append(gguf.TokenType.USER_DEFINED)
            else:
                types.append(gguf.TokenType.NORMAL)
            tokens.append(t)
        return tokens, types, pre

    def vocab_pre(self, tok) -> str:
        if self.tokenizer_pre:
            return self.tokenizer_pre
        return tokenizer_pre_name(tok)

    def set_vocab_gpt2(self) -> None:
        tokens, types, pre = self.vocab_base()
        self.w.add_tokenizer_model("gpt2")
        self.w.add_tokenizer_pre(pre)
        self.w.add_token_list(tokens)
        self.w.add_token_types(types)
        gguf.SpecialVocab(self.dir_model, load_merges=True).add_to_gguf(self.w)

    def set_vocab_sentencepiece(self) -> None:
        from sentencepiece import SentencePieceProcessor

        path = self.dir_model / "tokenizer.model"
        if not path.is_file():
            raise FileNotFoundError(path)
        sp = SentencePieceProcessor()
        sp.LoadFromFile(str(path))
        n_vocab = self.hparams.get("vocab_size") or sp.vocab_size()
        tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
        scores = [-10000.0] * n_vocab
        types = [gguf.TokenType.UNUSED] * n_vocab
        for i in range(min(sp.vocab_size(), n_vocab)):
            t = gguf.TokenType.NORMAL
            if sp.IsUnknown(i):
                t = gguf.TokenType.UNKNOWN
            elif sp.IsControl(i):
                t = gguf.TokenType.CONTROL
            elif sp.IsUnused(i):
                t = gguf.TokenType.UNUSED
            elif sp.IsByte(i):
                t = gguf.TokenType.BYTE
            tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), t
        added_file = self.dir_model / "added_tokens.json"
        if added_file.is_file():
            with open(added_file, encoding="utf-8") as f:
                for key, i in json.load(f).items():
                    if i < n_vocab:
                        tokens[i], scores[i], types[i] = key.encode(), -1000.0, gguf.TokenType.USER_DEFINED
        cfg_file = self.dir_model / "tokenizer_config.json"
        if cfg_file.is_file():
            with open(cfg_file, encoding="utf-8") as f:
                for i, d in json.load(f).get("added_tokens_decoder", {}).items():
                    i = int(i)
                    if i >= n_vocab:
                        continue
                    t = d["content"]
                    if d.get("special") or looks_special(t):
                        types[i] = gguf.TokenType.CONTROL
                    else:
                        t = t.replace("\u2581", " ")
                        types[i] = gguf.TokenType.USER_DEFINED
                    tokens[i], scores[i] = t.encode(), -1000.0
        self.w.add_tokenizer_model("llama")
        self.w.add_tokenizer_pre("default")
        self.w.add_token_list(tokens)
        self.w.add_token_scores(scores)
        self.w.add_token_types(types)
        gguf.SpecialVocab(self.dir_model, n_vocab=len(tokens)).add_to_gguf(self.w)

    def set_vocab_llama_hf(self) -> None:
        v = gguf.LlamaHfVocab(self.dir_model)
        tokens, scores, types = [], [], []
        for text, score, ttype in v.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(ttype)
        self.w.add_tokenizer_model("llama")
        self.w.add_tokenizer_pre("default")
        self.w.add_token_list(tokens)
        self.w.add_token_scores(scores)
        self.w.add_token_types(types)
        gguf.SpecialVocab(self.dir_model, n_vocab=len(tokens)).add_to_gguf(self.w)

    def set_vocab(self) -> None:
        self.set_vocab_gpt2()

    # ---- output
    def write(self, outfile: Path) -> None:
        plan = self.plan()
        for hf, new, shape, qtype, _ in plan:
            if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                dt = np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16
                nbytes = int(np.prod(shape)) * np.dtype(dt).itemsize
                self.w.add_tensor_info(new, shape, np.dtype(dt), nbytes)
            else:
                bshape = gguf.quant_shape_to_byte_shape(shape, qtype)
                self.w.add_tensor_info(new, bshape, np.dtype(np.uint8), int(np.prod(bshape)), raw_dtype=qtype)
            log.info("%-32s %-10s -> %-5s %s", new, hf, qtype.name, "{" + ", ".join(map(str, reversed(shape))) + "}")

        total, shared, expert, n_expert = self.w.get_total_parameter_count()
        meta = gguf.Metadata.load(None, self.dir_model, self.model_name, total)
        if meta.name is None:
            meta.name = self.dir_model.name
        if meta.size_label is None and total > 0:
            meta.size_label = gguf.size_label(total, shared, expert, n_expert)
        self.w.add_type(gguf.GGUFType.MODEL)
        meta.set_gguf_meta_model(self.w)
        self.set_params()
        self.w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        self.set_vocab()

        tmp = outfile.with_name(outfile.name + ".tmp")
        self.w.write_header_to_file(path=tmp)
        self.w.write_kv_data_to_file()
        self.w.write_ti_data_to_file()
        for hf, new, shape, qtype, load in plan:
            data = self.modify(hf, load())
            if tuple(data.shape) != shape:
                raise AssertionError(f"{hf}: shape changed {shape} -> {tuple(data.shape)}")
            self.w.write_tensor_data(self.encode(data, qtype))
        self.w.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, outfile)


def tokenizer_pre_name(tok) -> str:
    """llama.cpp's tokenizer.ggml.pre for a HF tokenizer: sha256 of str(ids of CHKTXT)."""
    h = sha256(str(tok.encode(CHKTXT)).encode()).hexdigest()
    res = None
    for k, name in KNOWN_PRE:
        if k == h:
            res = name
    if res is None:
        raise NotImplementedError(f"unknown pre-tokenizer (chkhsh {h}); pass --tokenizer-pre NAME")
    return res


def looks_special(t: str) -> bool:
    return (
        t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (t.startswith("<|") and t.endswith("|>"))
        or (t.startswith("<\uff5c") and t.endswith("\uff5c>"))
        or (t.startswith("<unused") and t.endswith(">"))
    )


def llama_permute(w: torch.Tensor, n_head: int, n_head_kv: int | None) -> torch.Tensor:
    """HF (rotate_half) Q/K row order -> ggml/Meta (adjacent pairs) row order, per head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class LlamaModel(Model):
    arch = gguf.MODEL_ARCH.LLAMA

    def set_vocab(self) -> None:
        cfg = self.dir_model / "tokenizer_config.json"
        if cfg.is_file():
            with open(cfg, encoding="utf-8") as f:
                if (v := json.load(f).get("add_prefix_space")) is not None:
                    self.w.add_add_space_prefix(v)
        try:
            self.set_vocab_sentencepiece()
        except FileNotFoundError:
            try:
                self.set_vocab_llama_hf()
            except (FileNotFoundError, TypeError):
                self.set_vocab_gpt2()  # Llama 3

    def set_params(self) -> None:
        super().set_params()
        self.w.add_vocab_size(self.hparams["vocab_size"])
        rope_dim = self.hparams.get("head_dim") or self.hparams["hidden_size"] // self.hparams["num_attention_heads"]
        self.w.add_rope_dimension_count(rope_dim)

    def modify(self, name: str, data: torch.Tensor) -> torch.Tensor:
        n_head = self.find_hparam(["n_heads", "num_attention_heads"])
        n_kv = self.find_hparam(["n_kv_heads", "num_key_value_heads"], True)
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            return llama_permute(data, n_head, n_head)
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            return llama_permute(data, n_head, n_kv)
        return data


class Qwen2Model(Model):
    arch = gguf.MODEL_ARCH.QWEN2

    def set_vocab(self) -> None:
        try:
            self.set_vocab_sentencepiece()
        except FileNotFoundError:
            self.set_vocab_gpt2()

    def set_params(self) -> None:
        super().set_params()
        self.try_set_pooling_type()


class BertModel(Model):
    arch = gguf.MODEL_ARCH.BERT

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        labels = self.hparams.get("id2label")
        if labels and len(labels) == 2 and labels.get(0, labels.get("0")) == "LABEL_0":
            labels = None  # AutoConfig's dummy labels
        self.cls_out_labels = labels

    def set_params(self) -> None:
        super().set_params()
        self.w.add_causal_attention(False)
        self.try_set_pooling_type()
        if self.cls_out_labels:
            self.w.add_classifier_output_labels([v for _, v in sorted(self.cls_out_labels.items(), key=lambda kv: int(kv[0]))])

    def set_vocab(self) -> None:
        tokens, types, pre = self.vocab_base()
        self.w.add_token_type_count(self.hparams.get("type_vocab_size", 1))
        tokens = [t if ty == gguf.TokenType.CONTROL else (t[2:] if t.startswith("##") else "\u2581" + t)
                  for t, ty in zip(tokens, types)]
        self.w.add_tokenizer_model("bert")
        self.w.add_tokenizer_pre(pre)
        self.w.add_token_list(tokens)
        self.w.add_token_types(types)
        gguf.SpecialVocab(self.dir_model, n_vocab=len(tokens)).add_to_gguf(self.w)

    def filter_name(self, name: str) -> str | None:
        if name.startswith("bert."):
            name = name[5:]
        if name.endswith(".gamma"):
            name = name[:-6] + ".weight"
        if name.endswith(".beta"):
            name = name[:-5] + ".bias"
        if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
            return None
        if name.startswith(("cls.predictions", "cls.seq_relationship")):
            return None
        if self.cls_out_labels and name in ("classifier.weight", "classifier.bias"):
            name = "classifier.out_proj." + name.split(".")[-1]  # -> cls.output.*
        return super().filter_name(name)


ARCHS: dict[str, type[Model]] = {
    "LlamaForCausalLM": LlamaModel,
    "LlamaModel": LlamaModel,
    "Qwen2ForCausalLM": Qwen2Model,
    "BertModel": BertModel,
    "BertForMaskedLM": BertModel,
    "BertForSequenceClassification": BertModel,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="Hugging Face checkpoint directory")
    ap.add_argument("--outfile", "-o", type=Path, required=True)
    ap.add_argument("--outtype", choices=sorted(OUTTYPES), default="f16")
    ap.add_argument("--model-name", default=None, help="general.name (default: from the model card or dir name)")
    ap.add_argument("--tokenizer-pre", default=None, help="force tokenizer.ggml.pre (BPE/WordPiece vocabs)")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not args.verbose:  # "No handler for special token type cls": llama.cpp's own converter says it too
        logging.getLogger("gguf.vocab").setLevel(logging.ERROR)

    with open(args.model / "config.json", encoding="utf-8") as f:
        archs = json.load(f).get("architectures") or []
    cls = next((ARCHS[a] for a in archs if a in ARCHS), None)
    if cls is None:
        print(f"convert_hf_to_gguf: architecture {archs} not supported (have {sorted(ARCHS)})", file=sys.stderr)
        return 2
    model = cls(args.model, args.outtype, args.model_name, args.tokenizer_pre)
    model.write(args.outfile)
    print(f"wrote {args.outfile} ({args.outfile.stat().st_size} bytes, {gguf.MODEL_ARCH_NAMES[cls.arch]}, {args.outtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
