#!/usr/bin/env python3
"""AG News 8-shot with shared demonstrations on the committed decoder: attncache's prefix K/V
cache against llama.cpp's prompt cache, same GGUF, same threads, same prompts (token ids),
side by side in one run (issue 13, item 4: "against llama.cpp's prompt cache ... >= 1.0x").

One command (the defaults are the issue's setting; run it on an idle machine):

    python3 bench/prefix_compare.py --n 300 --rounds 5 --json /tmp/prefix_compare.json

The stream: the first --n held-out AG News prompts exactly as
`attncache eval --task agnews-fewshot --demos shared` builds them (written by
`eval --dump-prompts`: text, token ids with BOS, the four labels' token ids). Every prompt
starts with the same instruction and 8 demonstrations (~470 tokens) and ends with its own
article (~40-90 tokens). The requests go one after another over one keep-alive connection
(one client); the time is the client's wall clock over the whole stream, tokenization, HTTP
and JSON included.

Engines, each a fresh process per round (so each round starts with an empty cache and pays
for the demonstrations once), one at a time, the order alternating between rounds:
  attncache         BIN serve -m MODEL -t T --prefix-cache MB: POST /score {"inputs": prompt
                    text, "labels": [...]} (the server tokenizes the text; the token count it
                    answers is checked against the dump's)
  llama.cpp         llama-server -m MODEL -t T -tb T -c CTX -np 1 (one slot, its prompt cache):
                    POST /completion {"prompt": [token ids], "cache_prompt": true, "n_predict": 1,
                    "n_probs": N}; the labels' log-probabilities are read from the first token's
                    top_logprobs (a label outside the top N counts as -inf; the report says how
                    often); timings.prompt_n / cache_n give the tokens computed and reused
  attncache-eval    (in-process, no HTTP) BIN eval --task agnews-fewshot --demos shared --limit N
                    --prefix-cache MB -t T --json: the exact stream and the reuse stream side by
                    side, as docs/CACHE.md reports them (the issue's "5x over no reuse")
Optional (--engines): attncache-exact (serve without --prefix-cache) and llama.cpp-exact
("cache_prompt": false), the no-reuse baselines of the two servers.

Reported: per engine the median stream time over the rounds, the ratio llama.cpp /
attncache per round and its median (> 1: attncache faster), accuracy of each, the agreement
of the two servers' predictions and the largest log-probability difference between them, the
tokens llama.cpp computed and reused (its timings), attncache's from /metrics, and llama.cpp's
own compute time (sum of prompt_ms + predicted_ms, no HTTP) beside attncache-eval's in-process
time. Nothing is written to the repository; --json FILE keeps every figure. Timings on a
machine shared with other work are noisy: say so when quoting them.

llama-server: built from the tree bench/setup_peers.sh unpacks (it builds it too, in
build-native/bin). llama-cpp-python's server is not used: its /v1/completions takes text,
not token ids, and would re-tokenize.
"""
import argparse
import http.client
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    """A server process on a free loopback port, healthy before use; stop() ends it (SIGTERM)."""

    def __init__(self, cmd_of_port, log_path, env=None, timeout=300):
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd_of_port(self.port), stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        t_end = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"server exited early ({self.proc.returncode}); {log_path}:\n" + open(log_path).read()[-3000:])
            try:
                st, _ = self.call("GET", "/health", None, timeout=5)
                if st == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.time() > t_end:
                self.stop()
                sys.exit(f"server not healthy after {timeout} s; {log_path}")
            time.sleep(0.1)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def call(self, method, path, body, timeout=600):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, json.dumps(body) if body is not None else None, {"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def post(self, path, body):
        """POST over the kept connection; the parsed JSON answer (exits on an error status)."""
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            sys.exit(f"POST {path} on port {self.port}: {r.status} {data[:300]!r}")
        return json.loads(data)

    def stop(self):
        if getattr(self, "conn", None):
            self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def metrics(srv, prefix):
    st, data = srv.call("GET", "/metrics", None)
    out = {}
    for ln in data.decode().splitlines():
        if ln.startswith(prefix):
            k, _, v = ln.partition(" ")
            out[k] = float(v)
    return out


def run_attncache(a, prompts, tmp, rnd, prefix=True):
    cmd = lambda port: [a.bin, "serve", "-m", a.model, "--port", str(port), "-q", "-t", str(a.threads)] + (
        ["--prefix-cache", str(a.prefix_mb)] if prefix else [])
    srv = Server(cmd, os.path.join(tmp, f"attncache-{int(prefix)}-{rnd}.log"))
    try:
        srv.post("/score", {"inputs": "world sports business science", "labels": ["world"]})  # warm-up, no shared prefix
        m0 = metrics(srv, "attncache_prefix_")
        scores = []
        t0 = time.perf_counter()
        for p in prompts:
            d = srv.post("/score", {"inputs": p["prompt"], "labels": [l.lstrip(" ") for l in p["labels"]]})[0]
            scores.append([d["logprobs"][l.lstrip(" ")] for l in p["labels"]])
            if d["tokens"] != len(p["tokens"]):
                sys.exit(f"attncache tokenized prompt {p['index']} to {d['tokens']} tokens, the dump has {len(p['tokens'])}")
        sec = time.perf_counter() - t0
        m1 = metrics(srv, "attncache_prefix_")
    finally:
        srv.stop()
    r = {"seconds": sec, "scores": scores}
    if prefix:
        r["tokens_reused"] = m1["attncache_prefix_tokens_reused_total"] - m0.get("attncache_prefix_tokens_reused_total", 0)
        r["tokens_computed"] = m1["attncache_prefix_tokens_computed_total"] - m0.get("attncache_prefix_tokens_computed_total", 0)
    return r


def run_llama(a, prompts, tmp, rnd, cache_prompt=True):
    cmd = lambda port: [a.llama_server, "-m", a.model, "--host", "127.0.0.1", "--port", str(port), "-t", str(a.threads),
                        "-tb", str(a.threads), "-c", str(a.ctx), "-np", "1", "-b", str(a.ctx), "-ub", str(a.ubatch),
                        "--no-webui"] + a.llama_arg
    env = dict(kv.split("=", 1) for kv in a.llama_env)
    srv = Server(cmd, os.path.join(tmp, f"llama-{int(cache_prompt)}-{rnd}.log"), env)
    bos = prompts[0]["tokens"][0]
    warm = [bos] + [t for p in prompts[:1] for ids in p["label_tokens"] for t in ids] * 4
    try:
        srv.post("/completion", {"prompt": warm, "n_predict": 1, "cache_prompt": cache_prompt, "n_probs": 1})
        scores, prompt_n, cache_n, ms, outside = [], 0, 0, 0.0, 0
        t0 = time.perf_counter()
        for p in prompts:
            d = srv.post("/completion", {"prompt": p["tokens"], "n_predict": 1, "cache_prompt": cache_prompt,
                                         "n_probs": a.n_probs, "temperature": 0, "return_tokens": False})
            top = {e["id"]: e["logprob"] for e in d["completion_probabilities"][0]["top_logprobs"]}
            s = []
            for ids in p["label_tokens"]:
                if len(ids) != 1:
                    sys.exit("a label of several tokens: llama-server's /completion gives no prompt log-probabilities")
                s.append(top.get(ids[0], -math.inf))
                outside += ids[0] not in top
            scores.append(s)
            t = d["timings"]
            prompt_n += t["prompt_n"]
            cache_n += t["cache_n"]
            ms += t["prompt_ms"] + t["predicted_ms"]
            if t["prompt_n"] + t["cache_n"] != len(p["tokens"]):
                sys.exit(f"llama-server saw {t['prompt_n']}+{t['cache_n']} tokens of prompt {p['index']}, "
                         f"sent {len(p['tokens'])}")
        sec = time.perf_counter() - t0
    finally:
        srv.stop()
    return {"seconds": sec, "scores": scores, "tokens_computed": prompt_n, "tokens_reused": cache_n,
            "compute_seconds": ms / 1000.0, "labels_outside_top": outside}


def run_eval(a, tmp, rnd):
    js = os.path.join(tmp, f"eval-{rnd}.json")
    subprocess.run([a.bin, "eval", "--task", "agnews-fewshot", "-m", a.model, "--data", a.data, "--demos", "shared",
                    "--shots", str(a.shots), "--limit", str(a.n), "--prefix-cache", str(a.prefix_mb), "-t",
                    str(a.threads), "--json", js], check=True, stdout=subprocess.DEVNULL)
    d = json.load(open(js))
    p = d["prefix"]
    return {"seconds": p["seconds"], "exact_seconds": d["seconds"], "accuracy": p["value"],
            "exact_accuracy": d["value"], "tokens_reused": p["tokens_reused"], "tokens_computed": p["tokens_computed"],
            "speedup_vs_exact": p["speedup_e2e"], "amdahl_bound": p["amdahl_bound"]}


def accuracy(scores, prompts):
    return 100.0 * sum(max(range(len(s)), key=lambda k: s[k]) == p["label"] for s, p in zip(scores, prompts)) / len(prompts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(root, "build/attncache"))
    ap.add_argument("--model", default=os.path.join(root, "models/attnlm-8k.gguf"))
    ap.add_argument("--data", default=os.path.join(os.path.dirname(root), "shared/data"))
    ap.add_argument("--llama-server", default="/work/peers/llama.cpp/build-native/bin/llama-server")
    ap.add_argument("--n", type=int, default=300, help="prompts in the stream (held-out AG News rows, in order)")
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefix-mb", type=int, default=256, help="attncache --prefix-cache budget (MiB)")
    ap.add_argument("--ctx", type=int, default=1024, help="llama-server -c and -b (the model's context is 1024)")
    ap.add_argument("--ubatch", type=int, default=512, help="llama-server -ub")
    ap.add_argument("--llama-env", action="append", default=[], metavar="K=V",
                    help="environment of llama-server only (repeatable), e.g. OMP_WAIT_POLICY=passive: on a machine "
                         "loaded by other work, llama.cpp's spinning OpenMP threads lose most of their time (pp512 "
                         "of this model: 450 tokens/s spinning, 6970 passive, with 2 threads on 2 busy cores)")
    ap.add_argument("--llama-arg", action="append", default=[], metavar="ARG",
                    help="one more llama-server argument (repeatable; --llama-arg=-fa --llama-arg=on)")
    ap.add_argument("--n-probs", type=int, default=40, help="llama-server n_probs (top log-probabilities returned)")
    ap.add_argument("--engines", default="attncache,llama.cpp,attncache-eval",
                    help="any of attncache, llama.cpp, attncache-eval, attncache-exact, llama.cpp-exact")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    engines = a.engines.split(",")
    for e in engines:
        if e not in ("attncache", "llama.cpp", "attncache-eval", "attncache-exact", "llama.cpp-exact"):
            sys.exit(f"unknown engine {e}")
    if any(e.startswith("llama") for e in engines) and not os.access(a.llama_server, os.X_OK):
        sys.exit(f"{a.llama_server} not found: bash bench/setup_peers.sh builds it (or give --llama-server)")

    tmp = tempfile.mkdtemp(prefix="prefix_compare_")
    try:
        dump = os.path.join(tmp, "prompts.jsonl")
        subprocess.run([a.bin, "eval", "--task", "agnews-fewshot", "-m", a.model, "--data", a.data, "--demos", "shared",
                        "--shots", str(a.shots), "--limit", str(a.n), "--dump-prompts", dump], check=True,
                       stderr=subprocess.DEVNULL)
        try:
            prompts = [json.loads(l) for l in open(dump)]
            if not prompts or not all(isinstance(p, dict) and "label_tokens" in p for p in prompts):
                raise ValueError
        except ValueError:
            sys.exit(f"{a.bin} eval --dump-prompts did not write JSON lines with token ids, gold labels and label "
                     "token ids (an attncache whose --dump-prompts writes bare ids?)")
        ntok = sum(len(p["tokens"]) for p in prompts)
        shared = len(os.path.commonprefix([p["tokens"] for p in prompts]))
        print(f"stream: {len(prompts)} AG News {a.shots}-shot prompts, shared demonstrations; {ntok} tokens "
              f"(mean {ntok / len(prompts):.0f}, {shared} shared by all); {a.threads} threads; {a.rounds} rounds",
              flush=True)
        runs = {e: [] for e in engines}
        for rnd in range(a.rounds):
            order = engines if rnd % 2 == 0 else engines[::-1]
            for e in order:
                if e == "attncache":
                    r = run_attncache(a, prompts, tmp, rnd)
                elif e == "attncache-exact":
                    r = run_attncache(a, prompts, tmp, rnd, prefix=False)
                elif e == "llama.cpp":
                    r = run_llama(a, prompts, tmp, rnd)
                elif e == "llama.cpp-exact":
                    r = run_llama(a, prompts, tmp, rnd, cache_prompt=False)
                else:
                    r = run_eval(a, tmp, rnd)
                runs[e].append(r)
                extra = ""
                if "tokens_reused" in r:
                    extra = f"  reused {r['tokens_reused']:.0f} computed {r['tokens_computed']:.0f}"
                if "compute_seconds" in r:
                    extra += f"  (its compute {r['compute_seconds']:.3f} s)"
                if e == "attncache-eval":
                    extra += f"  (exact {r['exact_seconds']:.3f} s, {r['speedup_vs_exact']:.2f}x)"
                print(f"round {rnd}: {e:16s} {r['seconds']:8.3f} s{extra}", flush=True)

        med = {e: statistics.median(r["seconds"] for r in runs[e]) for e in engines}
        res = {"n": len(prompts), "tokens": ntok, "shared_tokens": shared, "threads": a.threads, "rounds": a.rounds,
               "model": a.model, "llama_server": a.llama_server, "llama_env": a.llama_env, "llama_args": a.llama_arg, "median_seconds": med, "runs": {}}
        print("\nmedian stream time over the rounds (client wall clock, HTTP included for the servers):")
        for e in engines:
            print(f"  {e:16s} {med[e]:8.3f} s  {ntok / med[e]:8.0f} prompt tokens/s")
        if "attncache" in engines and "llama.cpp" in engines:
            ratios = [l["seconds"] / c["seconds"] for c, l in zip(runs["attncache"], runs["llama.cpp"])]
            res["ratio_llama_over_attncache"] = statistics.median(ratios)
            sa, sl = runs["attncache"][-1]["scores"], runs["llama.cpp"][-1]["scores"]
            agree = sum(max(range(4), key=lambda k: x[k]) == max(range(4), key=lambda k: y[k]) for x, y in zip(sa, sl))
            diffs = [abs(u - v) for x, y in zip(sa, sl) for u, v in zip(x, y) if math.isfinite(v)]
            res.update(accuracy_attncache=accuracy(sa, prompts), accuracy_llama=accuracy(sl, prompts),
                       prediction_agreement=agree / len(prompts), max_abs_logprob_diff=max(diffs) if diffs else None,
                       llama_labels_outside_top=runs["llama.cpp"][-1]["labels_outside_top"])
            print(f"attncache (--prefix-cache) vs llama.cpp (prompt cache): {res['ratio_llama_over_attncache']:.3f}x "
                  f"(median of per-round ratios {', '.join(f'{x:.3f}' for x in ratios)})")
            print(f"accuracy: attncache {res['accuracy_attncache']:.2f}%, llama.cpp {res['accuracy_llama']:.2f}%; "
                  f"same prediction on {100 * res['prediction_agreement']:.1f}% of prompts; largest label "
                  f"log-probability difference {res['max_abs_logprob_diff']:.2e}; llama.cpp labels outside its top "
                  f"{a.n_probs}: {res['llama_labels_outside_top']}")
            la, ca = runs["llama.cpp"][-1], runs["attncache"][-1]
            print(f"tokens computed / reused: llama.cpp {la['tokens_computed']} / {la['tokens_reused']} (timings "
                  f"prompt_n / cache_n), attncache {ca['tokens_computed']:.0f} / {ca['tokens_reused']:.0f} (/metrics)")
        if "attncache-eval" in engines:
            ev = runs["attncache-eval"]
            res["eval"] = {"median_seconds": med["attncache-eval"],
                           "median_exact_seconds": statistics.median(r["exact_seconds"] for r in ev),
                           "median_speedup_vs_exact": statistics.median(r["speedup_vs_exact"] for r in ev),
                           "accuracy": ev[-1]["accuracy"], "exact_accuracy": ev[-1]["exact_accuracy"],
                           "amdahl_bound": ev[-1]["amdahl_bound"]}
            print(f"attncache eval in-process: reuse {med['attncache-eval']:.3f} s vs exact "
                  f"{res['eval']['median_exact_seconds']:.3f} s ({res['eval']['median_speedup_vs_exact']:.2f}x, "
                  f"Amdahl bound {ev[-1]['amdahl_bound']:.2f}x); accuracy {ev[-1]['accuracy']:.2f}% "
                  f"(exact {ev[-1]['exact_accuracy']:.2f}%)")
            if "llama.cpp" in engines:
                lc = statistics.median(r["compute_seconds"] for r in runs["llama.cpp"])
                res["llama_compute_median_seconds"] = lc
                print(f"compute only (no HTTP): llama.cpp {lc:.3f} s (its timings) vs attncache eval "
                      f"{med['attncache-eval']:.3f} s: {lc / med['attncache-eval']:.3f}x")
        for e in engines:
            res["runs"][e] = [{k: v for k, v in r.items() if k != "scores"} for r in runs[e]]
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
