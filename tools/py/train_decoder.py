#!/usr/bin/env python3
"""train_decoder.py — train attncache's own small Llama-architecture decoder ("attnlm").

Three sub-commands (tools/train_decoder.sh chains them):

  tokenizer  --data DIR --out DIR            byte-level BPE (GPT-2 pre-tokenizer, no prefix space,
                                             BOS <s> = 0, EOS </s> = 1) trained on the training text
  train      --data DIR --tokenizer DIR --out DIR [--steps N | --time-budget S] [--seed S] ...
                                             LlamaForCausalLM (GQA, SwiGLU, RoPE, tied embeddings),
                                             bf16 autocast, AdamW, cosine schedule; evaluates and
                                             saves an HF checkpoint (fp16 safetensors + tokenizer)
  eval       --model DIR --data DIR          PyTorch label-scoring accuracy of a saved checkpoint

Data (all from ../shared/data or a copy of it) and the held-out rule of tools/cli/tasks.c:
  * never trained on: SST-2 dev.tsv, STS-B sts-dev.csv, AG News train.csv data rows i with
    i % 8 == 0, TREC train.txt rows i with i % 8 == 0 (i 0-based, empty lines not counted);
  * MR/SUBJ/MPQA/CR lines that repeat an SST-2 dev sentence (MR and SST come from the same
    Rotten Tomatoes snippets: ~800 of the 872 dev sentences occur in MR) are dropped, and
    MRPC sentences that occur in STS-B dev are dropped.
The LM stream mixes raw text (IMDB, SST-2 train, AG News/TREC train rows, MRPC, STS-B train,
MR/CR/SUBJ/MPQA) with prompts in exactly the format of tasks.c's task_build_prompt():
  "<instruction>\\n\\n" + k x "<Field>: <text>\\n<Answer>: <label>\\n\\n" + "<Field>: <q>\\n<Answer>:" + " <label>"
for SST-2 (and IMDB reviews, same task words), AG News and TREC, k = 0..8.
Every training row is 1024 (+1) tokens starting with BOS at a document start; documents are
"<s> text </s>" packed back to back (the last one cut at the row end).

Evaluation replicates eval.c exactly (same loaders, same seeded demonstration draw, prompt
tokenized with BOS, each label scored as the sum of log-probs of its continuation tokens).
"""
from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

HOLDOUT = 8  # AC_TASK_HOLDOUT in tools/cli/tasks.h
BOS_TEXT, EOS_TEXT = "<s>", "</s>"
C_SPACE = " \t\n\v\f\r"  # C isspace() in the C locale

LOG_FILE = None


def log(*a) -> None:
    msg = " ".join(str(x) for x in a)
    print(msg, flush=True)
    if LOG_FILE is not None:
        LOG_FILE.write(msg + "\n")
        LOG_FILE.flush()


# ----------------------------------------------------------------------------------------------
# data: loaders mirror tools/cli/tasks.c byte for byte where it matters


def read_lines(path: Path, fallback_latin1: bool = False) -> list[str]:
    """Lines as getline() returns them (no final empty piece). Invalid UTF-8 becomes U+FFFD
    (what the C tokenizer does), or Latin-1 for the raw-text-only sentiment files."""
    raw = path.read_bytes().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    out = []
    for b in raw:
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(b.decode("latin-1") if fallback_latin1 else b.decode("utf-8", errors="replace"))
    return out


def rtrim(s: str) -> str:
    return s.rstrip(C_SPACE)


@dataclass
class Ex:
    text: str
    label: int


def load_sst2(d: Path, split: str) -> list[Ex]:
    out = []
    for ln, line in enumerate(read_lines(d / "sst2" / f"{split}.tsv")):
        if ln == 0:
            continue
        line = rtrim(line)
        tab = line.rfind("\t")
        if tab < 0:
            continue
        sent, lab = rtrim(line[:tab]), int(line[tab + 1 :])
        if lab not in (0, 1) or not sent:
            raise ValueError(f"sst2/{split}.tsv:{ln + 1}: bad row")
        out.append(Ex(sent, lab))
    return out


