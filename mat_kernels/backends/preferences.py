"""The order in which ``backend="auto"`` tries the fused backends, per op: on CUDA tensors
(``PREFERENCES``) and on CPU tensors per CPU model (``CPU_PREFERENCES``).

Only measurements decide these tables. CUDA: ``python -m mat_kernels.bench.tune RESULTS.json``
proposes ``PREFERENCES`` from a GPU benchmark result (the fastest backend per op that passed its
GPU tests), and the result files it came from are committed under ``benchmarks/results/``. The
CUDA extension has no recorded GPU run, so it is not listed; the Triton kernels are listed
because they are the package's primary fused path, verified against the reference on every CI
run. After the listed backends, ``auto`` tries ``sdpa`` for window attention on CUDA (the
fallback when Triton cannot run), then the reference (see ``backends.auto_order``).

CPU: ``CPU_PREFERENCES`` maps a CPU, as ``(model name, torch.backends.cpu.get_cpu_capability())``
(the model name of ``lscpu`` / ``/proc/cpuinfo``), to the backends ``auto`` takes on it, from a
``mat-bench`` run on that CPU in which the backend was faster than the reference at MAT's
attention shapes and within the fp32 tolerance (``CPU_MEASUREMENTS`` keeps the figures, the
result files are under ``benchmarks/results/``). A CPU measured slower gets an empty entry.
A CPU that was never measured gets ``UNMEASURED_CPU``; see there for why.
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

CPU_PREFERENCES: Dict[Tuple[str, str], Dict[str, Tuple[str, ...]]] = {
}

CPU_MEASUREMENTS = {
}

UNMEASURED_CPU: Dict[str, Tuple[str, ...]] = {
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
    this machine), per op: its ``CPU_PREFERENCES`` entry, else ``UNMEASURED_CPU``."""
    cpu = this_cpu() if cpu is None else tuple(cpu)
    return dict(CPU_PREFERENCES.get(cpu, UNMEASURED_CPU))
