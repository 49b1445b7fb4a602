#!/usr/bin/env python3
"""An ONNX Runtime limited to its AVX2 kernels, for comparing at the AVX2 level on an AVX-512 CPU.

    python bench/patch_ort_avx2.py DEST      # copy of the importable onnxruntime package in DEST/onnxruntime

ONNX Runtime has no run-time switch for its instruction set: MLAS (its kernel library) picks
AVX-512 kernels from cpuid when the CPU and the OS support them. llama.cpp gets an AVX2-only
build and PyTorch an environment limit (bench/compare_peers.py --level avx2); for ORT this tool
makes the same thing out of the pinned wheel: it copies the installed package and changes ONE
byte of the Python module's MLAS platform set-up, the conditional jump after its AVX512F test

    test $0x10000, %r10d     ; cpuid(7).ebx bit 16: AVX512F
    je   <the AVX2 set-up>   ; 74 0e  ->  jmp (eb 0e): always the AVX2 / FMA3 kernels

so MLAS keeps the AVX2/FMA3 kernel table it set just before, as it does on a CPU without
AVX-512. The byte pattern (the test, the jump, and the XCR0 check that follows) must occur
exactly once, or nothing is written. Checked on onnxruntime 1.32.0 (x86-64 Linux wheel) with
`perf record`: the hot MLAS kernels of the patched copy use ymm registers only, the original's
zmm. The copy is used by putting DEST on PYTHONPATH (compare_peers.py --ort-avx2 DEST).
"""
import os
import shutil
import sys

# test $0x10000,%r10d ; je +0x0e ; mov %r8,%rax ; not %rax ; test $0xe0,%al ; je rel32
PATTERN = bytes.fromhex("41f7c200000100" "740e" "4c89c0" "48f7d0" "a8e0" "0f84")
JE_AT = 7  # offset of the 0x74 in PATTERN


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: patch_ort_avx2.py DEST")
    dest = os.path.abspath(sys.argv[1])
    import onnxruntime  # noqa: PLC0415 (the wheel to copy: the one this Python imports)

    src = os.path.dirname(os.path.realpath(onnxruntime.__file__))
    out = os.path.join(dest, "onnxruntime")
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    capi = os.path.join(tmp, "capi")
    mods = [f for f in os.listdir(capi) if f.startswith("onnxruntime_pybind11_state") and f.endswith(".so")]
    if len(mods) != 1:
        shutil.rmtree(tmp)
        sys.exit(f"patch_ort_avx2: expected one onnxruntime_pybind11_state*.so in {capi}, found {mods}")
    path = os.path.join(capi, mods[0])
    data = bytearray(open(path, "rb").read())
    at = data.find(PATTERN)
    if at < 0 or data.find(PATTERN, at + 1) >= 0:
        shutil.rmtree(tmp)
        sys.exit(f"patch_ort_avx2: MLAS's AVX512F check not found exactly once in {path} "
                 f"(onnxruntime {onnxruntime.__version__}); this tool knows the 1.32 x86-64 wheel")
    data[at + JE_AT] = 0xEB
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    with open(os.path.join(tmp, "AVX2_ONLY"), "w") as f:
        f.write(f"onnxruntime {onnxruntime.__version__} from {src}; {mods[0]} byte 0x{at + JE_AT:x}: 74 -> eb\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"patch_ort_avx2: {out} (onnxruntime {onnxruntime.__version__}, MLAS limited to AVX2; byte 0x{at + JE_AT:x})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