def csv_field(s: str, p: int) -> tuple[str, int]:
    """tasks.c csv_field(): "..." with "" escapes and backslash-n -> space, or bare."""
    out = []
    n = len(s)
    if p < n and s[p] == '"':
        p += 1
        while p < n:
            c = s[p]
            if c == '"':
                if p + 1 < n and s[p + 1] == '"':
                    out.append('"')
                    p += 2
                    continue
                p += 1
                break
            if c == "\\" and p + 1 < n and s[p + 1] == "n":
                out.append(" ")
                p += 2
                continue
            out.append(c)
            p += 1
    else:
        while p < n and s[p] != ",":
            out.append(s[p])
            p += 1
    if p < n and s[p] == ",":
        p += 1
    return "".join(out), p


def load_agnews(d: Path) -> tuple[list[Ex], list[Ex]]:
    """(train pool, held-out): data row i held out when i % 8 == 0."""
    train, held = [], []
    row = 0
    for line in read_lines(d / "agnews" / "train.csv"):
        line = rtrim(line)
        if not line:
            continue
        c, p = csv_field(line, 0)
        t, p = csv_field(line, p)
        ds, _ = csv_field(line, p)
        lab = int(c) - 1
        if not 0 <= lab <= 3:
            raise ValueError(f"agnews row {row + 1}: bad class {c!r}")
        (held if row % HOLDOUT == 0 else train).append(Ex(f"{rtrim(t)}. {rtrim(ds)}", lab))
        row += 1
    return train, held


def load_trec(d: Path) -> tuple[list[Ex], list[Ex]]:
    train, held = [], []
    row = 0
    for line in read_lines(d / "trec" / "train.txt"):
        line = rtrim(line)
        if not line:
            continue
        if not ("0" <= line[0] <= "5") or len(line) < 2 or line[1] != " ":
            raise ValueError(f"trec row {row + 1}: bad label")
        (held if row % HOLDOUT == 0 else train).append(Ex(line[2:], int(line[0])))
        row += 1
    return train, held


@dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    field: str
    answer: str
    labels: tuple[str, ...]
    default_shots: int


SST2 = Task("sst2", "Is the sentiment of the review positive or negative?", "Review", "Sentiment",
            ("negative", "positive"), 0)
AGNEWS = Task("agnews-fewshot", "Classify the topic of the news article: world, sports, business or science.",
              "Article", "Topic", ("world", "sports", "business", "science"), 8)
TREC = Task("trec", "What does the question ask for: description, entity, abbreviation, person, location or number?",
            "Question", "Type", ("description", "entity", "abbreviation", "person", "location", "number"), 6)

M64 = (1 << 64) - 1


def build_prompt(t: Task, pool: list[Ex], query: str, k: int, seed: int) -> str:
    """tasks.c task_build_prompt(): k demonstrations drawn with xorshift64 seeded by `seed`,
    balanced over classes in label order (i % n_labels), never the query itself."""
    parts = [f"{t.instruction}\n\n"]
    s = (seed * 0x9E3779B97F4A7C15 + 12345) & M64
    if s == 0:
        s = 1
    n = len(pool)
    nl = len(t.labels)
    for i in range(k):
        if n == 0:
            break
        want, pick = i % nl, -1
        for _ in range(1000):
            s ^= (s << 13) & M64
            s ^= s >> 7
            s ^= (s << 17) & M64
            c = s % n
            if pool[c].label == want and pool[c].text != query:
                pick = c
                break
        if pick < 0:
            continue
        parts.append(f"{t.field}: {pool[pick].text}\n{t.answer}: {t.labels[want]}\n\n")
    parts.append(f"{t.field}: {query}\n{t.answer}:")
    return "".join(parts)


