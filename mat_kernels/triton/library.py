"""The ``torch.library`` ops of the Triton kernels: schemas, fake implementations and autograd.

Namespace ``mat_kernels``, suffix ``_triton`` (the CUDA extension registers its own ops in the
same namespace):

* ``window_attention_fwd_triton(q, k, v, mask?, window_size, shift_size, num_heads, scale)
  -> (out, lse, new_mask)``. Custom ops cannot return an optional tensor, so without a mask
  ``new_mask`` is an empty tensor, which :func:`mat_kernels.ops.window_attention` turns into None. ``lse`` (fp32, (B * nW * heads, N)) is
  the per-row log-sum-exp saved for the backward.
* ``window_attention_bwd_triton(dout, q, k, v, mask?, out, lse, ...) -> (dq, dk, dv)``.
* ``window_mask_update_triton(mask, window_size, shift_size) -> new_mask`` and
  ``partial_conv_mask_update_triton(mask, kernel_size, stride) -> (new_mask, ratio)``: no
  gradient (masks are not differentiated in MAT).
* ``bias_act_triton(x, b?, dim, act, alpha, gain, clamp) -> y`` and
  ``bias_act_grad_triton(dy, x, b?, dim, act, alpha, gain, clamp) -> dx``, each with autograd.

The attention ops are ``torch.library.triton_op``s when the kernels are compiled, so
torch.compile sees through them to the Triton launches (no graph break) and derives their fakes
by tracing the launchers. Under TRITON_INTERPRET=1 (the CPU tests) ``wrap_triton`` cannot trace
interpreted kernels, so they are opaque ``custom_op``s with explicit fakes; both run the same
launcher. The attention forward's autograd is the formula both fused backends share
(:func:`mat_kernels.contract.window_attention_autograd`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch.library import triton_op, wrap_triton

from ..contract import window_attention_autograd
from . import bias_act as _ba
from . import mask_update as _mu
from . import window_attention as _wa
from ._common import interpreting

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
    _wa.window_attention_fwd(wrap_triton, q, k, v, mask, out, lse, new_mask, window_size, shift_size, num_heads, scale)
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
    _wa.window_attention_bwd(wrap_triton, dout, q, k, v, mask, out, lse, delta, dq, dk, dv,
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
    if interpreting():
        op = torch.library.custom_op(qualname, fn, mutates_args=())
        op.register_fake(fake)
        return op
    return triton_op(qualname, fn, mutates_args=())


window_attention_fwd = _register("window_attention_fwd_triton", _fwd, _fwd_fake)
window_attention_bwd = _register("window_attention_bwd_triton", _bwd, _bwd_fake)


_backward, _setup_context = window_attention_autograd(window_attention_bwd)
window_attention_fwd.register_autograd(_backward, setup_context=_setup_context)



# ----------------------------------------------------------------------------------------------
# mask rules (opaque to torch.compile; the fakes give shapes and dtypes)
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op(f"{_NS}::window_mask_update_triton", mutates_args=())
def window_mask_update(mask: torch.Tensor, window_size: int, shift_size: int) -> torch.Tensor:
    return _mu.window_mask_update_triton(mask, window_size, shift_size)


@window_mask_update.register_fake
def _(mask, window_size, shift_size):
    return mask.new_empty(mask.shape)


@torch.library.custom_op(f"{_NS}::partial_conv_mask_update_triton", mutates_args=())
def partial_conv_mask_update(mask: torch.Tensor, kernel_size: int, stride: int
                             ) -> Tuple[torch.Tensor, torch.Tensor]:
    return _mu.partial_conv_mask_update_triton(mask, kernel_size, stride)


@partial_conv_mask_update.register_fake
def _(mask, kernel_size, stride):
    shape = _mu.pconv_out_shape(mask.shape, kernel_size, stride)
    dtype = torch.float32 if mask.dtype == torch.bool else mask.dtype
    return mask.new_empty(shape, dtype=dtype), mask.new_empty(shape, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# bias_act: forward and gradient ops with autograd (the gradient op has its own autograd for double backward)
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op(f"{_NS}::bias_act_triton", mutates_args=())
def bias_act(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float, gain: float,
                 clamp: float) -> torch.Tensor:
    return _ba.bias_act_fwd(x, b, dim, act, alpha, gain, clamp)


@bias_act.register_fake
def _(x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op(f"{_NS}::bias_act_grad_triton", mutates_args=())
def bias_act_grad(dy: torch.Tensor, x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str,
                      alpha: float, gain: float, clamp: float) -> torch.Tensor:
    return _ba.bias_act_grad(dy, x, b, dim, act, alpha, gain, clamp)


@bias_act_grad.register_fake
def _(dy, x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _save(ctx, inputs, output):
    # Both ops end with (x, b, dim, act, alpha, gain, clamp); the gradient op has dy in front.
    x, b = inputs[-7], inputs[-6]
    ctx.save_for_backward(x, b)
    ctx.params = inputs[-5:]


def _bias_act_backward(ctx, dy):
    x, b = ctx.saved_tensors
    dim = ctx.params[0]
    dx = bias_act_grad(dy, x, b, *ctx.params)
    db = None
    if b is not None and ctx.needs_input_grad[1]:
        db = dx.sum(dim=[d for d in range(dx.ndim) if d != dim]) if dx.ndim > 1 else dx
    return dx, db, None, None, None, None, None


def _bias_act_grad_backward(ctx, ddx):
    # dx is linear in dy with a factor that is piecewise constant in x and b: d(dx)/d(dy) is the
    # same op, d(dx)/dx = d(dx)/db = 0.
    x, b = ctx.saved_tensors
    d_dy = bias_act_grad(ddx, x, b, *ctx.params)
    return d_dy, None, None, None, None, None, None, None


torch.library.register_autograd(f"{_NS}::bias_act_triton", _bias_act_backward, setup_context=_save)
torch.library.register_autograd(f"{_NS}::bias_act_grad_triton", _bias_act_grad_backward,
                                setup_context=_save)
