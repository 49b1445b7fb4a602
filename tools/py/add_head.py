#!/usr/bin/env python3
"""Copy a model GGUF and add a classifier head from a head GGUF (e.g. models/heads/minilm-sst2-head.gguf):
the tensors cls.output.weight / cls.output.bias (llama.cpp's names for a BERT classifier's output
projection, MODEL_TENSOR.CLS_OUT), {arch}.classifier.output_labels and the attncache.head.* keys.

  add_head.py MODEL.gguf HEAD.gguf -o OUT.gguf

Every key and tensor of MODEL is copied unchanged (tensor bytes verbatim, any type). The head's
input dimension must equal MODEL's embedding_length and its architecture must match.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import gguf

SKIP = ("GGUF.", "general.architecture")


def copy_kv(w: gguf.GGUFWriter, field: gguf.ReaderField) -> None:
    vtype = field.types[0]
    if vtype == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == gguf.GGUFValueType.STRING:
            val = [bytes(field.parts[i]) for i in field.data]
        elif sub == gguf.GGUFValueType.ARRAY:
            raise ValueError(f"{field.name}: nested arrays not supported")
        else:
            val = field.contents()
        w.add_key_value(field.name, val, vtype, sub_type=sub)
    elif vtype == gguf.GGUFValueType.STRING:
        w.add_key_value(field.name, bytes(field.parts[-1]), vtype)
    else:
        w.add_key_value(field.name, field.contents(), vtype)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("head", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    a = ap.parse_args()

    m, h = gguf.GGUFReader(a.model), gguf.GGUFReader(a.head)
    arch = m.fields["general.architecture"].contents()
    if h.fields["general.architecture"].contents() != arch:
        print(f"add_head: head is for {h.fields['general.architecture'].contents()}, model is {arch}", file=sys.stderr)
        return 1
    n_embd = int(m.fields[f"{arch}.embedding_length"].contents())
    ht = {t.name: t for t in h.tensors}
    if set(ht) != {"cls.output.weight", "cls.output.bias"}:
        print(f"add_head: head tensors {sorted(ht)}, want cls.output.weight and cls.output.bias", file=sys.stderr)
        return 1
    ne = [int(x) for x in ht["cls.output.weight"].shape]
    if ne[0] != n_embd or [int(x) for x in ht["cls.output.bias"].shape] != [ne[1]]:
        print(f"add_head: head shapes {ne} / {list(ht['cls.output.bias'].shape)} do not fit n_embd {n_embd}", file=sys.stderr)
        return 1
    if any(t.name.startswith("cls.") for t in m.tensors):
        print(f"add_head: {a.model} already has classifier tensors", file=sys.stderr)
        return 1

    w = gguf.GGUFWriter(path=None, arch=arch)
    for name, f in m.fields.items():
        if not name.startswith(SKIP):
            copy_kv(w, f)
    for name, f in h.fields.items():
        if name.startswith(SKIP) or name.startswith("general."):
            continue
        if name in m.fields:
            continue
        copy_kv(w, f)
    for t in m.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    for name in ("cls.output.weight", "cls.output.bias"):
        t = ht[name]
        w.add_tensor(name, np.asarray(t.data, dtype=np.float32), raw_dtype=gguf.GGMLQuantizationType.F32)

    tmp = a.out.with_name(a.out.name + ".tmp")
    w.write_header_to_file(path=tmp)
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, a.out)
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes): {a.model.name} + {a.head.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