def alnum(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def drop_overlaps(lines: list[str], held: list[str], min_len: int = 20) -> tuple[list[str], int]:
    """Drop lines whose alnum-normalized form equals a held-out sentence, contains one (of at
    least min_len chars) or is contained in one (when at least min_len chars)."""
    hn = [alnum(h) for h in held]
    hset = set(hn)
    hbig = "\x00".join(hn)
    norm = [alnum(x) for x in lines]
    big = "\x00".join(norm)
    starts, pos = [], 0
    for x in norm:
        starts.append(pos)
        pos += len(x) + 1
    bad = set()
    for h in set(hn):
        if len(h) < min_len:
            continue
        i = big.find(h)
        while i >= 0:
            bad.add(bisect.bisect_right(starts, i) - 1)
            i = big.find(h, i + 1)
    for i, x in enumerate(norm):
        if x in hset or (len(x) >= min_len and x in hbig):
            bad.add(i)
    return [x for i, x in enumerate(lines) if i not in bad], len(bad)


def imdb_clean(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<br\s*/?>", " ", text)).strip()


def truncate_words(text: str, n: int) -> str:
    w = text.split(" ")
    return text if len(w) <= n else " ".join(w[:n])


def load_corpus(d: Path) -> dict:
    """Everything training may see (held-out rows already removed) + the eval sets."""
    sst2_train, sst2_dev = load_sst2(d, "train"), load_sst2(d, "dev")
    ag_train, ag_held = load_agnews(d)
    trec_train, trec_held = load_trec(d)
    stats = {}

    imdb = []
    for ln, line in enumerate(read_lines(d / "imdb" / "train.tsv")):
        f = line.split("\t", 2)
        if len(f) == 3 and f[0] in ("0", "1"):
            txt = imdb_clean(f[2])
            if txt:
                imdb.append(Ex(txt, int(f[0])))

    stsb_dev = []
    for line in read_lines(d / "stsb" / "sts-dev.csv"):
        f = rtrim(line).split("\t")
        if len(f) >= 7:
            stsb_dev += [f[5], f[6]]
    stsb_train = []
    for line in read_lines(d / "stsb" / "sts-train.csv"):
        f = rtrim(line).split("\t")
        if len(f) >= 7:
            stsb_train += [f[5], f[6]]
    mrpc = []
    for ln, line in enumerate(read_lines(d / "mrpc" / "train.txt")):
        if ln == 0:
            continue
        f = rtrim(line).split("\t")
        if len(f) >= 5:
            mrpc += [f[3], f[4]]
    mrpc, stats["mrpc_dropped_stsb_dev"] = drop_overlaps(mrpc, stsb_dev, min_len=10**9)
    stsb_train, stats["stsb_train_dropped_stsb_dev"] = drop_overlaps(stsb_train, stsb_dev, min_len=10**9)

    dev_sents = [e.text for e in sst2_dev]
    senti = []
    for name in ("mr", "cr", "subj", "mpqa"):
        lines = [rtrim(x)[2:].strip() for x in read_lines(d / "sentiment" / f"{name}.txt", True) if len(rtrim(x)) > 2]
        kept, nd = drop_overlaps(lines, dev_sents)
        stats[f"{name}_dropped_sst2_dev"] = nd
        senti += kept

    raw = ([e.text for e in imdb] + [e.text for e in sst2_train] + [e.text for e in ag_train]
           + [e.text for e in trec_train] + mrpc + stsb_train + senti)
    raw = [x for x in raw if x.strip()]
    stats.update(imdb=len(imdb), sst2_train=len(sst2_train), sst2_dev=len(sst2_dev), agnews_train=len(ag_train),
                 agnews_held=len(ag_held), trec_train=len(trec_train), trec_held=len(trec_held),
                 mrpc_sents=len(mrpc), stsb_train_sents=len(stsb_train), sentiment_sents=len(senti),
                 raw_docs=len(raw), raw_chars=sum(len(x) for x in raw))
    return dict(sst2_train=sst2_train, sst2_dev=sst2_dev, ag_train=ag_train, ag_held=ag_held,
                trec_train=trec_train, trec_held=trec_held, imdb=imdb, raw=raw, stats=stats)


# ----------------------------------------------------------------------------------------------
# tokenizer


def train_tokenizer(data: Path, out: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    c = load_corpus(data)
    log("corpus:", json.dumps(c["stats"]))

    def texts():
        yield from c["raw"]
        for t, pool in ((SST2, c["sst2_train"]), (AGNEWS, c["ag_train"]), (TREC, c["trec_train"])):
            for e in pool:  # the 0-shot prompt frame of every training example
                yield f"{t.instruction}\n\n{t.field}: {e.text}\n{t.answer}: {t.labels[e.label]}"
        for e in c["imdb"]:
            yield f"{SST2.field}: {truncate_words(e.text, 64)}\n{SST2.answer}: {SST2.labels[e.label]}"

    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[BOS_TEXT, EOS_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t0 = time.time()
    tok.train_from_iterator(texts(), trainer=trainer)
    assert tok.token_to_id(BOS_TEXT) == 0 and tok.token_to_id(EOS_TEXT) == 1
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS_TEXT} $A", pair=f"{BOS_TEXT} $A $B",
                                                       special_tokens=[(BOS_TEXT, 0)])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    write_tokenizer_config(out)
    h = hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    log(f"tokenizer: {tok.get_vocab_size()} tokens in {time.time() - t0:.1f}s, sha256 {h}")
    for t in (SST2, AGNEWS, TREC):
        log(f"  {t.name} labels:", {w: tok.encode(" " + w, add_special_tokens=False).ids for w in t.labels})


def write_tokenizer_config(out: Path) -> None:
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS_TEXT, "eos_token": EOS_TEXT,
           "add_bos_token": True, "add_eos_token": False, "add_prefix_space": False, "model_max_length": 1024,
           "clean_up_tokenization_spaces": False}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))


