#!/usr/bin/env python3
"""Throughput and p50/p99 latency of embedding servers under 1, 8 and 64
concurrent clients: `attncache serve` (without and with its attention cache)
against llama.cpp's server (same GGUF file) and Infinity (the same MiniLM weights, ONNX Runtime),
same thread count, loopback only.

IMDB reviews longer than the model's 512 positions are cut first (--max-tokens, at a word
boundary, counted by `attncache tokenize`), so that every server embeds the same texts.
Each client is a thread with one keep-alive HTTP connection that sends
OpenAI-style `POST /v1/embeddings` requests ({"input": [text], "model": ...};
both servers speak it) back to back, one text per request, for --seconds
after --warmup seconds. Reported per (server, data set, clients): requests/s,
input tokens/s where the server reports usage, p50 and p99 latency (ms),
errors. Nothing is written unless --json FILE is given: the figures are the
lead's to record (docs/PERFORMANCE.md), from a quiet machine.

Servers (each started, measured and stopped in turn; one at a time):
  attncache        BIN serve -m MODEL -t T --workers W --max-batch-requests 64
  attncache+cache  the same with --cache DIR (a cache built from the --cache-corpus
                   sentences with `BIN build`; a fraction of the requests repeat them)
  llama.cpp        llama-server -m MODEL --embedding --pooling mean -t T -tb T
                   -c CTX -b CTX -ub CTX --parallel P (give --llama-server PATH)
  infinity         infinity_emb v2 --engine optimum --pooling-method mean --batch-size 64
                   --url-prefix /v1 (ONNX Runtime on optimum-cli's export of the same MiniLM;
                   OMP_NUM_THREADS=T; give --infinity-dir, made by bench/setup_peers.sh --infinity;
                   --infinity-engine torch runs its sentence-transformers engine instead)

llama-server: bench/setup_peers.sh unpacks llama.cpp's source in /work/peers/llama.cpp/src and
builds only llama-bench and llama-embedding; build the server from the same tree with
    cmake -S /work/peers/llama.cpp/src -B /work/peers/llama.cpp/build-server -DCMAKE_BUILD_TYPE=Release \\
          -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF
    cmake --build /work/peers/llama.cpp/build-server --target llama-server -j
or use llama-cpp-python[server] from PyPI (`python -m llama_cpp.server --model MODEL --embedding true
--n_threads T --port P`: give it with --llama-cmd). Without either, only attncache is measured.

Example (the lead's run):
    python3 bench/server_compare.py --bin build/attncache \\
        --model models-cache/all-MiniLM-L6-v2-f32.gguf --threads 4 \\
        --llama-server /work/peers/llama.cpp/build-server/bin/llama-server \\
        --data sst2=../shared/data/sst2/train.tsv,imdb=../shared/data/imdb/train.tsv \\
        --clients 1,8,64 --seconds 20 --json /tmp/server_compare.json

Two attncache builds side by side (e.g. main's against a branch's), alternating, in one run:
    python3 bench/server_compare.py --bin build/attncache --other-bin main=build-main/attncache \
        --servers attncache,llama.cpp --llama-server PATH --clients 1 --seconds 10 --rounds 3

The load generator is Python threads: past a few thousand requests/s it is the bottleneck
(the report says how busy its process was: compare with the servers' CPU time).
"""
import argparse
import http.client
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_health(port, proc, log_path, timeout=300):
    t_end = time.time() + timeout
    while time.time() < t_end:
        if proc.poll() is not None:
            sys.exit(f"server exited early (status {proc.returncode}); log {log_path}:\n" + open(log_path).read()[-3000:])
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"server on port {port} not healthy after {timeout} s; log {log_path}")


