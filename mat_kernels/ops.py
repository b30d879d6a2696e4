"""The public ops. Each one validates its arguments once, completes them (default scale, the
autocast dtype of q/k/v, activation defaults), chooses a backend (:mod:`mat_kernels.backends`)
and calls that backend's entry point.

``backend="auto"`` takes the order of :func:`mat_kernels.backends.auto_order`; a backend's name
forces it (and raises, listing every reason, when it cannot run).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _checks, backends
from .reference.bias_act import ACTIVATIONS, bias_act_defaults

__all__ = ["window_attention", "window_mask_update", "partial_conv_mask_update", "bias_act", "autocast_dtype"]


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The dtype ``torch.autocast`` runs its half ops in on ``device``, or None when it is off
    there (or the device has no autocast, e.g. meta tensors)."""
    dev = device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return None


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                     window_size: int, shift_size: int = 0, num_heads: int, scale: Optional[float] = None,
                     backend: str = "auto") -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """MAT's shifted-window contextual attention: the contract of
    :func:`mat_kernels.reference.window_attention`, plus ``backend``.

    Under ``torch.autocast`` q, k and v run in the autocast dtype; the mask is never cast (the new
    mask comes back in the mask's dtype, and the mask rule counts exactly in any dtype).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _checks.check_tokens(name, t)
    # numpy and other index-like scalars become Python numbers once, here: backends see only those.
    window_size, shift_size, num_heads = _checks.as_ints(window_size=window_size, shift_size=shift_size,
                                                         num_heads=num_heads)
    scale = _checks.as_float("scale", scale, optional=True)
    # The one place the dtype of q/k/v is decided: under autocast they run in its dtype, as
    # PyTorch's own attention ops do (they can arrive in different dtypes there: a projection
    # whose fp32 bias is added after a half GEMM stays fp32); otherwise they must share one.
    dtype = autocast_dtype(q.device)
    if dtype is not None:
        q, k, v = (t if t.dtype == dtype else t.to(dtype) for t in (q, k, v))
    _, _, _, _, head_dim = _checks.check_window_attention_args(q, k, v, mask, window_size, shift_size,
                                                               num_heads, scale)
    scale = head_dim ** -0.5 if scale is None else float(scale)
    facts: backends.Facts = dict(device=q.device, dtype=q.dtype, head_dim=head_dim, window_size=window_size,
                           mask_dtype=None if mask is None else mask.dtype)
    result = backends.choose("window_attention", backend, facts)(q, k, v, mask, window_size, shift_size,
                                                                 num_heads, scale)
    # An entry returns (out, ..., new_mask): fused ops put their saved lse between, and give an
    # empty new mask when there is no mask (custom ops cannot return None).
    return result[0], (result[-1] if mask is not None else None)


def window_mask_update(mask: torch.Tensor, *, window_size: int, shift_size: int = 0,
                       backend: str = "auto") -> torch.Tensor:
    """The attention layer's mask rule alone: the contract of
    :func:`mat_kernels.reference.window_mask_update`, plus ``backend``."""
    window_size, shift_size = _checks.as_ints(window_size=window_size, shift_size=shift_size)
    _checks.check_window_mask_update_args(mask, window_size, shift_size)
    facts: backends.Facts = dict(device=mask.device, dtype=mask.dtype, window_size=window_size)
    fn = backends.choose("window_mask_update", backend, facts)
    return fn(mask, window_size, shift_size)


def partial_conv_mask_update(mask: torch.Tensor, *, kernel_size: int, stride: int = 1,
                             backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """The partial-convolution mask rule: the contract of
    :func:`mat_kernels.reference.partial_conv_mask_update`, plus ``backend``."""
    kernel_size, stride = _checks.as_ints(kernel_size=kernel_size, stride=stride)
    _checks.check_partial_conv_args(mask, kernel_size, stride)
    facts: backends.Facts = dict(device=mask.device, dtype=mask.dtype, kernel_size=kernel_size, stride=stride)
    fn = backends.choose("partial_conv_mask_update", backend, facts)
    return fn(mask, kernel_size, stride)


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
             alpha: Optional[float] = None, gain: Optional[float] = None, clamp: Optional[float] = None, *,
             backend: str = "auto") -> torch.Tensor:
    """Bias, activation, gain and clamp of the StyleGAN2 layers: the contract of
    :func:`mat_kernels.reference.bias_act`, plus ``backend``."""
    dim = _checks.check_bias_act_args(x, b, _checks.as_int("dim", dim), act, ACTIVATIONS)
    alpha, gain, clamp = (_checks.as_float(n, v, optional=True) for n, v in (("alpha", alpha), ("gain", gain),
                                                                             ("clamp", clamp)))
    if b is not None and b.dtype != x.dtype:
        # Under autocast x leaves the conv/matmul in fp16/bf16 while b is the fp32 parameter:
        # x + b promotes to fp32 (as in the official layers). Promoting both first is exact, gives
        # the same result, and lets a fused kernel run on one dtype.
        dtype = torch.promote_types(x.dtype, b.dtype)
        x, b = x.to(dtype), b.to(dtype)
    alpha, gain, clamp = bias_act_defaults(act, alpha, gain, clamp)
    facts: backends.Facts = dict(device=x.device, dtype=x.dtype, act=act, bias_dtype=None if b is None else b.dtype)
    fn = backends.choose("bias_act", backend, facts)
    return fn(x, b, dim, act, alpha, gain, clamp)