def encode_many(tok, texts: list[str]) -> list[np.ndarray]:
    encs = tok.encode_batch(texts, add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.int32) for e in encs]


# ----------------------------------------------------------------------------------------------
# training stream: documents are token pieces whose concatenation equals the tokenization of the
# whole prompt string (piece boundaries sit where the GPT-2 regex always splits; checked at start)

G: dict = {}  # filled before the worker pool forks


def build_stream_data(tok, c: dict, imdb_words: int) -> dict:
    def frame(t: Task, pool: list[Ex]) -> dict:
        q = encode_many(tok, [f"{t.field}: {e.text}\n{t.answer}:" for e in pool])
        lab = np.array([e.label for e in pool], dtype=np.int32)
        return dict(
            task=t, q=q, lab=lab, by_label=[np.nonzero(lab == i)[0] for i in range(len(t.labels))],
            head=encode_many(tok, [t.instruction + "\n"])[0],
            lab_nl=encode_many(tok, [f" {w}\n" for w in t.labels]),
            lab_end=encode_many(tok, [f" {w}" for w in t.labels]),
        )

    imdb_pool = [Ex(truncate_words(e.text, imdb_words), e.label) for e in c["imdb"]]
    return dict(
        raw=encode_many(tok, c["raw"]),
        nl=encode_many(tok, ["\n"])[0],
        frames={"sst2": frame(SST2, c["sst2_train"]), "agnews": frame(AGNEWS, c["ag_train"]),
                "trec": frame(TREC, c["trec_train"]), "imdb": frame(SST2, imdb_pool)},
        pools={"sst2": c["sst2_train"], "agnews": c["ag_train"], "trec": c["trec_train"], "imdb": imdb_pool},
    )


SOURCES = ("raw", "sst2", "agnews", "trec", "imdb")
KMAX = {"sst2": 8, "agnews": 8, "trec": 8, "imdb": 2}


def prompt_doc(f: dict, nl: np.ndarray, rng: np.random.Generator, kmax: int, ret_meta: bool = False):
    n_lab = len(f["by_label"])
    q = int(rng.integers(len(f["q"])))
    k = int(rng.integers(kmax + 1))
    if rng.random() < 0.7:  # tasks.c order: label i % n_labels
        seq = [i % n_lab for i in range(k)]
    else:
        seq = [int(x) for x in rng.integers(n_lab, size=k)]
    parts = [np.array([0], np.int32), f["head"], nl]
    demos = []
    for lab in seq:
        cand = f["by_label"][lab]
        if len(cand) == 0:
            continue
        j = int(cand[rng.integers(len(cand))])
        if j == q:
            continue
        demos.append(j)
        parts += [f["q"][j], f["lab_nl"][lab], nl]
    y = int(f["lab"][q])
    parts += [f["q"][q], f["lab_end"][y], np.array([1], np.int32)]
    doc = np.concatenate(parts)
    return (doc, q, demos) if ret_meta else doc


def make_batch(step: int) -> np.ndarray:
    """Batch `step` of the run: [B][T+1] int32, a pure function of (seed, step)."""
    g = G
    rng = np.random.default_rng([g["seed"], step])
    B, T = g["batch"], g["seq"]
    out = np.empty((B, T + 1), dtype=np.int32)
    p = g["doc_probs"]
    for r in range(B):
        parts, n = [], 0
        while n < T + 1:
            s = SOURCES[int(rng.choice(len(SOURCES), p=p))]
            if s == "raw":
                body = g["data"]["raw"][int(rng.integers(len(g["data"]["raw"])))]
                doc = np.concatenate([[0], body, [1]]).astype(np.int32)
            else:
                doc = prompt_doc(g["data"]["frames"][s], g["data"]["nl"], rng, KMAX[s])
            parts.append(doc)
            n += len(doc)
        out[r] = np.concatenate(parts)[: T + 1]
    return out


