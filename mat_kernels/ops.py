"""Public ops: validate the arguments, choose a backend, call it.

``backend="auto"`` runs the fused kernels on CUDA tensors and the reference on CPU tensors;
"reference", "triton" and "cuda" force one (and raise, listing reasons, when it cannot run).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _checks, backends


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                     window_size: int, shift_size: int = 0, num_heads: int, scale: Optional[float] = None,
                     backend: str = "auto") -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """MAT's shifted-window contextual attention; contract of
    :func:`mat_kernels.reference.window_attention`, plus ``backend``."""
    B, H, W, C, head_dim = _checks.check_window_attention_args(
        q, k, v, mask, window_size, shift_size, num_heads, scale)
    facts = dict(device=q.device, dtype=q.dtype, head_dim=head_dim, window_size=window_size,
                 mask_dtype=None if mask is None else mask.dtype)
    fn = backends.choose("window_attention", backend, facts)
    return fn(q, k, v, mask, window_size=window_size, shift_size=shift_size, num_heads=num_heads, scale=scale)


def window_mask_update(mask: torch.Tensor, *, window_size: int, shift_size: int = 0,
                       backend: str = "auto") -> torch.Tensor:
    """The attention mask rule alone; contract of :func:`mat_kernels.reference.window_mask_update`."""
    _checks.check_window_mask_update_args(mask, window_size, shift_size)
    facts = dict(device=mask.device, dtype=mask.dtype, window_size=window_size)
    fn = backends.choose("window_mask_update", backend, facts)
    return fn(mask, window_size=window_size, shift_size=shift_size)


def partial_conv_mask_update(mask: torch.Tensor, *, kernel_size: int, stride: int = 1,
                             backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """The partial-convolution mask rule; contract of
    :func:`mat_kernels.reference.partial_conv_mask_update`."""
    _checks.check_partial_conv_args(mask, kernel_size, stride)
    facts = dict(device=mask.device, dtype=mask.dtype, kernel_size=kernel_size, stride=stride)
    fn = backends.choose("partial_conv_mask_update", backend, facts)
    return fn(mask, kernel_size=kernel_size, stride=stride)
