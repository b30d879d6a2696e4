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


def _flush_l2(device: torch.device) -> None:
    buf = _flush_buffers.get(device)
    if buf is None:
        buf = _flush_buffers[device] = torch.empty(_L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)
    buf.zero_()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int,
            flush_l2: bool = True) -> dict:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` single calls.

    Returns ``{"median_ms", "min_ms", "max_ms", "times_ms"}``. On CUDA each call is bracketed by
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
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "times_ms": times}


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