def check_pieces(tok, data: dict, n: int, seed: int) -> None:
    """Assembled prompt pieces == tokenizing the whole prompt string (else the model would be
    trained on token sequences the C tokenizer never produces)."""
    rng = np.random.default_rng(seed)
    bad = 0
    for i in range(n):
        name = ("sst2", "agnews", "trec", "imdb")[i % 4]
        f, pool = data["frames"][name], data["pools"][name]
        t = f["task"]
        doc, q, demos = prompt_doc(f, data["nl"], rng, KMAX[name], ret_meta=True)
        s = f"{t.instruction}\n\n" + "".join(
            f"{t.field}: {pool[j].text}\n{t.answer}: {t.labels[pool[j].label]}\n\n" for j in demos)
        s += f"{t.field}: {pool[q].text}\n{t.answer}: {t.labels[pool[q].label]}"
        ref = [0] + tok.encode(s, add_special_tokens=False).ids + [1]
        if ref != doc.tolist():
            bad += 1
    if bad:
        raise AssertionError(f"prompt pieces differ from whole-string tokenization in {bad}/{n} prompts")
    log(f"piece check: {n} prompts tokenize identically as pieces and as whole strings")


# ----------------------------------------------------------------------------------------------
# model


def make_config(a, vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=a.dim, intermediate_size=a.ffn, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, max_position_embeddings=a.seq,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, hidden_act="silu", initializer_range=0.02,
        attention_bias=False, mlp_bias=False, use_cache=False, architectures=["LlamaForCausalLM"],
    )


# ----------------------------------------------------------------------------------------------
# evaluation (PyTorch, same prompts as eval.c)


def continuation(tok, prompt: str, ptoks: list[int], label: str) -> list[int]:
    jt = tok.encode(prompt + label, add_special_tokens=True).ids
    if len(jt) > len(ptoks) and jt[: len(ptoks)] == ptoks:
        return jt[len(ptoks):]
    return tok.encode(label, add_special_tokens=False).ids


@dataclass
class EvalItem:
    prompt: list[int]      # BOS + prompt tokens
    conts: list[list[int]]  # per label: its continuation tokens
    label: int


def eval_items(tok, t: Task, pool: list[Ex], queries: list[Ex], shots: int) -> list[EvalItem]:
    items = []
    for i, q in enumerate(queries):
        prompt = build_prompt(t, pool, q.text, shots, i + 1)
        p = tok.encode(prompt, add_special_tokens=True).ids
        items.append(EvalItem(p, [continuation(tok, prompt, p, " " + w) for w in t.labels], q.label))
    return items


def score_items(model, items: list[EvalItem], device: str, max_tokens: int = 65536,
                out_scores: list | None = None) -> tuple[float, float]:
    """Accuracy (%) and mean prompt tokens. A label's score is the sum of the log-probs of its
    continuation tokens; when every label is one token, one forward of the prompt scores all
    (as ac_score_labels does). Only the positions needed go through the LM head."""
    import torch

    # work units: (item, label or -1 for "all single-token labels", sequence)
    units = []
    for ii, it in enumerate(items):
        if all(len(ct) == 1 for ct in it.conts):
            units.append((ii, -1, it.prompt))
        else:
            units += [(ii, li, it.prompt + ct) for li, ct in enumerate(it.conts)]
    units.sort(key=lambda u: len(u[2]))
    scores = np.full((len(items), max(len(it.conts) for it in items)), -np.inf)
    i = 0
    with torch.no_grad():
        while i < len(units):
            j = i + 1
            while j < len(units) and (j - i + 1) * len(units[j][2]) <= max_tokens:
                j += 1
            chunk = units[i:j]
            L = max(len(u[2]) for u in chunk)
            ids = torch.zeros((len(chunk), L), dtype=torch.long)
            for r, (_, _, s) in enumerate(chunk):
                ids[r, : len(s)] = torch.tensor(s)
            h = model.model(input_ids=ids.to(device)).last_hidden_state  # [n][L][D] (final norm applied)
            rows, pos, tgt, owner = [], [], [], []
            for r, (ii, li, s) in enumerate(chunk):
                n0 = len(items[ii].prompt)
                if li < 0:
                    rows.append(r)
                    pos.append(n0 - 1)
                    owner.append((ii, -1))
                else:
                    for k in range(n0, len(s)):
                        rows.append(r)
                        pos.append(k - 1)
                        owner.append((ii, li, s[k]))
            lp = torch.log_softmax(model.lm_head(h[rows, pos]).float(), dim=-1).cpu().numpy()
            for o, row in zip(owner, lp):
                if o[1] < 0:
                    it = items[o[0]]
                    for li, ct in enumerate(it.conts):
                        scores[o[0], li] = row[ct[0]]
                else:
                    ii, li, t = o
                    scores[ii, li] = (0.0 if np.isinf(scores[ii, li]) else scores[ii, li]) + row[t]
            i = j
    if out_scores is not None:
        out_scores.append(scores)
    correct = sum(int(np.argmax(scores[k, : len(it.conts)]) == it.label) for k, it in enumerate(items))
    return 100.0 * correct / len(items), float(np.mean([len(it.prompt) for it in items]))


