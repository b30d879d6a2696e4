"""The accuracy rule: one table, one checker, and the backend-vs-reference checks that every
test, ``mat-info`` and the benchmark use.

Keys of :data:`TOLERANCES` are (op, what, dtype): ``what`` is "fwd" for outputs and "bwd" for
gradients. :func:`check_error` measures a result against its exact (high-precision) value and
:func:`assert_close` raises when it is off. The bound depends on what the caller has:

- the reference run in the candidate's dtype (``reference=``): flash-attention's rule,
  ``max|actual - exact| <= ERROR_RATIO * max|reference - exact| + floor * max(1, max|exact|)``;
- no in-dtype reference, an entry with ``rel_l2`` (whole networks against fp32, compiled against
  eager): ``||actual - exact|| / ||exact|| <= rel_l2``;
- no in-dtype reference otherwise (recordings, a reference in a wider dtype): per element
  ``|actual - exact| <= atol + rtol * |exact|``, with ``atol``/``rtol`` covering the dtype's own
  rounding of the inputs and outputs (bf16 has 8 mantissa bits, fp16 11).

Mask outputs must match exactly (:func:`assert_mask_equal`).
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

import torch

# The candidate may be off by at most this multiple of the reference's own error in its dtype.
ERROR_RATIO = 2.0


class Tolerance(NamedTuple):
    """One row of :data:`TOLERANCES`; the fields a row leaves None do not apply to it."""
    atol: Optional[float] = None    # per element, without an in-dtype reference
    rtol: Optional[float] = None
    floor: Optional[float] = None   # with an in-dtype reference: the slack on top of ERROR_RATIO x its error
    rel_l2: Optional[float] = None  # relative L2 over the whole tensor, without an in-dtype reference


T = Tolerance
# With an in-dtype reference (``floor``), the bound scales with what the dtype can do for the case
# at hand: a large ``scale`` or saturated scores make the reference's own error large, and the
# kernels are allowed a constant multiple of it. The floor covers the cases where the reference in
# the dtype happens to be (near) exact, e.g. zero gradients of fully masked keys, and the last-bit
# differences of fp32/fp64 summation order; it is scaled by max(1, max|exact|), so a gradient of
# magnitude 10 gets ten times the slack of one of magnitude 1. Max norms over the whole tensor:
# per-element relative checks fail on the elements that cancel to near zero, which carry no
# information about the kernel's accuracy.
TOLERANCES: Dict[Tuple[str, str, torch.dtype], Tolerance] = {
    ("window_attention", "fwd", torch.float64): T(1e-10, 1e-10, floor=1e-10),
    ("window_attention", "bwd", torch.float64): T(1e-9, 1e-9, floor=1e-9),
    ("window_attention", "fwd", torch.float32): T(2e-5, 2e-5, floor=1e-6),
    # fp32 bwd floor 3e-5: SDPA's CPU backward sums dk/dv across threads in no fixed order, and a
    # fused backward's delta = dO.O and dP = dO.v round apart where the exact dS is 0 (a one-token
    # window); measured up to 1.3e-5 (dq, exact 0) and 9.0e-5 (dv, magnitude 6, scale 3).
    ("window_attention", "bwd", torch.float32): T(1e-4, 1e-4, floor=3e-5),
    ("window_attention", "fwd", torch.float16): T(2e-3, 2e-3, floor=1e-4),
    ("window_attention", "bwd", torch.float16): T(1e-2, 1e-2, floor=1e-3),
    ("window_attention", "fwd", torch.bfloat16): T(1.6e-2, 1.6e-2, floor=1e-3),
    ("window_attention", "bwd", torch.bfloat16): T(6e-2, 6e-2, floor=1e-2),
    # Fused bias+activation vs the reference in a wider dtype (fp64 for fp32, fp32 for fp16/bf16):
    # fwd covers x+b, act, gain each rounded once; bwd adds the bias gradient's reduction.
    ("bias_act", "fwd", torch.float64): T(1e-12, 1e-12),
    ("bias_act", "bwd", torch.float64): T(1e-10, 1e-10),
    ("bias_act", "fwd", torch.float32): T(2e-6, 1e-6),
    ("bias_act", "bwd", torch.float32): T(1e-5, 1e-5),
    ("bias_act", "fwd", torch.float16): T(4e-3, 2e-3),
    ("bias_act", "bwd", torch.float16): T(1e-2, 1e-2),
    ("bias_act", "fwd", torch.bfloat16): T(3e-2, 1.6e-2),
    ("bias_act", "bwd", torch.bfloat16): T(6e-2, 6e-2),
    # Full blocks and models against recorded official outputs (fp32 on CPU).
    ("swin_block", "fwd", torch.float32): T(1e-4, 1e-4),
    # Input gradient of a whole block, fused attention backend vs the reference backend (fp32).
    ("swin_block", "bwd", torch.float32): T(1e-4, 1e-4),
    ("partial_conv", "fwd", torch.float32): T(1e-5, 1e-5),
    ("model", "fwd", torch.float32): T(1e-3, 1e-3),
    # A converted official network under bf16 autocast against the unconverted network in fp32,
    # with the unconverted network under the same autocast as the in-dtype reference.
    ("model", "fwd", torch.bfloat16): T(floor=0.0),
    # Against recordings made in another process, possibly on another CPU (oneDNN and the BLAS
    # pick other kernels and summation orders per instruction set), fp32: rounding over the
    # depth of the computation. A dot product of n terms summed in another order differs by
    # about sqrt(n) u relative to its size (u = 2^-24); d layers in a row compound to d sqrt(n) u.
    # The bound b is used as rtol and, times the tensor's largest magnitude (``scale=``), as
    # atol, for the elements that cancel far below the tensor's scale; b allows 4x the estimate.
    # Mapping network: 8 FC layers of fan-in 512, normalisation and truncation: 8 sqrt(512) u = 1.1e-5.
    ("mapping", "fwd", torch.float32): T(4.3e-5, 4.3e-5),
    # Perceptual loss: VGG19's 16 convolutions of fan-in up to 4608: 16 sqrt(4608) u = 6.5e-5.
    ("perceptual_loss", "fwd", torch.float32): T(2.6e-4, 2.6e-4),
    # TwoStageLoss gradients on the tiny stand-in networks: the path runs through VGG19 forward
    # and backward, G and D: ~40 layers, 40 sqrt(4608) u = 1.6e-4.
    ("two_stage_loss", "bwd", torch.float32): T(6.5e-4, 6.5e-4),
    # Layers and resampling ops against direct formulations of their definitions.
    ("layers", "fwd", torch.float64): T(1e-10, 1e-10),
    ("layers", "fwd", torch.float32): T(1e-5, 1e-5),
    # Whole networks in reduced precision and compiled, against the same network run eagerly in
    # fp32: the relative L2 error over the whole output (or the concatenated gradients). Each op
    # whose output is rounded to a format with unit roundoff u adds a relative error with RMS about
    # u / sqrt(3), and L such errors along the longest path accumulate like a random walk,
    # sqrt(L) u / sqrt(3); the bounds allow twice that. L counts the rounded layers of the longest
    # path (an attention counts as two: scores and output), at 256:
    #   G final output: ~130 (stage 1: 3 partial convs, 14 Swin blocks x 7, 2 dec blocks x 3 and
    #                   the style FCs; stage 2: 5 encoder blocks x 2, 5 decoder blocks x 3)
    #   G stage 1:      ~110
    #   D logits:       ~20 (DisFromRGB, 6 DisBlocks x 2 convs + skip, mbstd conv, fc0, fc1)
    # bf16: u = 2^-8, so G 2 sqrt(130) 2^-8 / sqrt(3) = 5.1e-2, stage 1 4.7e-2, D 2.0e-2. fp16 has
    # u = 2^-11 (8x smaller bounds) but autocast keeps the mask rules and softmax in fp32 either
    # way. For comparison the official code's own bf16-autocast error at 256 is 3.5% (stage 1: 1.8%).
    # Gradients: training only needs them far more accurate than the minibatch gradient noise
    # (relative L2 > 1 between two minibatches of MAT's batch size at initialisation); 0.5 keeps
    # the cosine with fp32 above 0.87. Half-precision weights round every weight as well: the
    # bf16 bound of G doubles (2 roundings per layer).
    ("G", "fwd", torch.bfloat16): T(rel_l2=5.1e-2),
    ("G_stg1", "fwd", torch.bfloat16): T(rel_l2=4.7e-2),
    ("G", "bwd", torch.bfloat16): T(rel_l2=0.5),
    ("D", "fwd", torch.bfloat16): T(rel_l2=2.0e-2),
    ("D", "bwd", torch.bfloat16): T(rel_l2=0.5),
    ("G_weights", "fwd", torch.bfloat16): T(rel_l2=1.0e-1),
    ("G_stg1_weights", "fwd", torch.bfloat16): T(rel_l2=9.4e-2),
    # Small modules (a Swin stage, partial convs: L <= 20) in fp16 autocast: 2 sqrt(20) 2^-11 / sqrt(3).
    ("stage", "fwd", torch.float16): T(rel_l2=2.5e-3),
    # channels_last vs contiguous inputs, both fp32: other convolution algorithms only.
    ("channels_last", "fwd", torch.float32): T(rel_l2=1e-5),
    # The sdpa backend and the layers' CPU fast path (mat_kernels/nn/fast_conv.py) vs the reference
    # backend, both fp32: the same sums grouped differently, as in a compiled graph.
    ("fast_path", "fwd", torch.float32): T(rel_l2=1e-5),
    # Compiled vs eager, both fp32: reordered reductions only.
    ("compiled", "fwd", torch.float32): T(rel_l2=1e-5),
    ("compiled", "bwd", torch.float32): T(rel_l2=1e-4),
}
del T


def tolerance(op: str, what: str, dtype: torch.dtype) -> Tolerance:
    """The :data:`TOLERANCES` row; a KeyError naming the table if there is none."""
    try:
        return TOLERANCES[(op, what, dtype)]
    except KeyError:
        raise KeyError(f"no tolerance recorded for ({op!r}, {what!r}, {dtype}); add it to "
                       f"mat_kernels.testing.TOLERANCES") from None


class ErrorCheck(NamedTuple):
    """What :func:`check_error` measured: the error, its bound (both in the rule's measure) and a
    message describing a failure (None when ``ok``)."""
    error: float
    bound: float
    ok: bool
    message: Optional[str]


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape:
        raise AssertionError(f"shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    return ((a - e).norm() / e.norm().clamp_min(torch.finfo(torch.float64).tiny)).item()


def check_error(actual: torch.Tensor, expected: torch.Tensor, op: str, what: str,
                dtype: Optional[torch.dtype] = None, name: str = "output", *,
                reference: Optional[torch.Tensor] = None, terms: int = 1, scale: float = 1.0) -> ErrorCheck:
    """Measure ``actual`` against ``expected`` (the exact value) by the rule of the module
    docstring for the :data:`TOLERANCES` row of (op, what, ``dtype``; default ``actual.dtype``).

    ``reference``: the reference run in ``dtype`` on the same inputs (max norms, ERROR_RATIO and
    the row's floor; ``actual`` must be non-finite exactly where ``expected`` is). Without it: the
    row's ``rel_l2`` if it has one (``actual`` must be finite), else per element with its
    atol/rtol, where ``terms`` (a sum of that many independently rounded terms, e.g. a bias
    gradient) multiplies atol by sqrt(terms) and ``scale`` (the tensor's magnitude) multiplies it."""
    dtype = dtype or actual.dtype
    tol = tolerance(op, what, dtype)
    label = f"{name} ({op}/{what}/{dtype})"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape or (reference is not None and tuple(reference.shape) != tuple(e.shape)):
        raise AssertionError(f"{name}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
                             + ("" if reference is None else f" (reference in dtype {tuple(reference.shape)})"))
    if reference is not None:
        return _check_reference_rule(a, e, reference.detach().double().cpu(), tol, dtype, label)
    if tol.rel_l2 is not None:
        odd = int((~torch.isfinite(a)).sum())
        if odd:
            return ErrorCheck(float("nan"), tol.rel_l2, False, f"{label}: {odd} non-finite values")
        err = relative_l2(a, e)
        ok = err <= tol.rel_l2
        return ErrorCheck(err, tol.rel_l2, ok, None if ok else
                          f"{label}: relative L2 error {err:.3e} > bound {tol.rel_l2:.1e}")
    if tol.atol is None:
        raise KeyError(f"{label}: the TOLERANCES row has no atol/rtol; pass reference= (the reference "
                       f"run in {dtype})")
    atol = tol.atol * max(1.0, float(terms)) ** 0.5 * float(scale)
    if expected.dtype != actual.dtype:  # the exact value as the candidate's dtype stores it
        e = expected.detach().cpu().to(actual.dtype).double()
    err = (a - e).abs()
    allowed = atol + tol.rtol * e.abs()
    bad = ~torch.isclose(a, e, atol=atol, rtol=tol.rtol, equal_nan=False)
    err_max = err.max().item() if err.numel() else 0.0
    worst = (err - allowed).nan_to_num(float("inf")).argmax() if err.numel() else None
    bound = allowed.flatten()[worst].item() if worst is not None else atol
    if not bad.any():
        return ErrorCheck(err_max, bound, True, None)
    idx = bad.nonzero()[:5].tolist()
    return ErrorCheck(err_max, bound, False,
                      f"{label}: {int(bad.sum())} of {a.numel()} elements differ beyond atol={atol}, "
                      f"rtol={tol.rtol}; max abs err {err_max:.3e}; first indices {idx}: got "
                      f"{[a[tuple(i)].item() for i in idx]}, expected {[e[tuple(i)].item() for i in idx]}")


def _check_reference_rule(a, e, r, tol: Tolerance, dtype, label: str) -> ErrorCheck:
    if tol.floor is None:
        raise KeyError(f"{label}: the TOLERANCES row has no floor for a check against the reference in "
                       f"the same dtype")
    # Non-finite values only where the exact value has them (a NaN in the mask makes its window
    # NaN, as in the official code); the rest is compared.
    odd = ~torch.isfinite(a)
    if not torch.equal(odd, ~torch.isfinite(e)) or not torch.equal(a[odd].isnan(), e[odd].isnan()):
        return ErrorCheck(float("nan"), float("nan"), False,
                          f"{label}: {int(odd.sum())} non-finite values, where the float64 reference has "
                          f"{int((~torch.isfinite(e)).sum())} (at other places)")
    a, e, r = (t.masked_fill(odd, 0) for t in (a, e, r))
    err = (a - e).abs()
    err_max = err.max().item() if err.numel() else 0.0
    ref_err = (r - e).abs().max().item() if r.numel() else 0.0
    magnitude = max(1.0, e.abs().max().item() if e.numel() else 0.0)
    bound = ERROR_RATIO * ref_err + tol.floor * magnitude
    if err_max <= bound:
        return ErrorCheck(err_max, bound, True, None)
    idx = tuple(int(i) for i in (err == err.max()).nonzero()[0])
    return ErrorCheck(err_max, bound, False,
                      f"{label}: max abs error {err_max:.3e} against the exact value exceeds {ERROR_RATIO} x "
                      f"the reference's own error in {dtype} ({ref_err:.3e}) + floor {tol.floor:.1e} x "
                      f"{magnitude:.3g} = {bound:.3e}; worst at {list(idx)}: got {a[idx].item()}, exact "
                      f"{e[idx].item()}, reference in {dtype} {r[idx].item()}")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, op: str, what: str,
                 dtype: Optional[torch.dtype] = None, name: str = "output", *,
                 reference: Optional[torch.Tensor] = None, terms: int = 1, scale: float = 1.0) -> ErrorCheck:
    """:func:`check_error`, raising its message as an AssertionError when the bound is not met."""
    res = check_error(actual, expected, op, what, dtype, name, reference=reference, terms=terms, scale=scale)
    if not res.ok:
        raise AssertionError(res.message)
    return res


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
    compare: the output and every input gradient by :func:`assert_close` against the reference
    in float64, with the reference run in ``dtype`` as the in-dtype reference; the new mask
    exactly, everything finite. ``fused``: q, k, v are non-contiguous chunks of one (B, H, W, 3C)
    projection, as a fused qkv linear produces (``layout="fused"``; see :data:`QKV_LAYOUTS` for
    the others). ``grad``: the incoming gradient, one of :data:`GRAD_KINDS`. Returns the
    backend's (out, new_mask) and the :class:`ErrorCheck` of each compared tensor by name
    ("out", then "dq", "dk", "dv" or "dqkv")."""
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
    exact, exact_mask = reference_attention(leaves, qkv_of, mask, dout, torch.float64, geometry)
    in_dtype = exact if dtype == torch.float64 else reference_attention(leaves, qkv_of, mask, dout, dtype, geometry)[0]
    errors = {"out": assert_close(out, exact[0], "window_attention", "fwd", dtype, "out", reference=in_dtype[0])}
    assert_mask_equal(new_mask, exact_mask)
    if backward:
        grads = torch.autograd.grad(out, leaves, dout)
        names = ("dqkv",) if len(leaves) == 1 else ("dq", "dk", "dv")
        for name, got, exp, ref in zip(names, grads, exact[1:], in_dtype[1:]):
            errors[name] = assert_close(got, exp, "window_attention", "bwd", dtype, name, reference=ref)
    return out, new_mask, errors


def reference_attention(leaves, qkv_of, mask, dout, dtype: torch.dtype, geometry: dict):
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
                   grad: str = "random", **kw) -> Dict[str, ErrorCheck]:
    """``ops.bias_act(backend=backend)`` against the reference in a wider dtype: output and the
    gradients of x and b within the table's tolerance, for an incoming gradient of kind ``grad``
    (:data:`GRAD_KINDS`). With a clamp, fp16/bf16 gradients are checked against the reference in
    x's own dtype (see below). Returns the :class:`ErrorCheck` of "y", "dx" (and "db")."""
    from . import ops, reference
    leaves = [x.detach().requires_grad_()] + ([] if b is None else [b.detach().requires_grad_()])
    y = ops.bias_act(leaves[0], None if b is None else leaves[1], dim, act, backend=backend, **kw)
    rdt = reference_dtype(x.dtype)
    ref_leaves = [t.detach().cpu().to(rdt).requires_grad_() for t in leaves]
    y_ref = reference.bias_act(ref_leaves[0], None if b is None else ref_leaves[1], dim, act, **kw)
    errors = {"y": assert_close(y, y_ref, "bias_act", "fwd", name="y")}
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
    errors["dx"] = assert_close(grads[0], ref_grads[0], "bias_act", "bwd", dtype=x.dtype, name="dx")
    if b is not None:
        # db sums dx over every element that shares a bias entry, each rounded to x's dtype.
        errors["db"] = assert_close(grads[1], ref_grads[1], "bias_act", "bwd", dtype=x.dtype, name="db",
                                    terms=x.numel() // max(1, x.shape[dim]))
    return errors
