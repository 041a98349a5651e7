"""The CPU line every benchmark prints beside its figures: which engine or
kernel wins depends on the vector instruction sets (AVX2 only, AVX-512 with
VNNI, BF16, AMX), and machines differ from one run to the next.

    from benchmark_cpu import cpu_report
    print("CPU:", cpu_report())
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# (name printed, /proc/cpuinfo flag): the sets the runtimes' kernels dispatch on.
INSTRUCTION_SETS = [("AVX2", "avx2"), ("FMA", "fma"), ("AVX-512F", "avx512f"), ("AVX-512 VNNI", "avx512_vnni"),
                    ("AVX-VNNI", "avx_vnni"), ("AVX-512 BF16", "avx512_bf16"), ("AVX-512 FP16", "avx512_fp16"),
                    ("AMX-TILE", "amx_tile"), ("AMX-INT8", "amx_int8"), ("AMX-BF16", "amx_bf16")]


def cpu_flags() -> tuple:
    """(model name, set of /proc/cpuinfo flags); ("unknown CPU", set()) off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU", set()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return model, flags


def cpu_report() -> str:
    """One line: the CPU's model, logical CPUs, and which INSTRUCTION_SETS it has and lacks."""
    model, flags = cpu_flags()
    if not flags:
        return f"{model}; {os.cpu_count()} logical CPUs; instruction sets unknown (no /proc/cpuinfo flags)"
    have = [name for name, flag in INSTRUCTION_SETS if flag in flags]
    lacks = [name for name, flag in INSTRUCTION_SETS if flag not in flags]
    return (f"{model}; {os.cpu_count()} logical CPUs; has {', '.join(have) or 'none of them'}; "
            f"lacks {', '.join(lacks) or 'none'}")


# What each cap sets in the environment, for the runtimes that read one:
# OpenVINO's CPU plugin (its oneDNN kernels and its own JIT nodes stop at
# ONEDNN_MAX_CPU_ISA) and OpenCV (runtime dispatch skips what
# OPENCV_CPU_DISABLE names). onnxruntime's MLAS, ncnn and XNNPACK pick
# their kernels from CPUID with no such switch: under a cap they still run
# with everything the CPU has.
ISA_CAPS = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2",
             "OPENCV_CPU_DISABLE": "AVX512F,AVX512-SKX,AVX512-COMMON,AVX512-ICL,AVX512-CLX,AVX512-CNL,"
                                   "AVX512BW,AVX512DQ,AVX512VL,AVX512CD"},
}
CAPPED_ENGINES = ("openvino", "OpenCV")


def cap_isa(name: str) -> None:
    """Run this script again with the instruction sets capped at `name`
    (ISA_CAPS), unless they already are: the runtimes read the variables
    when they load, and caffessd loads OpenCV on import."""
    wanted = ISA_CAPS[name]
    if all(os.environ.get(key) == value for key, value in wanted.items()):
        return
    os.environ.update(wanted)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.argv])


def capped_isa() -> str:
    """The ISA_CAPS name this process runs under, or "" when uncapped."""
    return next((name for name, wanted in ISA_CAPS.items()
                 if all(os.environ.get(key) == value for key, value in wanted.items())), "")
