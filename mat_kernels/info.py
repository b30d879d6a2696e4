"""What this machine can run: the report behind ``mat-info`` (:mod:`mat_kernels.cli.info`).

Prints the versions (Python, torch, triton, CUDA), the device, whether the compiled extension
``mat_kernels._C`` is built (and why not), every op x backend with its availability or the
reasons it cannot run, and which backend ``backend="auto"`` picks. On a CUDA device it also
runs a quick check of each available fused backend against the reference at MAT's real shapes
(64x64 token grid, window 8, shift 4, 6 heads of 30; fp32 and bf16) with the checkers and
tolerances of :mod:`mat_kernels.testing`, and reports the max abs error and pass/fail.

``--json PATH`` writes the same report as JSON (schema ``mat_kernels.info/1``). The exit status
is 1 when a quick check failed, 0 otherwise (a backend that is merely unavailable is not a
failure: its reasons are the answer).
"""
from __future__ import annotations

import os
import platform
import time
from typing import Dict, List, Optional, Tuple

import torch

SCHEMA = "mat_kernels.info/1"

# MAT's first-stage attention at its native size: 180 channels = 6 heads of 30 on a 64x64 token
# grid with window 8 (tran.0 / tran.4), here with the shift and the key mask (the costliest case).
GRID, WINDOW, SHIFT, HEADS, HEAD_DIM = 64, 8, 4, 6, 30
# Partial convolutions of the 512 network's encoder: 3x3, stride 2 (here on a 256 map).
PCONV_RES, PCONV_K, PCONV_S = 256, 3, 2
# bias_act on a conv output of the 180-channel trunk, as the network's lrelu layers run it.
BIAS_ACT_SHAPE, BIAS_ACT_NAME = (1, 180, GRID, GRID), "lrelu"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# The masks are float32 in the network; their rules are exact, so one dtype suffices.
MASK_DTYPE = "fp32"


def _facts(op: str, device: torch.device, dtype: torch.dtype) -> dict:
    """The facts of MAT's typical call of ``op`` (what ``ops.py`` would build for it)."""
    if op == "window_attention":
        return dict(device=device, dtype=dtype, head_dim=HEAD_DIM, window_size=WINDOW, mask_dtype=torch.float32)
    if op == "window_mask_update":
        return dict(device=device, dtype=dtype, window_size=WINDOW)
    if op == "partial_conv_mask_update":
        return dict(device=device, dtype=dtype, kernel_size=PCONV_K, stride=PCONV_S)
    if op == "bias_act":
        return dict(device=device, dtype=dtype, act=BIAS_ACT_NAME, bias_dtype=dtype)
    raise ValueError(f"op must be one of mat_kernels.backends.OPS, got {op!r}")


def _op_dtypes(op: str) -> List[str]:
    return [MASK_DTYPE] if op.endswith("mask_update") else list(DTYPES)


def _versions() -> dict:
    try:
        import triton
        triton_version = getattr(triton, "__version__", "unknown")
    except Exception as exc:  # not installed, or broken: say which
        triton_version = None
        triton_error = f"{type(exc).__name__}: {exc}"
    else:
        triton_error = None
    try:
        from importlib.metadata import version
        package = version("mat_kernels")
    except Exception:  # running from a source tree without installing
        package = None
    return {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "triton": triton_version, "triton_error": triton_error,
            "mat_kernels": package,
            "triton_interpret": os.environ.get("TRITON_INTERPRET", "") == "1"}


def _device_info(device: torch.device) -> dict:
    info = {"type": device.type, "name": platform.processor() or platform.machine(), "capability": None,
            "cuda_available": torch.cuda.is_available(), "count": torch.cuda.device_count()
            if torch.cuda.is_available() else 0}
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(idx)
        props = torch.cuda.get_device_properties(idx)
        info.update(name=torch.cuda.get_device_name(idx), capability=f"{major}.{minor}",
                    memory_gib=round(props.total_memory / 2 ** 30, 1))
    return info


def _extension() -> dict:
    from . import cuda as cuda_backend
    from .cuda import library
    return {"built": library.LOAD_ERROR is None, "reason": library.LOAD_ERROR,
            "gpu_verified": bool(cuda_backend.GPU_VERIFIED)}


