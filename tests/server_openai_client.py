"""The pinned `openai` client against a running `attncache serve` (called by test_server.sh).

usage: server_openai_client.py BASE_URL CLI_JSONL TEXTS_TXT
Checks that the client's embeddings (the client asks for base64 and decodes it) equal the
CLI's (`attncache embed`, cosine >= 0.99999), float and base64 agree, usage counts tokens,
the model list parses, and errors surface as the client's typed exceptions.
"""
import json
import math
import sys

import openai

base, cli_path, texts_path = sys.argv[1], sys.argv[2], sys.argv[3]
texts = [l.rstrip("\n") for l in open(texts_path, encoding="utf-8")]
cli = [json.loads(l) for l in open(cli_path)]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


r = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # default: base64 on the wire
assert r.model == "all-MiniLM-L6-v2", r.model
assert [d.index for d in r.data] == list(range(len(texts)))
for d, c in zip(r.data, cli):
    assert len(d.embedding) == 384
    assert cos(d.embedding, c["embedding"]) >= 0.99999, cos(d.embedding, c["embedding"])
assert r.usage.prompt_tokens == r.usage.total_tokens == sum(c["tokens"] for c in cli), r.usage

f = client.embeddings.create(model="m", input=texts[0], encoding_format="float")
assert max(abs(x - y) for x, y in zip(f.data[0].embedding, r.data[0].embedding)) < 1e-6

ids = client.embeddings.create(model="m", input=[[101, 7592, 2088, 102]])
assert len(ids.data) == 1 and ids.usage.prompt_tokens == 4

models = client.models.list()
assert len(models.data) == 1 and models.data[0].object == "model"

for bad, kw in [("empty", {"input": ""}), ("dimensions", {"input": "x", "dimensions": 8})]:
    try:
        client.embeddings.create(model="m", **kw)
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body and "message" in e.body, (bad, e.body)
    else:
        raise AssertionError(f"{bad}: no error")
print("openai client: ok")
