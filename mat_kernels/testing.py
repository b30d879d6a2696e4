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


# ------------------------------------------------------------------------------------------------
# Whole networks in reduced precision and compiled, against the same network run eagerly in fp32.
#
# Measured as the relative L2 error ||y - y_fp32|| / ||y_fp32|| over the whole output (or the
# concatenated gradients). The bound for a network is derived from bf16/fp16 rounding: each op
# whose output is rounded to a format with unit roundoff u adds a relative error with RMS about
# u / sqrt(3) (uniform rounding error), and L such errors along the longest path accumulate like a
# random walk, sqrt(L) u / sqrt(3). The bounds allow twice that. L counts the rounded layers of the
# longest path (an attention counts as two: scores and output), at 256:
#   G final output:  ~130 (stage 1: 3 partial convs, 14 Swin blocks x 7, 2 dec blocks x 3 and the
#                    style FCs; stage 2: 5 encoder blocks x 2, 5 decoder blocks x 3)
#   G stage 1:       ~110
#   D logits:        ~20 (DisFromRGB, 6 DisBlocks x 2 convs + skip, mbstd conv, fc0, fc1)
# bf16: u = 2^-8, so G 2 sqrt(130) 2^-8 / sqrt(3) = 5.1e-2, stage 1 4.7e-2, D 2.0e-2. fp16 has
# u = 2^-11 (8x smaller bounds) but autocast keeps the mask rules and softmax in fp32 either way.
# For comparison the official code's own bf16-autocast error at 256 is 3.5% (stage 1: 1.8%).
#
# Gradients: backward doubles the path and the parameter gradients of a GAN are sums over every
# pixel of products of two rounded tensors; more to the point, training only needs them to be
# far more accurate than the minibatch gradient noise (relative L2 > 1 between two minibatches
# of MAT's batch size at initialisation). The bound 0.5 keeps the cosine with fp32 above 0.87.
#
# Half-precision weights round every weight as well: the bf16 bound of G doubles (2 roundings
# per layer). Compiled graphs reorder fp32 reductions only: the fp32 model tolerance applies.
PRECISION_REL_L2 = {
    # (network, what, dtype): bound on the relative L2 error against fp32
    ("G", "fwd", torch.bfloat16): 5.1e-2,
    ("G_stg1", "fwd", torch.bfloat16): 4.7e-2,
    ("G", "bwd", torch.bfloat16): 0.5,
    ("D", "fwd", torch.bfloat16): 2.0e-2,
    ("D", "bwd", torch.bfloat16): 0.5,
    ("G_weights", "fwd", torch.bfloat16): 1.0e-1,
    ("G_stg1_weights", "fwd", torch.bfloat16): 9.4e-2,
    # Small modules (a Swin stage, partial convs: L <= 20) in fp16 autocast: 2 sqrt(20) 2^-11 / sqrt(3).
    ("stage", "fwd", torch.float16): 2.5e-3,
    # channels_last vs contiguous inputs, both fp32: other convolution algorithms only.
    ("channels_last", "fwd", torch.float32): 1e-5,
    # Compiled vs eager, both fp32: reordered reductions only.
    ("compiled", "fwd", torch.float32): 1e-5,
    ("compiled", "bwd", torch.float32): 1e-4,
}


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape:
        raise AssertionError(f"shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    return ((a - e).norm() / e.norm().clamp_min(torch.finfo(torch.float64).tiny)).item()


def assert_relative_l2(actual: torch.Tensor, expected: torch.Tensor, net: str, what: str,
                       dtype: torch.dtype, name: str = "output") -> float:
    """Check finiteness and the relative L2 error against ``PRECISION_REL_L2``; returns the error."""
    try:
        bound = PRECISION_REL_L2[(net, what, dtype)]
    except KeyError:
        raise KeyError(f"no bound recorded for ({net!r}, {what!r}, {dtype}); add it to "
                       f"mat_kernels.testing.PRECISION_REL_L2") from None
    if not torch.isfinite(actual).all():
        raise AssertionError(f"{name} ({net}/{what}/{dtype}): {int((~torch.isfinite(actual)).sum())} "
                             f"non-finite values")
    err = relative_l2(actual, expected)
    if not err <= bound:
        raise AssertionError(f"{name} ({net}/{what}/{dtype}): relative L2 error {err:.3e} > bound {bound:.1e}")
    return err