EVALS = [  # (name, task, pool key, query key, shots)
    ("sst2-0shot", SST2, "sst2_train", "sst2_dev", 0),
    ("sst2-8shot", SST2, "sst2_train", "sst2_dev", 8),
    ("agnews-8shot", AGNEWS, "ag_train", "ag_held", 8),
    ("trec-6shot", TREC, "trec_train", "trec_held", 6),
    ("trec-0shot", TREC, "trec_train", "trec_held", 0),
]


def run_evals(model, tok, c: dict, device: str, limit: int = 0) -> dict:
    res = {}
    for name, t, pk, qk, shots in EVALS:
        q = c[qk][:limit] if limit else c[qk]
        t0 = time.time()
        items = eval_items(tok, t, c[pk], q, shots)
        acc, mp = score_items(model, items, device)
        counts = np.bincount([e.label for e in q], minlength=len(t.labels))
        res[name] = dict(accuracy=round(acc, 2), n=len(q), shots=shots, mean_prompt_tokens=round(mp, 1),
                         majority_baseline=round(100.0 * counts.max() / len(q), 2),
                         chance=round(100.0 / len(t.labels), 2))
        log(f"  eval {name:13s} acc {acc:6.2f}%  n {len(q):4d}  mean prompt {mp:6.1f} tok  "
            f"(majority {res[name]['majority_baseline']:.2f}%, chance {res[name]['chance']:.2f}%)  "
            f"{time.time() - t0:.1f}s")
    return res


# ----------------------------------------------------------------------------------------------
# train


