"""The "cuda" backend as the rest of the package sees it, on a machine without the extension or
without a GPU: it says why it cannot run, forcing it raises with those reasons, and
``backend="auto"`` never picks it (no GPU run of it has been recorded, see
mat_kernels/backends/preferences.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mat_kernels
from mat_kernels import backends, ops
from mat_kernels import cuda
from mat_kernels.cuda import library as _ext

OPS = ("window_attention", "window_mask_update", "partial_conv_mask_update")
CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def _facts(op, device, dtype=torch.float32, head_dim=32, window_size=8):
    if op == "window_attention":
        return dict(device=device, dtype=dtype, head_dim=head_dim, window_size=window_size, mask_dtype=None)
    return dict(device=device, dtype=dtype, window_size=window_size, kernel_size=3, stride=1)


def _built_extension_files():
    pkg = Path(mat_kernels.__file__).parent
    return sorted(pkg.glob("_C*.so")) + sorted(pkg.glob("_C*.pyd"))


def test_load_error_says_the_extension_was_not_built():
    if _built_extension_files():
        pytest.skip("this installation has a compiled mat_kernels._C")
    assert _ext.LOAD_ERROR == _ext.NOT_BUILT
    with pytest.raises(RuntimeError, match="installed without the CUDA extension"):
        _ext.ops()


@pytest.mark.parametrize("op", OPS)
def test_reasons_on_cpu_tensors(op):
    why = cuda.not_supported_reasons(op, _facts(op, CPU))
    assert any("needs CUDA tensors" in r for r in why), why
    if _ext.LOAD_ERROR is not None:
        assert any(_ext.LOAD_ERROR in r for r in why), why


def test_reasons_name_each_unsupported_attention_fact():
    facts = _facts("window_attention", CUDA, dtype=torch.float64, head_dim=129, window_size=33)
    facts["mask_dtype"] = torch.int32
    why = "\n".join(cuda.not_supported_reasons("window_attention", facts))
    for needle in ("dtype must be one of", "head_dim must be <= 128, got 129", "window_size**2 must be <= 1024, got 1089",
                   "mask dtype must be one of"):
        assert needle in why, f"{needle!r} missing from:\n{why}"


def test_supported_facts_leave_only_the_extension_reason():
    for op in OPS:
        why = cuda.not_supported_reasons(op, _facts(op, CUDA, dtype=torch.float16, head_dim=128, window_size=32))
        expected = [] if _ext.LOAD_ERROR is None else [f"the CUDA extension mat_kernels._C is not available: {_ext.LOAD_ERROR}"]
        assert why == expected, (op, why)


def test_forcing_the_backend_raises_with_every_reason():
    B, H, W, C = 1, 8, 8, 8
    q = torch.randn(B, H, W, C)
    mask = torch.ones(B, H, W, 1)
    with pytest.raises(RuntimeError) as info:
        ops.window_attention(q, q, q, mask, window_size=4, shift_size=2, num_heads=2, backend="cuda")
    msg = str(info.value)
    assert "cuda:" in msg and "needs CUDA tensors" in msg, msg
    if _ext.LOAD_ERROR is not None:
        assert _ext.LOAD_ERROR in msg, msg
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        ops.window_mask_update(mask, window_size=4, shift_size=2, backend="cuda")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        ops.partial_conv_mask_update(torch.ones(1, 1, 8, 8), kernel_size=3, backend="cuda")


@pytest.mark.parametrize("op", OPS)
def test_auto_never_picks_cuda(op):
    # On CUDA tensors auto follows the recorded preferences, which do not list this backend yet.
    assert "cuda" not in backends.auto_order(op, _facts(op, CUDA))
    # On CPU tensors: the CPU preferences of this machine (sdpa or nothing), then the reference.
    assert backends.auto_order(op, _facts(op, CPU)) == list(backends.CPU_ORDER.get(op, ())) + ["reference"]


def test_auto_on_cpu_never_runs_cuda(monkeypatch):
    q = torch.randn(1, 8, 8, 8)
    monkeypatch.setattr(backends, "CPU_ORDER", {})  # auto on CPU is then the reference alone
    out, new_mask = ops.window_attention(q, q, q, None, window_size=4, num_heads=2, backend="auto")
    ref, _ = mat_kernels.reference.window_attention(q, q, q, None, window_size=4, num_heads=2)
    assert new_mask is None and torch.equal(out, ref)


def test_python_limits_match_the_kernels_constants():
    """The limits are stated once per language: backends.FUSED_ATTENTION_LIMITS for the chooser,
    csrc/launchers.h for the C++ checks. They must agree."""
    import re
    text = (Path(__file__).resolve().parents[2] / "csrc" / "launchers.h").read_text()
    head_dim = int(re.search(r"kMaxHeadDim\s*=\s*(\d+)", text).group(1))
    tokens = int(re.search(r"kMaxWindowTokens\s*=\s*(\d+)", text).group(1))
    limits = backends.FUSED_ATTENTION_LIMITS
    assert (limits.max_head_dim, limits.max_window_tokens) == (head_dim, tokens)
