"""The order in which ``backend="auto"`` tries the fused backends, per op: on CUDA tensors
(``PREFERENCES``) and on CPU tensors per CPU model (``CPU_PREFERENCES``).

CUDA: ``PREFERENCES`` lists the Triton kernels for every op: the package's primary fused path,
verified against the reference on every CI run, and chosen before any GPU timing exists. The CUDA
extension is not listed (it has no recorded GPU run). ``python -m mat_kernels.bench.tune
RESULTS.json`` proposes a new table from a GPU benchmark result (the fastest backend per op that
passed its GPU tests), with the result files committed under ``benchmarks/results/``. After the
listed backends, ``auto`` tries ``sdpa`` for window attention on CUDA (the fallback when Triton
cannot run), then the reference (see ``backends.auto_order``).

CPU: ``CPU_PREFERENCES`` maps a CPU, as ``(model name, torch.backends.cpu.get_cpu_capability())``
(the model name of ``lscpu`` / ``/proc/cpuinfo``), to the backends ``auto`` takes on it, from a
``mat-bench`` run on that CPU in which the backend was faster than the reference at MAT's
attention shapes and within the fp32 tolerance (``CPU_MEASUREMENTS`` keeps the figures, the
result files are under ``benchmarks/results/``). A CPU measured slower gets an empty entry.
A CPU that was never measured gets ``UNMEASURED_CPU`` for its capability; see there for why.
"""
from __future__ import annotations

import platform
from typing import Dict, Tuple

import torch

PREFERENCES = {
    "window_attention": ["triton"],
    "window_mask_update": ["triton"],
    "partial_conv_mask_update": ["triton"],
    "bias_act": ["triton"],
}

_XEON = "Intel(R) Xeon(R) Processor"  # lscpu's model name of the project's 2-core CI/dev VM (KVM, AMX)

CPU_PREFERENCES: Dict[Tuple[str, str], Dict[str, Tuple[str, ...]]] = {
    (_XEON, "AVX512"): {"window_attention": ("sdpa",)},
    (_XEON, "AVX2"): {"window_attention": ("sdpa",)},   # the same CPU with ATEN_CPU_CAPABILITY=avx2
    (_XEON, "DEFAULT"): {"window_attention": ()},       # ATEN_CPU_CAPABILITY=default: sdpa not faster
}

# mat-bench --ops --suite full --peers reference,sdpa (fp32, batch 1, MAT's nine 512 attention
# shapes, forward and forward+backward, 10 or 7 repeats, interleaved per case), 2026-12-02, torch
# 2.13.0+cpu, 2 threads, run under the CPU lock. "geomean": sdpa's speedup over the reference
# over the 18 rows; "tran.0": 64x64 grid, window 8, masked, shift 0 / shift 4; every row of sdpa
# was within the fp32 tolerance of the float64 reference (max errors: out, gradients).
CPU_MEASUREMENTS = {
    (_XEON, "AVX512"): dict(result="benchmarks/results/cpu-sdpa-avx512.json", geomean=2.58,
                            tran0_fwd=(11.6, 6.2), tran0_fwdbwd=(1.94, 1.80), max_err=(2.3e-6, 5.1e-6)),
    (_XEON, "AVX2"): dict(result="benchmarks/results/cpu-sdpa-avx2.json", geomean=2.51,
                          tran0_fwd=(7.97, 6.45), tran0_fwdbwd=(1.91, 1.66), max_err=(2.3e-6, 5.1e-6)),
    (_XEON, "DEFAULT"): dict(result="benchmarks/results/cpu-sdpa-default.json", geomean=0.98,
                             tran0_fwd=(1.03, 0.93), tran0_fwdbwd=(1.21, 1.22), max_err=(2.3e-6, 6.2e-6)),
}

# A CPU never measured: by its ATen capability. SDPA's CPU kernel is vectorised per capability;
# with the AVX2 and AVX-512 kernels it was 2.5-2.6x faster than the reference across MAT's shapes
# on the measured CPU (and never slower than 1.1x behind on any row), while the DEFAULT
# (non-vectorised) build was no faster (geomean 0.98, slower on shifted forwards). The accuracy
# does not depend on the CPU (tested on every CI machine). So an unmeasured AVX2/AVX-512 CPU
# takes sdpa, any other capability the reference, until a run on that CPU says otherwise.
UNMEASURED_CPU: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "AVX512": {"window_attention": ("sdpa",)},
    "AVX2": {"window_attention": ("sdpa",)},
}


def cpu_model_name() -> str:
    """The CPU model as ``lscpu`` names it (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def this_cpu() -> Tuple[str, str]:
    """(model name, ATen CPU capability) of this machine: the key of ``CPU_PREFERENCES``."""
    return cpu_model_name(), torch.backends.cpu.get_cpu_capability()


def cpu_order(cpu: Tuple[str, str] = None) -> Dict[str, Tuple[str, ...]]:
    """The backends ``auto`` tries before the reference on CPU tensors of ``cpu`` (default:
    this machine), per op: its ``CPU_PREFERENCES`` entry, else ``UNMEASURED_CPU`` for its
    capability (the reference alone for a capability not listed there)."""
    cpu = this_cpu() if cpu is None else tuple(cpu)
    if cpu in CPU_PREFERENCES:
        return dict(CPU_PREFERENCES[cpu])
    return dict(UNMEASURED_CPU.get(cpu[1], {}))
