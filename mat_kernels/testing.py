"""THE tolerance table, the comparison helpers, and the one backend-vs-reference checker that
every test (and ``python -m mat_kernels.info``) uses.

Keys are (op, what, dtype): ``what`` is "fwd" for outputs and "bwd" for gradients. Fused
backends are compared with the reference run in float32 (float64 for fp32 inputs) on the same
inputs; low-precision dtypes get tolerances that cover their own rounding of the inputs and
outputs (bf16 has 8 mantissa bits, fp16 11). Mask outputs must match exactly.

The window attention's backend check (:func:`check_window_attention`) uses one rule instead:
the error against the reference in float64 may be at most k times the reference's own error in
the same dtype plus atol (:data:`REFERENCE_ERROR_RULE`, :func:`assert_within_reference_error`).
"""
from __future__ import annotations

from typing import Optional, Tuple

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
    # Against recordings made in another process, possibly on another CPU (oneDNN and the BLAS
    # pick other kernels and summation orders per instruction set), fp32: rounding over the
    # depth of the computation. A dot product of n terms summed in another order differs by
    # about sqrt(n) u relative to its size (u = 2^-24); d layers in a row compound to d sqrt(n) u.
    # The bound b is used as rtol and, times the tensor's largest magnitude (``scale=``), as
    # atol, for the elements that cancel far below the tensor's scale; b allows 4x the estimate.
    # Mapping network: 8 FC layers of fan-in 512, normalisation and truncation: 8 sqrt(512) u = 1.1e-5.
    ("mapping", "fwd", torch.float32): (4.3e-5, 4.3e-5),
    # Perceptual loss: VGG19's 16 convolutions of fan-in up to 4608: 16 sqrt(4608) u = 6.5e-5.
    ("perceptual_loss", "fwd", torch.float32): (2.6e-4, 2.6e-4),
    # TwoStageLoss gradients on the tiny stand-in networks: the path runs through VGG19 forward
    # and backward, G and D: ~40 layers, 40 sqrt(4608) u = 1.6e-4.
    ("two_stage_loss", "bwd", torch.float32): (6.5e-4, 6.5e-4),
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
                 dtype: Optional[torch.dtype] = None, name: str = "output", terms: int = 1,
                 scale: float = 1.0) -> None:
    """assert_close with the table's tolerance; on failure names the worst indices.

    ``terms``: for a value that is a sum of that many independently rounded terms (a bias
    gradient), atol grows with sqrt(terms), as the rounding errors of the terms add up.
    ``scale``: atol is multiplied by it (the tensor's magnitude, for entries whose atol is
    relative to it)."""
    dtype = dtype or actual.dtype
    atol, rtol = tolerance(op, what, dtype)
    atol = atol * max(1.0, float(terms)) ** 0.5 * float(scale)
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
    """Masks from every backend must equal the reference exactly (shape, dtype and values; a NaN
    must be NaN in both, as NaN mask values propagate in every backend)."""
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{name}: got {type(actual)}, expected {type(expected)}"
        return
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    a, e = actual.cpu(), expected.cpu()
    diff = (a != e) & ~(a.isnan() & e.isnan())
    if diff.any():
        raise AssertionError(f"{name}: {int(diff.sum())} elements differ; first at {diff.nonzero()[:5].tolist()}")


# ----------------------------------------------------------------------------------------------
# Token-mask patterns (1 = valid, 0 = hole) and the attention cases every backend is checked on
# ----------------------------------------------------------------------------------------------
MASK_PATTERNS = ("none", "all_valid", "all_holes", "random", "one_valid_per_window", "large_hole")


