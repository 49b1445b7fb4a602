#!/usr/bin/env python3
"""Replay a request stream with repeats against `attncache serve --cache-insert
--cache-max-bytes B --cache-evict P` and report the cache hit rate of each
eviction policy (the server's own compaction, not a model of it).

Stream: SST-2 train sentences (the first column of train.tsv), a pool of
--pool sentences, --requests requests drawn with Zipf(--zipf) popularity, one
sentence per request, sent one at a time (the hit or miss of each request is
then the policy's alone, not the batching's). Two streams:
  stationary  the same popularity ranking throughout;
  drifting    the ranking reshuffled every --phase requests (yesterday's
              favourites go cold: recency matters more than counts).
Each (stream, policy) pair starts from an empty cache directory and a fresh
server. Output: one line per pair with hits/lookups after a warm-up of the
first --warmup requests, evictions and compactions.

  python3 bench/server_evict_replay.py --bin build/attncache \
      --model models-cache/all-MiniLM-L6-v2-sst2-f32.gguf \
      --data ../shared/data/sst2/train.tsv [--budget 1500000] [--requests 3000]

The stdlib only (urllib); loopback only; the servers are stopped at the end.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request


def metrics(url):
    out = {}
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("#") or " " not in line:
                continue
            k, v = line.rsplit(" ", 1)
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def post(url, text):
    body = json.dumps({"inputs": [text]}).encode()
    req = urllib.request.Request(url + "/embed", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()


def start(args, cache_dir, policy):
    log = open(os.path.join(cache_dir + ".log"), "w+")
    cmd = [args.bin, "serve", "-m", args.model, "--port", "0", "-q", "-t", str(args.threads),
           "--cache", cache_dir, "--cache-insert", "--cache-max-bytes", str(args.budget), "--cache-evict", policy]
    p = subprocess.Popen(cmd, stderr=log, stdout=subprocess.DEVNULL)
    for _ in range(600):
        log.seek(0)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read())
        if m:
            url = "http://127.0.0.1:" + m.group(1)
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return p, url
            except Exception:
                pass
        if p.poll() is not None:
            break
        time.sleep(0.1)
    p.kill()
    log.seek(0)
    sys.exit("server did not start:\n" + log.read())


def stream(pool, n, zipf, phase, drifting, seed):
    rng = random.Random(seed)
    weights = [1.0 / (r + 1) ** zipf for r in range(len(pool))]
    order = list(range(len(pool)))
    rng.shuffle(order)
    out = []
    for i in range(n):
        if drifting and i and i % phase == 0:
            rng.shuffle(order)
        out.append(pool[order[rng.choices(range(len(pool)), weights)[0]]])
    return out


def run(args, reqs, policy, root):
    cache_dir = os.path.join(root, "c-" + policy)
    shutil.rmtree(cache_dir, ignore_errors=True)
    p, url = start(args, cache_dir, policy)
    try:
        base = None
        for i, t in enumerate(reqs):
            if i == args.warmup:
                base = metrics(url)
            post(url, t)
            if args.pace:
                time.sleep(args.pace)
        # the last inserts are still queued: the hit counts stand as they are
        m = metrics(url)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    look = m.get("attncache_cache_lookups_total", 0) - base.get("attncache_cache_lookups_total", 0)
    hits = m.get("attncache_cache_hits_total", 0) - base.get("attncache_cache_hits_total", 0)
    return hits, look, m.get("attncache_cache_evictions_total", 0), m.get("attncache_cache_compactions_total", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build/attncache")
    ap.add_argument("--model", default="models-cache/all-MiniLM-L6-v2-sst2-f32.gguf")
    ap.add_argument("--data", default="../shared/data/sst2/train.tsv")
    ap.add_argument("--pool", type=int, default=1500)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--phase", type=int, default=500)
    ap.add_argument("--budget", type=int, default=1500000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pace", type=float, default=0.0, help="seconds between requests (lets the recorder keep up)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--streams", default="stationary,drifting")
    ap.add_argument("--policies", default="lru,lfu")
    args = ap.parse_args()
    with open(args.data, encoding="utf-8") as f:
        next(f)
        sents = [ln.split("\t")[0].strip() for ln in f]
    sents = [s for s in dict.fromkeys(sents) if len(s.split()) >= 4]  # distinct, not single phrases
    random.Random(args.seed).shuffle(sents)
    pool = sents[: args.pool]
    root = tempfile.mkdtemp(prefix="evict_replay_")
    try:
        for name in args.streams.split(","):
            reqs = stream(pool, args.requests, args.zipf, args.phase, name == "drifting", args.seed)
            distinct = len(set(reqs))
            for pol in args.policies.split(","):
                t0 = time.time()
                hits, look, ev, comp = run(args, reqs, pol, root)
                print(f"{name:10s} {pol}: hit rate {hits / max(look, 1):.3f} ({int(hits)}/{int(look)} after "
                      f"{args.warmup} warm-up requests; {distinct} distinct inputs), {int(ev)} evictions in "
                      f"{int(comp)} compactions, budget {args.budget} B, {time.time() - t0:.0f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