def cmd_train(a) -> int:
    global LOG_FILE
    import multiprocessing as mp

    t_start = time.time()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    LOG_FILE = open(out / "train.log", "w")
    log("train_decoder:", " ".join(sys.argv[1:]))
    tok = load_tokenizer(Path(a.tokenizer))
    V = tok.get_vocab_size()
    c = load_corpus(Path(a.data))
    log("corpus:", json.dumps(c["stats"]))
    data = build_stream_data(tok, c, a.imdb_words)
    check_pieces(tok, data, a.piece_check, a.seed)
    n_raw_tok = sum(len(x) for x in data["raw"])
    log(f"tokenized in {time.time() - t_start:.1f}s: raw {len(data['raw'])} docs {n_raw_tok} tokens; "
        + ", ".join(f"{k} {len(f['q'])} queries {sum(len(x) for x in f['q'])} tok" for k, f in data["frames"].items()))

    # per-document source probabilities from the wanted token shares
    rng = np.random.default_rng(a.seed + 7)
    share = dict(zip(SOURCES, [float(x) for x in a.mix.split(",")]))
    mean_len = {"raw": float(np.mean([len(x) + 2 for x in data["raw"]]))}
    for s in SOURCES[1:]:
        mean_len[s] = float(np.mean([len(prompt_doc(data["frames"][s], data["nl"], rng, KMAX[s]))
                                     for _ in range(2000)]))
    w = np.array([share[s] / mean_len[s] for s in SOURCES])
    G.update(seed=a.seed, batch=a.batch, seq=a.seq, data=data, doc_probs=w / w.sum())
    log("mix (token share, mean doc tokens, doc prob):",
        ", ".join(f"{s} {share[s]:.2f}/{mean_len[s]:.0f}/{G['doc_probs'][i]:.3f}" for i, s in enumerate(SOURCES)))

    pool = mp.get_context("fork").Pool(a.workers)  # before CUDA is touched

    import torch
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() and not a.cpu else "cpu"
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    cfg = make_config(a, V)
    model = LlamaForCausalLM(cfg)
    model.config._attn_implementation = "sdpa"
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}), torch {torch.__version__}, "
        f"params {n_params} ({n_params * 2 / 2**20:.2f} MiB in f16), config {json.dumps(cfg.to_diff_dict())}")
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    amp = dict(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")

    fwd = model
    if a.compile and device == "cuda" and not a.deterministic:
        fwd = torch.compile(model)

    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    def attn_ctx():
        return sdpa_kernel([SDPBackend.MATH]) if a.deterministic else contextlib.nullcontext()

    def loss_fn(f, batch):
        x = batch[:, :-1]
        y = batch[:, 1:]
        with torch.autocast(**amp), attn_ctx():
            logits = f(input_ids=x).logits
        return F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))

    def make_opt(lr_peak):
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": nodecay, "weight_decay": 0.0}],
                                 lr=lr_peak, betas=(0.9, 0.95), eps=1e-8, fused=device == "cuda")

    def to_dev(b):
        return torch.from_numpy(b.astype(np.int64)).to(device, non_blocking=True)

    def train_steps(opt, steps, lr_at, first=0, deadline=None, on_log=None):
        """Run `steps` optimizer steps on batches first..first+steps-1; returns list of losses."""
        losses = []
        it = pool.imap(make_batch, range(first, first + steps), chunksize=2)
        for s in range(steps):
            batch = to_dev(next(it))
            for g in opt.param_groups:
                g["lr"] = lr_at(s)
            loss = loss_fn(fwd, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            opt.step()
            losses.append(loss.detach())
            if on_log:
                on_log(s, losses, gn)
            if deadline is not None and time.time() > deadline:
                log(f"!! deadline reached: stopped after {s + 1}/{steps} steps")
                break
        return [float(x) for x in losses]

    def reset():
        model.load_state_dict(init_state)

    # compile warm-up, timing, and a determinism check (same init + same batches twice)
    steps = a.steps
    det = None
    if a.calib_steps > 0:
        t0 = time.time()
        try:
            train_steps(make_opt(a.lr * 0.1), 2, lambda s: a.lr * 0.1)
        except Exception as e:  # noqa: BLE001 — fall back to eager if compile fails
            if fwd is model:
                raise
            log(f"torch.compile failed ({type(e).__name__}: {str(e)[:300]}); eager mode")
            fwd = model
            reset()
            train_steps(make_opt(a.lr * 0.1), 2, lambda s: a.lr * 0.1)
        if device == "cuda":
            torch.cuda.synchronize()
        log(f"warm-up (compile) {time.time() - t0:.1f}s")
        runs = []
        for r in range(2):
            reset()
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.time()
            ls = train_steps(make_opt(a.lr), a.calib_steps, lambda s: a.lr * (s + 1) / a.calib_steps)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = (time.time() - t0) / a.calib_steps
            csum = float(sum(p.detach().double().sum() for p in model.parameters()))
            runs.append((ls, csum, dt))
        det = runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
        t_step = min(runs[0][2], runs[1][2])
        log(f"calibration: {t_step * 1000:.1f} ms/step, {a.batch * a.seq / t_step / 1e6:.2f} M tok/s; "
            f"two identical {a.calib_steps}-step runs bitwise equal: {det} "
            f"(losses {runs[0][0][-1]:.6f} vs {runs[1][0][-1]:.6f})")
        if not steps:
            steps = max(100, int(a.time_budget / t_step) // 50 * 50)
            log(f"--time-budget {a.time_budget}s -> --steps {steps}")
    if not steps:
        raise SystemExit("give --steps or --time-budget with --calib-steps > 0")

    # the run
    reset()
    torch.manual_seed(a.seed)
    opt = make_opt(a.lr)
    warm = max(1, min(a.warmup, steps // 10))

    def lr_at(s):
        if s < warm:
            return a.lr * (s + 1) / warm
        p = (s - warm) / max(1, steps - warm)
        return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))

    quick = []
    if a.eval_every:
        for name, t, pk, qk, shots in EVALS[:4]:
            quick.append((name, eval_items(tok, t, c[pk], c[qk][: a.quick_eval], shots)))

    def quick_eval(step):
        model.eval()
        with torch.autocast(**amp):
            accs = [f"{name} {score_items(model, items, device)[0]:.1f}" for name, items in quick]
        model.train()
        log(f"  quick eval at step {step} (first {a.quick_eval} held-out, bf16): " + ", ".join(accs))

    t_train = time.time()
    hist = []

    def on_log(s, losses, gn):
        if (s + 1) % a.log_every == 0 or s + 1 == steps:
            lv = float(torch.stack(losses[-a.log_every:]).mean())
            el = time.time() - t_train
            tps = (s + 1) * a.batch * a.seq / el
            hist.append(dict(step=s + 1, loss=round(lv, 4), lr=lr_at(s), time=round(el, 1)))
            log(f"step {s + 1:6d}/{steps}  loss {lv:.4f}  lr {lr_at(s):.2e}  gnorm {float(gn):.3f}  "
                f"{el:7.1f}s  {tps / 1e6:.2f} M tok/s")
        if a.eval_every and (s + 1) % a.eval_every == 0 and s + 1 < steps:
            quick_eval(s + 1)

    deadline = t_start + a.deadline if a.deadline else None
    losses = train_steps(opt, steps, lr_at, first=1_000_000, deadline=deadline, on_log=on_log)
    if device == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t_train
    pool.terminate()
    if device == "cuda":
        log(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    final_loss = float(np.mean(losses[-a.log_every:]))
    log(f"trained {len(losses)} steps ({len(losses) * a.batch * a.seq / 1e6:.1f} M tokens) in {train_s:.1f}s, "
        f"final loss (mean of last {a.log_every}) {final_loss:.4f}")

    # evaluate the weights as they will be exported: rounded to f16, computed in f32
    model.eval()
    model.half()
    model.float()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    t0 = time.time()
    res = run_evals(model, tok, c, device, a.eval_limit)
    log(f"eval {time.time() - t0:.1f}s")

    model.half()
    model.config.use_cache = False
    model.save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))
    write_tokenizer_config(out)
    summary = dict(steps=len(losses), steps_planned=steps, train_seconds=round(train_s, 1),
                   tokens=len(losses) * a.batch * a.seq, final_loss=round(final_loss, 4), params=n_params,
                   bitwise_deterministic_check=det, eval=res, loss_history=hist, corpus=c["stats"],
                   args=vars(a), torch=torch.__version__, device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
                   total_seconds=round(time.time() - t_start, 1))
    (out / "eval.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"saved {out} in {time.time() - t_start:.1f}s total")
    return 0


def cmd_eval(a) -> int:
    import torch
    from transformers import LlamaForCausalLM

    tok = load_tokenizer(Path(a.model))
    c = load_corpus(Path(a.data))
    device = "cuda" if torch.cuda.is_available() and not a.cpu else "cpu"
    model = LlamaForCausalLM.from_pretrained(a.model, dtype=torch.float32).to(device).eval()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    res = run_evals(model, tok, c, device, a.eval_limit)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


def cmd_tokenizer(a) -> int:
    train_tokenizer(Path(a.data), Path(a.out), a.vocab)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("tokenizer")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--vocab", type=int, default=8192)

    p = sub.add_parser("train")
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True, help="dir with tokenizer.json (from `tokenizer`)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--ffn", type=int, default=704)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-frac", type=float, default=0.1)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--steps", type=int, default=0, help="optimizer steps (0: from --time-budget)")
    p.add_argument("--time-budget", type=float, default=300.0, help="seconds of training when --steps is 0")
    p.add_argument("--calib-steps", type=int, default=10, help="timing/determinism probe steps (0: none)")
    p.add_argument("--deadline", type=float, default=0, help="stop training this many s after start (safety)")
    p.add_argument("--mix", default="0.45,0.15,0.14,0.08,0.18", help="token shares: " + ",".join(SOURCES))
    p.add_argument("--imdb-words", type=int, default=200)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--piece-check", type=int, default=400)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-limit", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=1000, help="quick held-out eval every N steps (0: off)")
    p.add_argument("--quick-eval", type=int, default=200, help="examples per task in the quick eval")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; ~3.5x faster)")
    p.add_argument("--deterministic", action="store_true",
                   help="bitwise-reproducible GPU training: eager mode, math SDPA (no compile); ~4.5x slower. "
                        "Flash/cuDNN attention backward and compiled kernels are not bitwise reproducible")
    p.add_argument("--cpu", action="store_true")

    p = sub.add_parser("eval")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--eval-limit", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--cpu", action="store_true")
    a = ap.parse_args(argv)
    return {"tokenizer": cmd_tokenizer, "train": cmd_train, "eval": cmd_eval}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