def make_mask(pattern: str, B: int, H: int, W: int, window: int, generator=None, dtype=torch.float64):
    """(B, H, W, 1) mask of the given pattern, or None for "none"."""
    if pattern == "none":
        return None
    if pattern == "all_valid":
        m = torch.ones(B, H, W, 1)
    elif pattern == "all_holes":
        m = torch.zeros(B, H, W, 1)
    elif pattern == "random":
        m = (torch.rand(B, H, W, 1, generator=generator) > 0.5).float()
    elif pattern == "one_valid_per_window":
        m = torch.zeros(B, H, W, 1)
        for wy in range(H // window):
            for wx in range(W // window):
                y = wy * window + int(torch.randint(window, (1,), generator=generator))
                x = wx * window + int(torch.randint(window, (1,), generator=generator))
                m[:, y, x] = 1
    elif pattern == "large_hole":
        # A hole that crosses window borders and, for shifted windows, the shift regions:
        # rows and columns from a quarter to the last three quarters plus a few tokens.
        m = torch.ones(B, H, W, 1)
        m[:, H // 4 - 1: H - H // 8, W // 4 - 3: W - 1] = 0
    else:
        raise ValueError(f"unknown mask pattern {pattern!r}")
    return m.to(dtype)


# (B, H, W, heads, head_dim, window, shift, mask pattern): a pairwise cover of window/shift in
# {8: 0, 4, 3; 16: 0, 8, 3}, heads {1, 6}, head_dim {30, 32, 64}, batch {1, 2}, grids {16x16,
# 32x32, 16x48} and the six mask patterns (every pair of values appears in some case).
ATTENTION_CASES = [
    (1, 16, 16, 6, 30, 8, 0, "none"),
    (2, 16, 48, 1, 30, 8, 4, "random"),
    (2, 16, 16, 1, 32, 8, 3, "all_holes"),
    (2, 16, 16, 6, 64, 8, 3, "one_valid_per_window"),
    (1, 16, 16, 6, 64, 8, 0, "large_hole"),
    (2, 16, 16, 1, 30, 8, 4, "all_valid"),
    (1, 16, 16, 1, 32, 16, 0, "all_valid"),
    (1, 32, 32, 1, 30, 16, 8, "large_hole"),
    (2, 16, 48, 1, 30, 16, 3, "none"),
    (1, 16, 16, 6, 30, 16, 3, "one_valid_per_window"),
    (1, 32, 32, 1, 64, 16, 3, "random"),
    (1, 16, 16, 1, 30, 16, 8, "all_holes"),
    (1, 16, 48, 1, 32, 8, 4, "one_valid_per_window"),
    (1, 16, 16, 6, 32, 8, 4, "all_valid"),
]


# ----------------------------------------------------------------------------------------------
# The window attention's rule: error relative to the reference's own error in the same dtype
# ----------------------------------------------------------------------------------------------
# A fused kernel in ``dtype`` is compared with the reference run in float64 on the same inputs
# (the inputs as ``dtype`` stores them), and so is the reference run in ``dtype`` itself:
#
#     max|fused - ref_fp64| <= k * max|ref_dtype - ref_fp64| + atol          (per output/gradient)
#
# as flash-attention's tests do. The reference in ``dtype`` is what PyTorch itself computes in
# that precision (fp16/bf16: products rounded to the dtype, biases and softmax in fp32,
# probabilities rounded before P @ V), so the bound scales with what the dtype can do for the
# case at hand: a large ``scale`` or saturated scores make the reference's own error large, and
# the kernels are allowed a constant multiple of it, not a fixed number. ``atol`` covers the
# cases where the reference in ``dtype`` happens to be (near) exact, e.g. zero gradients of
# fully masked keys, and the last-bit differences of fp32/fp64 summation order; it is scaled by
# max(1, max|ref_fp64|), so a gradient of magnitude 10 (e.g. scale 1.0 on wide heads) gets ten
# times the slack of one of magnitude 1, as a relative tolerance would. For float64 the reference
# error is 0 and the rule is max|fused - ref_fp64| <= atol * max(1, max|ref_fp64|).
# Max norms over the whole tensor (not per element): per-element relative checks fail on the
# elements that cancel to near zero, which carry no information about the kernel's accuracy.
REFERENCE_ERROR_RULE = {
    # (op, what, dtype): (k, atol)
    ("window_attention", "fwd", torch.float64): (2.0, 1e-10),
    ("window_attention", "bwd", torch.float64): (2.0, 1e-9),
    ("window_attention", "fwd", torch.float32): (2.0, 1e-6),
    ("window_attention", "bwd", torch.float32): (2.0, 1e-5),
    ("window_attention", "fwd", torch.float16): (2.0, 1e-4),
    ("window_attention", "bwd", torch.float16): (2.0, 1e-3),
    ("window_attention", "fwd", torch.bfloat16): (2.0, 1e-3),
    ("window_attention", "bwd", torch.bfloat16): (2.0, 1e-2),
}


def reference_error_rule(op: str, what: str, dtype: torch.dtype) -> Tuple[float, float]:
    """(k, atol) of :data:`REFERENCE_ERROR_RULE`; a KeyError naming the table if there is none."""
    try:
        return REFERENCE_ERROR_RULE[(op, what, dtype)]
    except KeyError:
        raise KeyError(f"no reference-error rule recorded for ({op!r}, {what!r}, {dtype}); add it to "
                       f"mat_kernels.testing.REFERENCE_ERROR_RULE") from None


def assert_within_reference_error(actual: torch.Tensor, exact: torch.Tensor, reference_in_dtype: torch.Tensor,
                                  op: str, what: str, dtype: Optional[torch.dtype] = None,
                                  name: str = "output") -> float:
    """Check max|actual - exact| <= k * max|reference_in_dtype - exact| + atol * max(1, max|exact|)
    (k, atol from :data:`REFERENCE_ERROR_RULE` for ``dtype``, default ``actual.dtype``) and that
    ``actual`` is non-finite exactly where ``exact`` is. ``exact``: the reference in float64;
    ``reference_in_dtype``: the reference run in ``dtype`` on the same inputs. Returns the fused
    error (for reports)."""
    dtype = dtype or actual.dtype
    k, atol = reference_error_rule(op, what, dtype)
    a, e, r = (t.detach().double().cpu() for t in (actual, exact, reference_in_dtype))
    if a.shape != e.shape or r.shape != e.shape:
        raise AssertionError(f"{name}: shapes {tuple(a.shape)}, reference in dtype {tuple(r.shape)}, "
                             f"exact {tuple(e.shape)} differ")
    # Non-finite values only where the exact reference has them (a NaN in the mask makes its
    # window NaN, as in the official code); the rest is compared.
    odd = ~torch.isfinite(a)
    if not torch.equal(odd, ~torch.isfinite(e)) or not torch.equal(a[odd].isnan(), e[odd].isnan()):
        raise AssertionError(f"{name} ({op}/{what}/{dtype}): {int(odd.sum())} non-finite values, where the "
                             f"float64 reference has {int((~torch.isfinite(e)).sum())} (at other places)")
    a, e, r = (t.masked_fill(odd, 0) for t in (a, e, r))
    err = (a - e).abs()
    err_max = err.max().item() if err.numel() else 0.0
    ref_err = (r - e).abs().max().item() if r.numel() else 0.0
    magnitude = max(1.0, e.abs().max().item() if e.numel() else 0.0)
    bound = k * ref_err + atol * magnitude
    if not err_max <= bound:
        idx = tuple(int(i) for i in (err == err.max()).nonzero()[0])
        raise AssertionError(
            f"{name} ({op}/{what}/{dtype}): max abs error {err_max:.3e} against the float64 reference "
            f"exceeds {k} x the reference's own error in {dtype} ({ref_err:.3e}) + atol {atol:.1e} x "
            f"{magnitude:.3g} = "
            f"{bound:.3e}; worst at {list(idx)}: got {a[idx].item()}, exact {e[idx].item()}, "
            f"reference in {dtype} {r[idx].item()}")
    return err_max


def reference_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the reference runs in when checking a backend in ``dtype``: float64 for fp32/fp64,
    float32 for fp16/bf16 (the table's low-precision tolerances cover their own rounding)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else torch.float64


# q/k/v layouts the attention checker draws inputs in: "contiguous" (three (B, H, W, C) tensors),
# "fused" (chunks of one (B, H, W, 3C) projection), "permuted" ((B, C, H, W) tensors seen as
# (B, H, W, C): channel stride H*W), "sliced" (every other token column of a (B, H, 2W, C) tensor
# and the first C channels of a wider one: row strides that are not the size of a row).
QKV_LAYOUTS = ("contiguous", "fused", "permuted", "sliced")
# Incoming gradients: "random" (standard normal), "zeros", "sparse" (normal on ~5% of the
# elements, zero elsewhere), "strided" (random, given as a non-contiguous view).
GRAD_KINDS = ("random", "zeros", "sparse", "strided")


def attention_inputs(layout: str, shape, dtype: torch.dtype, device, seed: int):
    """Random q, k, v of ``shape`` (B, H, W, C) in one of :data:`QKV_LAYOUTS`: returns the leaf
    tensors (requiring grad) and a function mapping leaves (these, or copies in another dtype) to
    (q, k, v)."""
    B, H, W, C = shape
    g = torch.Generator().manual_seed(seed)

    def leaf(*size):
        return torch.randn(*size, generator=g).to(device, dtype).requires_grad_()

    if layout == "contiguous":
        return tuple(leaf(B, H, W, C) for _ in range(3)), tuple
    if layout == "fused":
        return (leaf(B, H, W, 3 * C),), lambda leaves: tuple(leaves[0].chunk(3, dim=-1))
    if layout == "permuted":
        return tuple(leaf(B, C, H, W) for _ in range(3)), lambda leaves: tuple(t.permute(0, 2, 3, 1) for t in leaves)
    if layout == "sliced":
        return ((leaf(B, H, 2 * W, C), leaf(B, H, W, C + 3), leaf(B, H, W, 2 * C)),
                lambda ls: (ls[0][:, :, ::2], ls[1][..., :C], ls[2][..., C:]))
    raise ValueError(f"layout must be one of {QKV_LAYOUTS}, got {layout!r}")


def incoming_grad(kind: str, shape, dtype: torch.dtype, device, seed: int) -> torch.Tensor:
    """An incoming gradient of ``shape`` of one of the :data:`GRAD_KINDS`."""
    g = torch.Generator().manual_seed(seed)
    if kind == "zeros":
        return torch.zeros(shape, device=device, dtype=dtype)
    if kind == "strided" and len(shape):
        # Every other element along the last dim of a tensor twice as wide.
        return torch.randn(*shape[:-1], 2 * shape[-1], generator=g).to(device, dtype)[..., ::2]
    d = torch.randn(shape, generator=g)
    if kind == "sparse":
        d = d * (torch.rand(shape, generator=g) < 0.05)
    elif kind not in ("random", "strided"):
        raise ValueError(f"grad must be one of {GRAD_KINDS}, got {kind!r}")
    return d.to(device, dtype)


def check_window_attention(backend: str, B: int, H: int, W: int, heads: int, head_dim: int, window_size: int,
                           shift_size: int, mask: Optional[torch.Tensor], dtype: torch.dtype = torch.float32,
                           device="cpu", fused: bool = False, seed: int = 0, scale: Optional[float] = None,
                           backward: bool = True, layout: Optional[str] = None, grad: str = "random"
                           ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Run ``ops.window_attention(backend=backend)`` and the reference on the same random inputs and
    compare: the output and every input gradient by :func:`assert_within_reference_error` (against
    the reference in float64, relative to the reference's own error in ``dtype``), the new mask
    exactly, everything finite. ``fused``: q, k, v are non-contiguous chunks of one (B, H, W, 3C)
    projection, as a fused qkv linear produces (``layout="fused"``; see :data:`QKV_LAYOUTS` for
    the others). ``grad``: the incoming gradient, one of :data:`GRAD_KINDS`. Returns the
    backend's (out, new_mask)."""
    from . import ops
    C = heads * head_dim
    layout = layout or ("fused" if fused else "contiguous")
    leaves, qkv_of = attention_inputs(layout, (B, H, W, C), dtype, device, seed)
    q, k, v = qkv_of(leaves)
    out, new_mask = ops.window_attention(q, k, v, None if mask is None else mask.to(device),
                                         window_size=window_size, shift_size=shift_size, num_heads=heads,
                                         scale=scale, backend=backend)
    assert out.shape == q.shape and out.dtype == dtype, f"out: {tuple(out.shape)} {out.dtype}"
    dout = incoming_grad(grad, out.shape, dtype, device, seed + 1) if backward else None
    geometry = dict(window_size=window_size, shift_size=shift_size, num_heads=heads, scale=scale)
    exact, exact_mask = _reference_attention(leaves, qkv_of, mask, dout, torch.float64, geometry)
    in_dtype = exact if dtype == torch.float64 else _reference_attention(leaves, qkv_of, mask, dout, dtype, geometry)[0]
    assert_within_reference_error(out, exact[0], in_dtype[0], "window_attention", "fwd", name="out")
    assert_mask_equal(new_mask, exact_mask)
    if backward:
        grads = torch.autograd.grad(out, leaves, dout)
        names = ("dqkv",) if len(leaves) == 1 else ("dq", "dk", "dv")
        for name, got, exp, ref in zip(names, grads, exact[1:], in_dtype[1:]):
            assert_within_reference_error(got, exp, ref, "window_attention", "bwd", dtype=dtype, name=name)
    return out, new_mask


def _reference_attention(leaves, qkv_of, mask, dout, dtype: torch.dtype, geometry: dict):
    """The reference on CPU copies of ``leaves`` in ``dtype`` (``qkv_of`` maps them to q, k, v):
    ((out, *input gradients), new_mask); no gradients when ``dout`` is None."""
    from . import reference
    ref_leaves = tuple(t.detach().cpu().to(dtype).requires_grad_() for t in leaves)
    q, k, v = qkv_of(ref_leaves)
    out, new_mask = reference.window_attention(q, k, v, None if mask is None else mask.cpu(), **geometry)
    grads = () if dout is None else torch.autograd.grad(out, ref_leaves, dout.cpu().to(dtype))
    return (out, *grads), new_mask


def check_window_mask_update(backend: str, mask: torch.Tensor, window_size: int, shift_size: int) -> None:
    """``ops.window_mask_update(backend=backend)`` equals the reference exactly."""
    from . import ops, reference
    got = ops.window_mask_update(mask, window_size=window_size, shift_size=shift_size, backend=backend)
    exp = reference.window_mask_update(mask.cpu(), window_size=window_size, shift_size=shift_size)
    assert_mask_equal(got, exp)


def check_partial_conv_mask_update(backend: str, mask: torch.Tensor, kernel_size: int, stride: int) -> None:
    """``ops.partial_conv_mask_update(backend=backend)`` equals the reference exactly (new mask and
    ratio), NaN in the same places (from NaN mask values) and finite everywhere else."""
    from . import ops, reference
    new, ratio = ops.partial_conv_mask_update(mask, kernel_size=kernel_size, stride=stride, backend=backend)
    exp_new, exp_ratio = reference.partial_conv_mask_update(mask.cpu(), kernel_size=kernel_size, stride=stride)
    assert not ratio.isinf().any(), "infinite ratio"
    assert_mask_equal(new, exp_new, name="new_mask")
    assert_mask_equal(ratio, exp_ratio, name="ratio")


def check_bias_act(backend: str, x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str,
                   grad: str = "random", **kw) -> None:
    """``ops.bias_act(backend=backend)`` against the reference in a wider dtype: output and the
    gradients of x and b within the table's tolerance, for an incoming gradient of kind ``grad``
    (:data:`GRAD_KINDS`). With a clamp, fp16/bf16 gradients are checked against the reference in
    x's own dtype (see below)."""
    from . import ops, reference
    leaves = [x.detach().requires_grad_()] + ([] if b is None else [b.detach().requires_grad_()])
    y = ops.bias_act(leaves[0], None if b is None else leaves[1], dim, act, backend=backend, **kw)
    rdt = reference_dtype(x.dtype)
    ref_leaves = [t.detach().cpu().to(rdt).requires_grad_() for t in leaves]
    y_ref = reference.bias_act(ref_leaves[0], None if b is None else ref_leaves[1], dim, act, **kw)
    assert_close(y, y_ref, "bias_act", "fwd", name="y")
    dy = incoming_grad(grad, y.shape, y.dtype, y.device, 3)
    grads = torch.autograd.grad(y, leaves, dy)
    clamp = kw.get("clamp")
    if clamp is not None and clamp >= 0 and rdt != x.dtype:
        # The clamp gates the gradient (dy inside [-clamp, clamp], 0 outside): a step, decided on
        # the values x's dtype stores (PyTorch compares a half tensor with the clamp rounded to
        # that dtype). Near the step a wider reference decides otherwise and no tolerance covers
        # it, so with a clamp the gradients are checked against the reference run in x's dtype.
        ref_leaves = [t.detach().cpu().requires_grad_() for t in leaves]
        y_ref = reference.bias_act(ref_leaves[0], None if b is None else ref_leaves[1], dim, act, **kw)
        rdt = x.dtype
    ref_grads = torch.autograd.grad(y_ref, ref_leaves, dy.cpu().to(rdt))
    assert_close(grads[0], ref_grads[0], "bias_act", "bwd", dtype=x.dtype, name="dx")
    if b is not None:
        # db sums dx over every element that shares a bias entry, each rounded to x's dtype.
        assert_close(grads[1], ref_grads[1], "bias_act", "bwd", dtype=x.dtype, name="db",
                     terms=x.numel() // max(1, x.shape[dim]))


# ---- mat_kernels.official (issue 13): converted official networks ----------------------------
# Under autocast, a converted network's max error against the fp32 output of the unconverted
# official network may be at most this multiple of that network's own error in the same dtype
# (the "within 2x PyTorch's own error" rule of the style guide).
OFFICIAL_AUTOCAST_ERROR_RATIO = 2.0


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
    # The sdpa backend and the layers' CPU fast path (mat_kernels/nn/fast_conv.py) vs the reference
    # backend, both fp32: the same sums grouped differently, as in a compiled graph.
    ("fast_path", "fwd", torch.float32): 1e-5,
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
