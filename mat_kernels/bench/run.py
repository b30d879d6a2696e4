"""One ``mat-bench`` run: the notes on what the numbers mean, the CPU estimate of the model part,
and the op and model cases timed in order."""
from __future__ import annotations

import sys
from typing import List, Optional

import torch

from . import model
from .suite import reason_of, run_case

__all__ = ["configure_compiler", "notes_for", "model_estimate", "run_all"]


def configure_compiler():
    # Many distinct graphs get compiled in one run; the default limits would silently fall back
    # to eager after a few of them.
    cfg = getattr(torch, "_dynamo", None) and torch._dynamo.config
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if cfg is not None and hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 4096))


def notes_for(o, environment) -> List[str]:
    notes = []
    if not o["gpu"]:
        what = "reduced reference suite" if o["run_ops"] and o["suite"] == "reduced" else "CPU timings"
        notes.append(f"CPU-only run ({what}). The fused Triton and CUDA kernels need a CUDA GPU "
                     "(their rows give the reason they did not run); these are CPU timings, not GPU results.")
    if not o["gpu"] and o["run_model"]:
        from ..backends import CPU_ORDER
        attn = CPU_ORDER.get("window_attention") or ("reference",)
        notes.append(f"On CPU the model's 'reference' rows run the official op sequence (official-equivalent eager); "
                     f"'auto' runs window attention on {attn[0]} (backends.preferences for this CPU, "
                     f"{environment['cpu_name']}, {environment['cpu_capability']}) and the conv layers' channels_last "
                     "fast path (mat_kernels/nn/fast_conv.py).")
    if environment["dram_bandwidth_bytes_per_s"] is None:
        notes.append(f"No DRAM bandwidth known: {environment['dram_bandwidth_source']}.")
    return notes


def model_estimate(o, model_skip) -> Optional[str]:
    """On CPU, before the model part: how long it will take, from one timed generator forward."""
    if not o["run_model"] or o["gpu"]:
        return None
    res, probe_batch = o["model_res"], min(o["model_batches"])
    print(f"timing one {res}x{res} generator forward to estimate the model part...", file=sys.stderr)
    try:
        fwd = model.time_forward(res, probe_batch, o["device"])
    except Exception as exc:  # the model part itself reports why it cannot run
        return f"no time estimate for the model part ({reason_of(exc)})"
    secs = model.estimate_seconds(fwd, probe_batch, o["model_batches"], o["model_paths"], o["model_dtypes"],
                                  o["model_warmup"], o["model_repeats"], skip=model_skip, whats=o["model_whats"])
    extra = " plus minutes of compilation per compiled row" if "compile" in set(o["model_paths"]) - set(model_skip) \
        else ""
    took = f"{secs:.0f} s" if secs < 90 else f"{secs / 60:.0f} min"
    return (f"the model part on CPU will take about {took}{extra} (one {res}x{res} batch-{probe_batch} "
            f"generator forward took {fwd:.1f} s here; a training step costs about {model.TRAIN_STEP_FORWARDS} "
            "forwards). Ctrl-C stops it and keeps what was measured.")


def run_all(o, skip, model_skip, environment, notes, progress):
    """(attention rows, model rows); an interrupt keeps what was measured and says so in notes."""
    attention_rows, model_rows = [], []
    try:
        for case in o["cases"]:
            progress.describe(case.id)
            attention_rows += run_case(case, o["peers"], o["device"], o["warmup"], o["repeats"], skip=skip,
                                       dram_bw=environment["dram_bandwidth_bytes_per_s"],
                                       on_peer_done=lambda r: progress.step(f"{r['peer']}: {r['status']}"))
        if o["run_model"]:
            progress.describe(f"model {o['model_res']}")
            for dt in o["model_dtypes"]:
                model_rows += model.run_model(o["model_res"], o["model_batches"], o["device"],
                                              o["model_warmup"], o["model_repeats"], paths=o["model_paths"],
                                              whats=o["model_whats"], dtype=dt, skip=model_skip,
                                              on_row_done=lambda r: progress.step(f"{r['what']} {r['path']}"))
    except KeyboardInterrupt:
        # A long GPU run stopped by hand still writes what it measured, marked as partial.
        notes.append("Interrupted by the user: the results are partial.")
    finally:
        progress.close()
    return attention_rows, model_rows