def availability(device: torch.device) -> List[dict]:
    """One row per (op, backend, dtype): available, or the reasons it is not."""
    from . import backends
    rows = []
    for op in backends.OPS:
        for name in backends.BACKENDS:
            for dt in _op_dtypes(op):
                why = backends.not_supported_reasons(name, op, _facts(op, device, DTYPES[dt]))
                rows.append({"op": op, "backend": name, "dtype": dt, "available": not why, "reasons": list(why)})
    return rows


def auto_choices(device: torch.device) -> List[dict]:
    """What ``backend="auto"`` picks per (op, dtype): the first of ``auto_order`` that can run."""
    from . import backends
    out = []
    for op in backends.OPS:
        for dt in _op_dtypes(op):
            facts = _facts(op, device, DTYPES[dt])
            order = backends.auto_order(op, facts)
            chosen = next((n for n in order if not backends.not_supported_reasons(n, op, facts)), None)
            out.append({"op": op, "dtype": dt, "order": order, "backend": chosen})
    return out


# ------------------------------------------------------------------------------------ quick check

def _errors(checks: dict, fwd: Tuple[str, ...]) -> dict:
    """The largest measured fwd and bwd errors among the checker's :class:`ErrorCheck` results."""
    out = {"fwd": max(c.error for n, c in checks.items() if n in fwd)}
    bwd = [c.error for n, c in checks.items() if n not in fwd]
    if bwd:
        out["bwd"] = max(bwd)
    return out


def _check_attention(backend: str, dtype: torch.dtype, device: torch.device) -> dict:
    from .testing import check_window_attention, make_mask
    g = torch.Generator().manual_seed(1)
    mask = make_mask("random", 1, GRID, GRID, WINDOW, generator=g, dtype=torch.float32)
    _, _, checks = check_window_attention(backend, 1, GRID, GRID, HEADS, HEAD_DIM, WINDOW, SHIFT, mask,
                                          dtype=dtype, device=device, backward=True)
    return _errors(checks, ("out",))


def _check_window_mask(backend: str, dtype: torch.dtype, device: torch.device) -> dict:
    from .testing import check_window_mask_update, make_mask
    mask = make_mask("random", 2, GRID, GRID, WINDOW, generator=torch.Generator().manual_seed(2), dtype=dtype)
    check_window_mask_update(backend, mask.to(device), WINDOW, SHIFT)
    return {"fwd": 0.0}  # the check asks for an exact match


def _check_pconv_mask(backend: str, dtype: torch.dtype, device: torch.device) -> dict:
    from .testing import check_partial_conv_mask_update
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(2, 1, PCONV_RES, PCONV_RES, generator=g) > 0.5).to(dtype)
    check_partial_conv_mask_update(backend, mask.to(device), PCONV_K, PCONV_S)
    return {"fwd": 0.0}  # the check asks for an exact match


def _check_bias_act(backend: str, dtype: torch.dtype, device: torch.device) -> dict:
    from .testing import check_bias_act
    g = torch.Generator().manual_seed(4)
    x = torch.randn(*BIAS_ACT_SHAPE, generator=g).to(device, dtype)
    b = torch.randn(BIAS_ACT_SHAPE[1], generator=g).to(device, dtype)
    return _errors(check_bias_act(backend, x, b, 1, BIAS_ACT_NAME), ("y",))


CHECKS = {"window_attention": _check_attention, "window_mask_update": _check_window_mask,
          "partial_conv_mask_update": _check_pconv_mask, "bias_act": _check_bias_act}


