"""THE tolerance table and the comparison helper every test uses.

Keys are (op, what, dtype): ``what`` is "fwd" for outputs and "bwd" for gradients. Fused
backends are compared with the reference run in float32 (float64 for fp32 inputs) on the same
inputs; low-precision dtypes get tolerances that cover their own rounding of the inputs and
outputs (bf16 has 8 mantissa bits, fp16 11). Mask outputs must match exactly.
"""
from __future__ import annotations

from typing import Optional

import torch

TOLERANCES = {
    # (op, what, dtype): (atol, rtol)
    ("window_attention", "fwd", torch.float64): (1e-10, 1e-10),
    ("window_attention", "bwd", torch.float64): (1e-9, 1e-9),
    ("window_attention", "fwd", torch.float32): (2e-5, 2e-5),
    ("window_attention", "bwd", torch.float32): (1e-4, 1e-4),
    ("window_attention", "fwd", torch.float16): (2e-3, 2e-3),
    ("window_attention", "bwd", torch.float16): (1e-2, 1e-2),
    ("window_attention", "fwd", torch.bfloat16): (1.6e-2, 1.6e-2),
    ("window_attention", "bwd", torch.bfloat16): (6e-2, 6e-2),
    # Fused bias+activation vs the reference in a wider dtype (fp64 for fp32, fp32 for fp16/bf16):
    # fwd covers x+b, act, gain each rounded once; bwd adds the bias gradient's reduction.
    ("bias_act", "fwd", torch.float64): (1e-12, 1e-12),
    ("bias_act", "bwd", torch.float64): (1e-10, 1e-10),
    ("bias_act", "fwd", torch.float32): (2e-6, 1e-6),
    ("bias_act", "bwd", torch.float32): (1e-5, 1e-5),
    ("bias_act", "fwd", torch.float16): (4e-3, 2e-3),
    ("bias_act", "bwd", torch.float16): (1e-2, 1e-2),
    ("bias_act", "fwd", torch.bfloat16): (3e-2, 1.6e-2),
    ("bias_act", "bwd", torch.bfloat16): (6e-2, 6e-2),
    # Full blocks and models against recorded official outputs (fp32 on CPU).
    ("swin_block", "fwd", torch.float32): (1e-4, 1e-4),
    # Input gradient of a whole block, fused attention backend vs the reference backend (fp32).
    ("swin_block", "bwd", torch.float32): (1e-4, 1e-4),
    ("partial_conv", "fwd", torch.float32): (1e-5, 1e-5),
    ("model", "fwd", torch.float32): (1e-3, 1e-3),
    # Layers and resampling ops against direct formulations of their definitions.
    ("layers", "fwd", torch.float64): (1e-10, 1e-10),
    ("layers", "fwd", torch.float32): (1e-5, 1e-5),
}


def tolerance(op: str, what: str, dtype: torch.dtype):
    try:
        return TOLERANCES[(op, what, dtype)]
    except KeyError:
        raise KeyError(f"no tolerance recorded for ({op!r}, {what!r}, {dtype}); add it to "
                       f"mat_kernels.testing.TOLERANCES") from None


def assert_close(actual: torch.Tensor, expected: torch.Tensor, op: str, what: str,
                 dtype: Optional[torch.dtype] = None, name: str = "output") -> None:
    """assert_close with the table's tolerance; on failure names the worst indices."""
    dtype = dtype or actual.dtype
    atol, rtol = tolerance(op, what, dtype)
    expected = expected.to(actual.dtype) if expected.dtype != actual.dtype else expected
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    bad = ~torch.isclose(a, e, atol=atol, rtol=rtol, equal_nan=False)
    if bad.any():
        idx = bad.nonzero()[:5].tolist()
        err = (a - e).abs()
        raise AssertionError(
            f"{name} ({op}/{what}/{dtype}): {int(bad.sum())} of {a.numel()} elements differ beyond "
            f"atol={atol}, rtol={rtol}; max abs err {err.max().item():.3e}; first indices {idx}: "
            f"got {[a[tuple(i)].item() for i in idx]}, expected {[e[tuple(i)].item() for i in idx]}")


def assert_mask_equal(actual: Optional[torch.Tensor], expected: Optional[torch.Tensor], name: str = "new_mask"):
    """Masks from every backend must equal the reference exactly (shape, dtype and values)."""
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{name}: got {type(actual)}, expected {type(expected)}"
        return
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    diff = (actual.cpu() != expected.cpu())
    if diff.any():
        raise AssertionError(f"{name}: {int(diff.sum())} elements differ; first at {diff.nonzero()[:5].tolist()}")


# ---- mat_kernels.official (issue 13): converted official networks ----------------------------
# Under autocast, a converted network's max error against the fp32 output of the unconverted
# official network may be at most this multiple of that network's own error in the same dtype
# (the "within 2x PyTorch's own error" rule of the style guide).
OFFICIAL_AUTOCAST_ERROR_RATIO = 2.0
