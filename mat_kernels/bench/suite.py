"""Run the op-level cases across the peers and turn timings into the reported numbers."""
from __future__ import annotations

import contextlib
import gc
from typing import Callable, Dict, Iterable, List, Optional

import torch

from .. import reference as ref
from ..testing import check_error
from . import cases as C
from . import timing
from .peers import Peer

STATUS_OK, STATUS_FAILED, STATUS_SKIPPED = "ok", "failed", "skipped"
# A GPU-only peer on a machine without one: not a failure, and shown as "not available (no GPU)".
STATUS_UNAVAILABLE = "unavailable"
TIMING_KEYS = ("median_ms", "min_ms", "max_ms", "iqr_ms", "noisy", "times_ms")


def reason_of(exc: BaseException, limit: int = 400) -> str:
    """One line naming the exception: what a results table can show."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _expected(case: C.AttentionCase, q, k, v, mask, grad_out):
    """The float64 reference on the same inputs: out, new mask and (for fwdbwd) dq, dk, dv."""
    s = case.shape
    q64, k64, v64 = (t.detach().double().requires_grad_(case.mode == "fwdbwd") for t in (q, k, v))
    m64 = None if mask is None else mask.double()
    with torch.set_grad_enabled(case.mode == "fwdbwd"):
        out, new_mask = ref.window_attention(q64, k64, v64, m64, window_size=s.window, shift_size=s.shift,
                                             num_heads=case.heads)
    grads = None
    if case.mode == "fwdbwd":
        grads = torch.autograd.grad(out, (q64, k64, v64), grad_out.double())
    return out.detach(), new_mask, grads


def errors(case: C.AttentionCase, got, expected) -> dict:
    """Max abs errors against the float64 reference and whether every output is within its bound
    by the accuracy rule (``mat_kernels.testing.check_error``, the TOLERANCES row of the case's
    dtype; None where the table has no row for it)."""
    out, new_mask, grads = got
    e_out, e_mask, e_grads = expected
    dt = case.torch_dtype
    pairs = [("fwd", out, e_out)] + [("bwd", g, eg) for g, eg in zip(grads or (), e_grads or ())]
    try:
        checks = [check_error(a, e, "window_attention", what, dt) for what, a, e in pairs]
    except KeyError:  # no tolerance recorded for this dtype: report the errors only
        checks = None
    abs_err = [float((a.detach().double() - e).abs().max()) for _, a, e in pairs]
    res = {"max_abs_err": abs_err[0], "max_abs_err_grad": max(abs_err[1:]) if grads is not None else None,
           "mask_match": None, "within_tolerance": None if checks is None else all(c.ok for c in checks)}
    if e_mask is not None:
        res["mask_match"] = new_mask is not None and bool((new_mask.double() == e_mask).all())
        if res["within_tolerance"] is not None:
            res["within_tolerance"] = res["within_tolerance"] and res["mask_match"]
    return res


def make_call(case: C.AttentionCase, fn, q, k, v, mask, grad_out):
    """A no-argument call of one timed iteration and the tensors it produced."""
    if case.mode == "fwd":
        def call():
            with torch.no_grad():
                out, new_mask = fn(q, k, v, mask)
            return out, new_mask, None
    else:
        qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))

        def call():
            out, new_mask = fn(qg, kg, vg, mask)
            grads = torch.autograd.grad(out, (qg, kg, vg), grad_out)
            return out, new_mask, grads
    return call


def _reset_compiler():
    # Each case compiles its own graphs: a fresh cache keeps dynamo's per-function recompile
    # limit from silently sending later cases back to eager.
    with contextlib.suppress(Exception):
        torch._dynamo.reset()


def status_when_not_runnable(peer: Peer, device: torch.device) -> str:
    """A fused-kernel peer off a CUDA device is "unavailable" (no GPU), not a failure; a peer that
    cannot run on a GPU has "failed"."""
    return STATUS_UNAVAILABLE if peer.backend is not None and device.type != "cuda" else STATUS_FAILED


def run_case(case: C.AttentionCase, peers: Iterable[Peer], device: torch.device, warmup: int, repeats: int,
             skip: Optional[Dict[str, str]] = None, dram_bw: Optional[float] = None,
             on_peer_done: Optional[Callable[[dict], None]] = None, seed: int = 0) -> List[dict]:
    """Measure ``case`` for every peer; a peer that cannot run or raises is recorded as failed
    with its reason, a peer in ``skip`` as skipped with the given reason."""
    skip = skip or {}
    q, k, v, mask = C.make_inputs(case, device, seed)
    g = torch.Generator().manual_seed(seed + 1)
    grad_out = torch.randn(q.shape, generator=g).to(device=device, dtype=q.dtype) if case.mode == "fwdbwd" else None
    expected = _expected(case, q, k, v, mask, grad_out)
    nbytes, flops = C.ideal_bytes(case), C.flop_count(case)
    rows = []
    for peer in peers:
        row = {"case_id": case.id, "case": case.as_dict(), "peer": peer.name, "label": peer.label,
               "status": None, "reason": None, **dict.fromkeys(TIMING_KEYS), "peak_mem_bytes": None, "ideal_bytes": nbytes, "flops": flops,
               "achieved_bytes_per_s": None, "bandwidth_fraction": None, "tflops": None,
               "max_abs_err": None, "max_abs_err_grad": None, "mask_match": None, "within_tolerance": None,
               "speedup_vs_reference": None, "speedup_vs_compile": None}
        if peer.name in skip:
            row.update(status=STATUS_SKIPPED, reason=skip[peer.name])
        else:
            why = peer.reasons(case, device)
            if why:
                row.update(status=status_when_not_runnable(peer, device), reason="; ".join(why))
            else:
                try:
                    if peer.compiles:
                        _reset_compiler()
                    call = make_call(case, peer.build(case, device), q, k, v, mask, grad_out)
                    got = call()  # first call: compiles, and gives the outputs checked below
                    row.update(errors(case, got, expected))
                    del got
                    t = timing.measure(call, device, warmup, repeats)
                    row.update({key: t[key] for key in TIMING_KEYS})
                    row["peak_mem_bytes"] = timing.peak_memory(call, device)
                    sec = t["median_ms"] / 1e3
                    row["achieved_bytes_per_s"] = nbytes / sec
                    row["tflops"] = flops / sec / 1e12
                    if dram_bw:
                        row["bandwidth_fraction"] = nbytes / sec / dram_bw
                    row["status"] = STATUS_OK
                except Exception as exc:  # a peer's failure is a result, not a crash of the suite
                    row.update(status=STATUS_FAILED, reason=reason_of(exc))
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
        rows.append(row)
        if on_peer_done is not None:
            on_peer_done(row)
    add_speedups(rows)
    del q, k, v, mask, expected
    gc.collect()
    return rows


def add_speedups(rows: List[dict]) -> None:
    """speedup_vs_{reference,compile} = that peer's median / this peer's median, per case."""
    by_case: Dict[str, Dict[str, dict]] = {}
    for r in rows:
        by_case.setdefault(r["case_id"], {})[r["peer"]] = r
    for peers in by_case.values():
        for base in ("reference", "compile"):
            b = peers.get(base)
            if b is None or b["status"] != STATUS_OK:
                continue
            for r in peers.values():
                if r["status"] == STATUS_OK:
                    r[f"speedup_vs_{base}"] = b["median_ms"] / r["median_ms"]