def quick_check(device: torch.device, rows: List[dict]) -> List[dict]:
    """Each available fused backend against the reference, one case per (op, dtype). A mismatch
    (the checker's AssertionError) or any exception is a failed row with its message."""
    import warnings
    out = []
    for r in rows:
        if r["backend"] == "reference" or not r["available"]:
            continue
        t0 = time.perf_counter()
        res = {"op": r["op"], "backend": r["backend"], "dtype": r["dtype"], "passed": False,
               "max_abs_err": None, "max_abs_err_grad": None, "message": None, "seconds": None}
        try:
            with warnings.catch_warnings():
                # The unverified-CUDA warning is what this check exists to settle.
                warnings.simplefilter("ignore")
                errs = CHECKS[r["op"]](r["backend"], DTYPES[r["dtype"]], device)
            res.update(passed=True, max_abs_err=errs.get("fwd"), max_abs_err_grad=errs.get("bwd"))
        except AssertionError as exc:
            res["message"] = " ".join(str(exc).split())[:500] or "AssertionError"
        except Exception as exc:  # a crash is a failure too, reported with its type
            res["message"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
        if device.type == "cuda":
            torch.cuda.synchronize()
        res["seconds"] = round(time.perf_counter() - t0, 3)
        out.append(res)
    return out


def collect(device: Optional[torch.device] = None, check: Optional[bool] = None) -> dict:
    """The whole report as a dict. ``check`` None: run the quick check only on a CUDA device."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = availability(device)
    run_check = device.type == "cuda" if check is None else check
    report = {"schema": SCHEMA, "versions": _versions(), "device": _device_info(device),
              "extension": _extension(), "backends": rows, "auto": auto_choices(device),
              "checks": [], "check_status": None}
    if run_check:
        t0 = time.perf_counter()
        report["checks"] = quick_check(device, rows)
        report["check_status"] = f"ran {len(report['checks'])} checks in {time.perf_counter() - t0:.1f} s"
    else:
        report["check_status"] = ("skipped: the quick check runs on a CUDA device (pass --check to force it)"
                                  if device.type != "cuda" else "skipped: --no-check")
    return report


# --------------------------------------------------------------------------------------- printing

def _group_reasons(rows: List[dict]) -> str:
    """'available (fp32, bf16)' or the reasons, merged over the dtypes that share them."""
    ok = [r["dtype"] for r in rows if r["available"]]
    parts = [f"available ({', '.join(ok)})"] if ok else []
    by_reason: Dict[str, List[str]] = {}
    for r in rows:
        if not r["available"]:
            by_reason.setdefault("; ".join(r["reasons"]), []).append(r["dtype"])
    for why, dts in by_reason.items():
        parts.append(f"not available ({', '.join(dts)}): {why}")
    return "\n      ".join(parts)


def format_report(rep: dict) -> str:
    v, d, e = rep["versions"], rep["device"], rep["extension"]
    lines = ["mat_kernels.info", "",
             f"python        {v['python']} ({v['platform']})",
             f"torch         {v['torch']} (CUDA {v['torch_cuda'] or 'none: CPU build'})",
             f"triton        {v['triton'] or 'not importable: ' + str(v['triton_error'])}"
             + ("  [TRITON_INTERPRET=1]" if v["triton_interpret"] else ""),
             f"mat_kernels   {v['mat_kernels'] or 'not installed (source tree)'}",
             f"device        {d['type']}: {d['name']}" + (f", capability {d['capability']}" if d["capability"] else "")
             + ("" if d["cuda_available"] else "  (torch.cuda.is_available() is False)"),
             f"extension _C  {'built' if e['built'] else 'not built: ' + str(e['reason'])}"
             + (f"; GPU verified: {e['gpu_verified']}" if e["built"] else ""), "",
             "backends (at MAT's shapes: 64x64 grid, window 8, shift 4, 6 heads of 30)"]
    ops = list(dict.fromkeys(r["op"] for r in rep["backends"]))
    for op in ops:
        lines.append(f"  {op}")
        for name in dict.fromkeys(r["backend"] for r in rep["backends"] if r["op"] == op):
            sel = [r for r in rep["backends"] if r["op"] == op and r["backend"] == name]
            lines.append(f"    {name:<10}{_group_reasons(sel)}")
        picks = [a for a in rep["auto"] if a["op"] == op]
        lines.append("    auto ->   " + ", ".join(f"{a['dtype']}: {a['backend'] or 'nothing'}" for a in picks))
    lines += ["", f"quick check: {rep['check_status']}"]
    for c in rep["checks"]:
        err = "-" if c["max_abs_err"] is None else f"{c['max_abs_err']:.2e}"
        gerr = "" if c["max_abs_err_grad"] is None else f", grad {c['max_abs_err_grad']:.2e}"
        lines.append(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['op']:<25}{c['backend']:<8}{c['dtype']:<6}"
                     f"max err {err}{gerr}  ({c['seconds']} s)" + (f"\n        {c['message']}" if c["message"] else ""))
    return "\n".join(lines)