def start(cmd, port, log_path, env=None, cwd=None):
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    wait_health(port, proc, log_path)
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load_texts(path, n, seed):
    """First column of an SST-2 style TSV (header line) or the third of the IMDB one (no header)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, ln in enumerate(f):
            cols = ln.rstrip("\n").split("\t")
            if i == 0 and cols[0] == "sentence":
                continue
            t = cols[0] if len(cols) <= 2 else cols[-1]
            t = t.strip()
            if t:
                out.append(t)
    random.Random(seed).shuffle(out)
    return out[:n]


def cut_to_limit(bin_path, model, texts, limit):
    """Texts of more than `limit` tokens (with the model's specials, as `attncache tokenize --special`
    counts them) cut at a word boundary until they fit, so that every server embeds the same text
    (llama-server refuses an over-long input where attncache --auto-truncate cuts it)."""
    texts = [" ".join(t.split()) for t in texts]
    for _ in range(20):
        p = subprocess.run([bin_path, "tokenize", "-m", model, "--special"], input="\n".join(texts) + "\n",
                           capture_output=True, text=True, check=True)
        counts = [len(ln.split()) for ln in p.stdout.splitlines()]
        over = [i for i, n in enumerate(counts) if n > limit]
        if not over:
            return texts
        for i in over:
            keep = max(1, int(len(texts[i]) * (limit - 2) / counts[i]) - 1)
            texts[i] = texts[i][:keep].rsplit(" ", 1)[0] if " " in texts[i][:keep] else texts[i][:keep]
    sys.exit("cut_to_limit: texts still over the limit after 20 passes")


def client(port, model, texts, start_at, warm_end, t_end, lat, errs, toks, seed):
    rng = random.Random(seed)
    conn = None
    while time.time() < start_at:
        time.sleep(0.001)
    while True:
        now = time.time()
        if now >= t_end:
            break
        body = json.dumps({"input": [texts[rng.randrange(len(texts))]], "model": model})
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            ok = r.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            data = b""
            if conn is not None:
                conn.close()
            conn = None
        dt = time.perf_counter() - t0
        if now < warm_end:
            continue
        if not ok:
            errs.append(1)
            continue
        lat.append(dt)
        try:
            toks.append(json.loads(data).get("usage", {}).get("prompt_tokens", 0))
        except ValueError:
            pass
    if conn is not None:
        conn.close()


def embed_one(port, model, text):
    """One embedding from a running server (the same route the clients use), L2-normalised."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", "/v1/embeddings", json.dumps({"input": [text], "model": model}), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status != 200:
        sys.exit(f"embedding check: status {r.status}: {data[:300]!r}")
    v = json.loads(data)["data"][0]["embedding"]
    n = sum(x * x for x in v) ** 0.5 or 1.0
    return [x / n for x in v]


