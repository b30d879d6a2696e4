"""Timing and memory: CUDA events with an L2 flush on GPUs, perf_counter on CPUs."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

# Larger than the L2 of any current GPU (H100 50 MB, H200 60 MB, B200 126 MB), so each timed
# call reads its inputs from DRAM as it would inside the network.
_L2_FLUSH_BYTES = 256 * 1024 * 1024
_flush_buffers: Dict[torch.device, torch.Tensor] = {}

# A row's repeats are "noisy" (its median, and any speedup computed from it, unreliable) when
# they spread wider than either bound. Shared by the console, markdown and plot legends.
NOISY_MAX_OVER_MIN = 2.0
NOISY_IQR_OVER_MEDIAN = 0.2
NOISE_RULE = (f"noisy = the repeats spread wide: max/min > {NOISY_MAX_OVER_MIN:g} or IQR/median > "
              f"{NOISY_IQR_OVER_MEDIAN:g} (judged from 2 or more repeats); its median and its speedups are "
              "unreliable: rerun on an idle machine or with more --repeats")


def _flush_l2(device: torch.device) -> None:
    buf = _flush_buffers.get(device)
    if buf is None:
        buf = _flush_buffers[device] = torch.empty(_L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)
    buf.zero_()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread(times_ms: List[float]) -> dict:
    """``{"median_ms", "min_ms", "max_ms", "iqr_ms", "noisy"}`` of the per-repeat times; ``noisy``
    follows :data:`NOISE_RULE` and is None (unknown) for a single repeat."""
    if not times_ms:
        raise ValueError("times_ms must hold at least one time")
    med, lo, hi = statistics.median(times_ms), min(times_ms), max(times_ms)
    if len(times_ms) < 2:
        return {"median_ms": med, "min_ms": lo, "max_ms": hi, "iqr_ms": None, "noisy": None}
    q1, _, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
    iqr = q3 - q1
    noisy = (lo <= 0 or hi / lo > NOISY_MAX_OVER_MIN) or (med > 0 and iqr / med > NOISY_IQR_OVER_MEDIAN)
    return {"median_ms": med, "min_ms": lo, "max_ms": hi, "iqr_ms": iqr, "noisy": bool(noisy)}


def measure(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int,
            flush_l2: bool = True) -> dict:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` single calls.

    Returns :func:`spread`'s keys and ``"times_ms"``, every repeat's time. On CUDA each call is bracketed by
    events (the L2 flush runs before the start event, outside the measurement); on CPU
    ``time.perf_counter`` brackets it.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: List[float] = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(repeats)]
        for start, end in events:
            if flush_l2:
                _flush_l2(device)
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in events]
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return dict(spread(times), times_ms=times)


def peak_memory(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """Bytes allocated by one call of ``fn`` above what was allocated before it (CUDA only;
    None on other devices, where the caching allocator's statistics do not exist)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    result = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del result
    return int(peak)


def synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``fn`` followed by a device synchronisation, so wall-clock timers (pytest-benchmark) see
    the kernels' time and not just the launch."""
    if device.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize(device)
        return out
    return run
