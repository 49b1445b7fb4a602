#!/usr/bin/env python3
"""attncache's prefix K/V cache beside llama.cpp's prompt cache (llama-server,
one slot, cache_prompt) on the same query stream, same GGUF, same threads.

    build/attncache eval --task agnews-fewshot -m models/attnlm-8k.gguf --demos shared \
        --limit 300 --dump-prompts /tmp/ag_ids.txt --prefix-cache 256 -t 2
    python3 bench/prefix_vs_llamacpp.py --server PATH/llama-server -m models/attnlm-8k.gguf \
        --ids /tmp/ag_ids.txt -t 2 --attncache build/attncache

For each prompt (token ids as attncache scores them, BOS first) llama-server
is asked for one token with cache_prompt on: it keeps the slot's tokens and
evaluates only what follows their common prefix, then the last position's
logits — the work attncache's label scoring does with its prefix cache. The
stream is timed request by request (wall time, localhost HTTP included) and
run twice, cache on and off; then, with --attncache, the same prompts through
`attncache eval --prefix-cache` (its exact and prefix streams, as it prints
them). Nothing here is side by side within one process: on a shared machine,
compare only runs taken close together.
"""
import argparse
import json
import re
import subprocess
import sys
import time
import urllib.request


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def stream(port, prompts, cache):
    total, evaluated = 0.0, 0
    for ids in prompts:
        t0 = time.perf_counter()
        r = post(port, {"prompt": ids, "n_predict": 1, "cache_prompt": cache, "temperature": 0})
        total += time.perf_counter() - t0
        evaluated += r.get("timings", {}).get("prompt_n", len(ids))
    return total, evaluated


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--ids", required=True, help="token ids, one prompt a line (eval --dump-prompts)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--port", type=int, default=18777)
    ap.add_argument("--attncache", help="the attncache binary: also time its eval --prefix-cache")
    ap.add_argument("--eval-args", default="--task agnews-fewshot --demos shared",
                    help="eval arguments that reproduce the dumped prompts (with --limit = their count)")
    a = ap.parse_args()
    prompts = [[int(x) for x in line.split()] for line in open(a.ids) if line.strip()]
    n_tok = sum(len(p) for p in prompts)
    ctx = max(len(p) for p in prompts) + 8
    srv = subprocess.Popen([a.server, "-m", a.model, "-t", str(a.threads), "-tb", str(a.threads), "-c", str(ctx),
                            "-np", "1", "--host", "127.0.0.1", "--port", str(a.port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{a.port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except Exception:  # noqa: BLE001 (not up yet)
                time.sleep(0.1)
        post(a.port, {"prompt": prompts[0], "n_predict": 1, "cache_prompt": False})  # warm-up
        post(a.port, {"prompt": [prompts[0][0]], "n_predict": 1, "cache_prompt": True})  # empty the slot's prefix
        t_cache, ev_cache = stream(a.port, prompts, True)
        t_full, ev_full = stream(a.port, prompts, False)
    finally:
        srv.terminate()
        srv.wait()
    print(f"{len(prompts)} prompts, {n_tok} tokens, {a.threads} threads")
    print(f"llama-server, prompt cache off: {t_full:8.3f} s  ({ev_full} tokens evaluated)")
    print(f"llama-server, prompt cache on:  {t_cache:8.3f} s  ({ev_cache} tokens evaluated)  "
          f"{t_full / t_cache:.3f}x over cache off")
    if a.attncache:
        cmd = [a.attncache, "eval", "-m", a.model, *a.eval_args.split(), "--limit", str(len(prompts)),
               "--prefix-cache", "256", "-t", str(a.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows = re.findall(r"^\S+\s+\S+\s+accuracy\s+[\d.]+\s+\d+\s+([\d.]+)", out, re.M)
        if len(rows) >= 2:
            t_exact, t_prefix = float(rows[0]), float(rows[1])
            print(f"attncache, exact:               {t_exact:8.3f} s")
            print(f"attncache, prefix cache:        {t_prefix:8.3f} s  {t_exact / t_prefix:.3f}x over exact; "
                  f"{t_cache / t_prefix:.3f}x llama-server's prompt cache")
        else:
            print(out, file=sys.stderr)
            sys.exit("could not read attncache's eval output")


if __name__ == "__main__":
    main()