def measure(port, model, texts, clients, warmup, seconds):
    lat, errs, toks = [], [], []
    t0 = time.time() + 0.2
    warm_end = t0 + warmup
    t_end = warm_end + seconds
    cpu0 = time.process_time()
    th = [threading.Thread(target=client, args=(port, model, texts, t0, warm_end, t_end, lat, errs, toks, i))
          for i in range(clients)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    cpu = time.process_time() - cpu0
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {"clients": clients, "requests": len(lat), "errors": len(errs), "req_per_s": len(lat) / seconds,
            "tokens_per_s": sum(toks) / seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "loadgen_cpu_share": cpu / (warmup + seconds)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build/attncache")
    ap.add_argument("--model", default="models-cache/all-MiniLM-L6-v2-f32.gguf")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workers", type=int, default=1, help="attncache serve --workers (threads are per worker)")
    ap.add_argument("--data", default="sst2=../shared/data/sst2/train.tsv",
                    help="NAME=TSV[,NAME=TSV...] (SST-2 style, or IMDB's label/id/text)")
    ap.add_argument("--texts", type=int, default=2000, help="distinct texts per data set")
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--ctx", type=int, default=512, help="llama-server context / batch size (>= longest input)")
    ap.add_argument("--max-tokens", type=int, default=512,
                    help="cut longer texts (IMDB reviews) to this many tokens first, the same text for every "
                         "server: llama-server answers an over-long input with an error (0: no cut)")
    ap.add_argument("--llama-server", default="", help="path of llama.cpp's llama-server")
    ap.add_argument("--llama-cmd", default="",
                    help="another llama.cpp server command, {port} {model} {threads} substituted "
                         "(e.g. llama-cpp-python's: 'python -m llama_cpp.server --model {model} --embedding true "
                         "--n_threads {threads} --port {port} --host 127.0.0.1')")
    ap.add_argument("--infinity-dir", default="",
                    help="Infinity's model folder (model.onnx + tokenizer files: bench/setup_peers.sh --infinity makes "
                         "../peers/infinity-minilm); its venv's infinity_emb is found beside it (../infvenv) or by --infinity-bin")
    ap.add_argument("--infinity-bin", default="", help="the infinity_emb command (default: DIR/../infvenv/bin/infinity_emb)")
    ap.add_argument("--infinity-engine", default="optimum", choices=["optimum", "torch"])
    ap.add_argument("--cache-corpus", type=int, default=1000,
                    help="attncache+cache: build the cache from this many of each data set's texts "
                         "(the requests draw from the same texts: the cache's best case; 0: skip the cached run)")
    ap.add_argument("--servers", default="attncache,attncache+cache,llama.cpp,infinity")
    ap.add_argument("--json", default="", help="write every result to this file")
    ap.add_argument("--other-bin", default="",
                    help="LABEL=PATH[,LABEL=PATH...]: further attncache builds, each measured as a server named "
                         "LABEL (like 'attncache', without the cache) beside the others, e.g. a build of main "
                         "against this branch's, so that their ratio comes from one run")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every server this many times per data set, alternating (ratios of "
                         "side-by-side runs on a shared machine)")
    args = ap.parse_args()
    other_bins = dict(item.split("=", 1) for item in args.other_bin.split(",") if item)

    data = {}
    for item in args.data.split(","):
        name, _, path = item.partition("=")
        data[name] = load_texts(path, args.texts, 7)
        if args.max_tokens > 0:
            data[name] = cut_to_limit(args.bin, args.model, data[name], args.max_tokens)
    clients = [int(c) for c in args.clients.split(",")]
    tmp = tempfile.mkdtemp(prefix="server_compare_")
    results = []
    model_id = os.path.basename(args.model).rsplit(".gguf", 1)[0]
    wanted = args.servers.split(",")
    ref = {}  # data set -> the first server's embedding of its first texts (every server must agree)
    try:
        for dname, texts in data.items():
            runs = []
            if "attncache" in wanted:
                runs.append(("attncache", None))
            for label in other_bins:
                runs.append((label, None))
            if "attncache+cache" in wanted and args.cache_corpus > 0:
                cdir = os.path.join(tmp, "cache-" + dname)
                corpus = os.path.join(tmp, "corpus-" + dname + ".txt")
                with open(corpus, "w", encoding="utf-8") as f:
                    f.write("\n".join(t.replace("\n", " ") for t in texts[: args.cache_corpus]) + "\n")
                subprocess.run([args.bin, "build", "-m", args.model, "-i", corpus, "-o", cdir, "-t", str(args.threads), "--skip-bad"],
                               check=True, stdout=subprocess.DEVNULL)
                runs.append(("attncache+cache", cdir))
            if "llama.cpp" in wanted and (args.llama_server or args.llama_cmd):
                runs.append(("llama.cpp", None))
            if "infinity" in wanted and args.infinity_dir:
                runs.append(("infinity", None))
            for rnd, (name, cdir) in [(r, x) for r in range(args.rounds) for x in runs]:
                port = free_port()
                if name.startswith("attncache") or name in other_bins:
                    cmd = [other_bins.get(name, args.bin), "serve", "-m", args.model, "--port", str(port), "-q", "-t", str(args.threads),
                           "--workers", str(args.workers), "--max-batch-requests", "64",
                           "--max-concurrent-requests", str(max(clients) * 2), "--auto-truncate"]
                    if cdir:
                        cmd += ["--cache", cdir]
                elif name == "llama.cpp" and args.llama_server:
                    cmd = [args.llama_server, "-m", args.model, "--embedding", "--pooling", "mean", "--host", "127.0.0.1",
                           "--port", str(port), "-t", str(args.threads), "-tb", str(args.threads), "-c",
                           str(args.ctx * max(clients)), "-b", str(args.ctx), "-ub", str(args.ctx), "--parallel",
                           str(max(clients))]
                elif name == "llama.cpp":
                    cmd = shlex.split(args.llama_cmd.format(port=port, model=args.model, threads=args.threads))
                env = cwd = None
                if name == "infinity":
                    # started inside its model folder with --model-id . (see bench/setup_peers.sh)
                    ibin = args.infinity_bin or os.path.join(os.path.dirname(os.path.abspath(args.infinity_dir)),
                                                             "infvenv", "bin", "infinity_emb")
                    cwd = os.path.abspath(args.infinity_dir)
                    cmd = [ibin, "v2", "--model-id", "." if args.infinity_engine == "optimum" else cwd,
                           "--engine", args.infinity_engine, "--device", "cpu", "--pooling-method", "mean",
                           "--batch-size", "64", "--host", "127.0.0.1", "--port", str(port), "--url-prefix", "/v1",
                           "--served-model-name", model_id, "--no-model-warmup"]
                    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1",
                               INFINITY_ANONYMOUS_USAGE_STATS="0")
                log = os.path.join(tmp, f"{name}-{dname}.log")
                proc = start(cmd, port, log, env=env, cwd=cwd)
                try:
                    # the same vectors? (pooling, normalisation, truncation): cosine with the first server's
                    vecs = [embed_one(port, model_id, t) for t in texts[:8]]
                    if dname not in ref:
                        ref[dname] = (name, vecs)
                    else:
                        cos = min(sum(a * b for a, b in zip(u, v)) for u, v in zip(ref[dname][1], vecs))
                        print(f"{name:16s} {dname:5s} embeddings vs {ref[dname][0]}: smallest cosine {cos:.6f} (8 texts)",
                              flush=True)
                        if cos < 0.999:
                            sys.exit(f"{name} does not embed like {ref[dname][0]} (cosine {cos:.4f}): not comparable")
                    for c in clients:
                        r = measure(port, model_id, texts, c, args.warmup, args.seconds)
                        r.update(server=name, data=dname, threads=args.threads, round=rnd)
                        results.append(r)
                        print(f"{name:16s} {dname:5s} clients {c:3d}: {r['req_per_s']:8.1f} req/s "
                              f"{r['tokens_per_s']:9.0f} tok/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                              f"errors {r['errors']}  (load generator {100 * r['loadgen_cpu_share']:.0f}% of a core)",
                              flush=True)
                finally:
                    stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.rounds > 1 or other_bins:  # medians over the rounds, and each server's ratio to the others, per cell
        cells = {}
        for r in results:
            cells.setdefault((r["data"], r["clients"]), {}).setdefault(r["server"], []).append(r["req_per_s"])
        print("medians of %d round(s), req/s:" % args.rounds)
        for (dname, c), by in cells.items():
            med = {k: sorted(v)[len(v) // 2] for k, v in by.items()}
            names = list(med)
            ratios = "  ".join(f"{a}/{b} {med[a] / med[b]:.2f}x" for i, a in enumerate(names) for b in names[i + 1:]
                               if med[b] > 0)
            print(f"  {dname:5s} clients {c:3d}: " + "  ".join(f"{k} {v:.1f}" for k, v in med.items()) + "  | " + ratios)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "threads": args.threads, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
