"""What every backend and the registry agree on: the ops, the facts a call is judged by, the
limits type, the dtypes, the calling convention of the entry points and the attention autograd
formula the fused backends share.

This module imports only torch. The backend packages (:mod:`mat_kernels.reference`,
:mod:`mat_kernels.sdpa`, :mod:`mat_kernels.triton`, :mod:`mat_kernels.cuda`) and the registry
(:mod:`mat_kernels.backends`) import it; it imports none of them.

A backend package exposes:

* ``not_supported_reasons(op, facts) -> list[str]``: empty when it can run ``op`` for ``facts``;
* ``ENTRY_POINTS``: op name -> callable, for the ops it implements. Entries take arguments that
  :mod:`mat_kernels.ops` has already validated and completed, positionally, in the order of
  :data:`SIGNATURES`. A ``window_attention`` entry returns a tuple whose first item is the output
  and whose last is the new mask (None or an empty tensor when there is no mask); a fused backend
  puts the log-sum-exp it saves for the backward between them, so its ``torch.library`` op is the
  entry itself. The other entries return what the public op returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, TypedDict

import torch

# The public ops, and the positional arguments their entry points take.
SIGNATURES = {
    "window_attention": ("q", "k", "v", "mask", "window_size", "shift_size", "num_heads", "scale"),
    "window_mask_update": ("mask", "window_size", "shift_size"),
    "partial_conv_mask_update": ("mask", "kernel_size", "stride"),
    "bias_act": ("x", "b", "dim", "act", "alpha", "gain", "clamp"),
}
OPS = tuple(SIGNATURES)

# Floating dtypes the public ops accept (the reference runs all of them); masks may also be bool.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MASK_DTYPES = (torch.bool,) + FLOAT_DTYPES
# The dtypes of the fused kernels' attention: fp64 has no tensor-core path.
HALF_AND_FP32 = (torch.float16, torch.bfloat16, torch.float32)


class Facts(TypedDict, total=False):
    """What the limits of a backend are stated in. ``device`` and ``dtype`` are always present;
    the rest only for the ops they concern. A plain dict, so that ``torch.compile`` traces the
    chooser without a graph break (callers build it with ``dict(...)``)."""
    device: torch.device
    dtype: torch.dtype          # q/k/v for attention, the mask for mask rules, x for bias_act
    head_dim: int               # window_attention
    window_size: int            # window_attention, window_mask_update
    mask_dtype: Optional[torch.dtype]  # window_attention (None: no mask)
    kernel_size: int            # partial_conv_mask_update
    stride: int                 # partial_conv_mask_update
    act: str                    # bias_act
    bias_dtype: Optional[torch.dtype]  # bias_act (None: no bias)


def dtype_reason(what: str, dtype: torch.dtype, allowed: Tuple[torch.dtype, ...]) -> List[str]:
    """``[]`` when ``dtype`` is in ``allowed``, else the one reason naming both."""
    return [] if dtype in allowed else [f"{what} must be one of {allowed}, got {dtype}"]


@dataclass(frozen=True)
class AttentionLimits:
    """The shapes and dtypes a fused attention implementation supports."""
    dtypes: Tuple[torch.dtype, ...]
    max_head_dim: int
    max_window_tokens: int

    def reasons(self, facts: Facts) -> List[str]:
        out = dtype_reason("dtype", facts["dtype"], self.dtypes)
        if facts["head_dim"] > self.max_head_dim:
            out.append(f"head_dim must be <= {self.max_head_dim}, got {facts['head_dim']}")
        if facts["window_size"] ** 2 > self.max_window_tokens:
            out.append(f"window_size**2 must be <= {self.max_window_tokens}, got {facts['window_size'] ** 2}")
        return out


# Both fused backends keep a whole padded head (<= 128 channels) and a window's key set (<= 1024
# tokens, windows up to 32x32) within one program's tiles. csrc/launchers.h states the same
# numbers for C++ (tests/cuda/test_backend.py checks that they agree).
FUSED_ATTENTION_LIMITS = AttentionLimits(dtypes=HALF_AND_FP32, max_head_dim=128, max_window_tokens=1024)


def window_attention_autograd(bwd_op):
    """``(backward, setup_context)`` for ``register_autograd`` on a fused forward op
    ``fwd(q, k, v, mask?, window_size, shift_size, num_heads, scale) -> (out, lse, new_mask)``
    whose backward op is ``bwd_op(dout, q, k, v, mask?, out, lse, window_size, shift_size,
    num_heads, scale) -> (dq, dk, dv)``. Gradients flow to q, k, v only: the mask, the saved
    log-sum-exp and the new mask are not differentiable."""

    def setup_context(ctx, inputs, output):
        q, k, v, mask, window_size, shift_size, num_heads, scale = inputs
        out, lse, new_mask = output
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.geometry = (window_size, shift_size, num_heads, scale)
        ctx.mark_non_differentiable(lse, new_mask)

    def backward(ctx, dout, _dlse, _dnew_mask):
        if dout is None:
            return (None,) * 8
        q, k, v, mask, out, lse = ctx.saved_tensors
        dq, dk, dv = bwd_op(dout, q, k, v, mask, out, lse, *ctx.geometry)
        return dq, dk, dv, None, None, None, None, None

    return backward, setup_context
