"""torch.library registration of the Triton window-attention kernels, with autograd.

Ops (namespace ``mat_kernels``, suffix ``_triton`` because the CUDA extension registers its own
ops in the same namespace):

* ``window_attention_fwd_triton(q, k, v, mask?, window_size, shift_size, num_heads, scale)
  -> (out, lse, new_mask)``. Custom ops cannot return an optional tensor, so without a mask
  ``new_mask`` is an empty tensor that :func:`window_attention` drops. ``lse`` (fp32,
  (B * nW * heads, N)) is the per-row log-sum-exp saved for the backward.
* ``window_attention_bwd_triton(dout, q, k, v, mask?, out, lse, ...) -> (dq, dk, dv)``.

Both are ``torch.library.triton_op``s, so torch.compile sees through them to the Triton kernels
(no graph break) and the fake implementations come from tracing the Python launchers with fake
tensors. Under TRITON_INTERPRET=1 (CPU tests) they are opaque ``custom_op``s with explicit fakes,
because ``wrap_triton`` cannot trace interpreted kernels (see ``_register``).

The forward's autograd formula calls the backward op; the mask gets no gradient, and out's
gradient only flows to q, k, v (lse and new_mask are not differentiable). Double backward is not
supported.

Autocast: the ops have no autocast kernel (autocast falls through and the kernels run in the
inputs' dtype). :func:`window_attention` itself casts q, k, v to the autocast dtype when
autocast is enabled for their device, like PyTorch does for its own attention ops; the mask is
never cast (its dtype is part of the contract: new_mask has the mask's dtype).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch.library import triton_op, wrap_triton

from .._autograd import window_attention_autograd
from . import window_attention as _k

_NS = "mat_kernels"


def _n_windows(q: torch.Tensor, window_size: int) -> int:
    return (q.shape[1] // window_size) * (q.shape[2] // window_size)


def _fwd_outputs(q, mask, window_size, num_heads):
    B, H, W, C = q.shape
    N = window_size * window_size
    out = torch.empty((B, H, W, C), device=q.device, dtype=q.dtype)
    lse = torch.empty((B * _n_windows(q, window_size) * num_heads, N), device=q.device, dtype=torch.float32)
    if mask is not None:
        new_mask = torch.empty(mask.shape, device=mask.device, dtype=mask.dtype)
    else:
        new_mask = torch.empty((0,), device=q.device, dtype=q.dtype)
    return out, lse, new_mask


def _fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
         window_size: int, shift_size: int, num_heads: int, scale: float
         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out, lse, new_mask = _fwd_outputs(q, mask, window_size, num_heads)
    _k.fwd_launch(wrap_triton, q, k, v, mask, out, lse, new_mask, window_size, shift_size, num_heads, scale)
    return out, lse, new_mask


def _fwd_fake(q, k, v, mask, window_size, shift_size, num_heads, scale):
    return _fwd_outputs(q, mask, window_size, num_heads)


def _bwd_outputs(q):
    return tuple(torch.empty(q.shape, device=q.device, dtype=q.dtype) for _ in range(3))


def _bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
         mask: Optional[torch.Tensor], out: torch.Tensor, lse: torch.Tensor,
         window_size: int, shift_size: int, num_heads: int, scale: float
         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = _bwd_outputs(q)
    delta = torch.empty(lse.shape, device=q.device, dtype=torch.float32)
    _k.bwd_launch(wrap_triton, dout, q, k, v, mask, out, lse, delta, dq, dk, dv,
                  window_size, shift_size, num_heads, scale)
    return dq, dk, dv


def _bwd_fake(dout, q, k, v, mask, out, lse, window_size, shift_size, num_heads, scale):
    return _bwd_outputs(q)


def _register(name, fn, fake):
    """A ``triton_op`` when the kernels are compiled (torch.compile then sees the Triton launches
    themselves and derives the fake implementation from ``fn``). Under TRITON_INTERPRET=1 the
    kernels are plain Python callables that ``wrap_triton`` cannot trace, so the op is an opaque
    ``custom_op`` with an explicit fake instead; both run the same launcher."""
    qualname = f"{_NS}::{name}"
    if _k._interpreting():
        op = torch.library.custom_op(qualname, fn, mutates_args=())
        op.register_fake(fake)
        return op
    return triton_op(qualname, fn, mutates_args=())


window_attention_fwd = _register("window_attention_fwd_triton", _fwd, _fwd_fake)
window_attention_bwd = _register("window_attention_bwd_triton", _bwd, _bwd_fake)


_backward, _setup_context = window_attention_autograd(window_attention_bwd)
window_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                     window_size: int, shift_size: int = 0, num_heads: int, scale: Optional[float] = None
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Shifted-window contextual attention on the Triton kernels.

    Contract of :func:`mat_kernels.reference.window_attention`: q, k, v (B, H, W, C) (any
    strides), mask (B, H, W, 1) or (B, H, W) bool/float or None. Returns out (B, H, W, C) in the
    un-shifted layout and the updated mask (shape and dtype of ``mask``) or None.
    Arguments are assumed validated (``mat_kernels.ops`` does it).
    """
    head_dim = q.shape[-1] // num_heads
    scale = head_dim ** -0.5 if scale is None else float(scale)
    dev = q.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        if dt in (torch.float16, torch.bfloat16, torch.float32):
            q, k, v = q.to(dt), k.to(dt), v.to(dt)
    out, _lse, new_mask = window_attention_fwd(q, k, v, mask, window_size, shift_size, num_heads, scale)
    return out, (new_mask if mask is not None else None)
