"""Shifted-window contextual attention through ``F.scaled_dot_product_attention``.

The math is the reference's (:mod:`mat_kernels.reference.attention`): scores ``q k^T * scale``
plus the shift-region bias plus the key-validity bias, softmax, times v, with the biases built
by the reference's rules. What differs is only where the work happens: the biases are summed
once per call into one tensor of (B_, 1, N or 1, N) that SDPA broadcasts over the heads (the
reference adds them to the (B_, heads, N, N) scores), and SDPA's fused kernel computes scores,
softmax and output without keeping the per-head scores.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..reference.attention import key_validity_bias, windowed_mask_update
from ..reference.windows import from_windows, shift_attention_bias, to_windows


def bias_dtype(q: torch.Tensor) -> torch.dtype:
    """The dtype of the additive mask handed to SDPA. On CPU at least float32, as the reference
    adds its biases to scores held in at least float32 (SDPA's CPU kernel takes a float32 mask
    for fp16/bf16 q and adds it in float32). On CUDA q's dtype, which the fused kernels require
    of a float mask (-100 and -200 are exact in fp16 and bf16)."""
    if q.device.type == "cpu" and q.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return q.dtype


def window_bias(B: int, H: int, W: int, window_size: int, shift_size: int,
                mask_windows: Optional[torch.Tensor], device, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The shift-region bias and the key-validity bias of one call as one additive mask for SDPA.

    ``mask_windows``: (B * nW, N, 1) window-partitioned mask or None. Returns None (no bias:
    shift 0 and no mask), (B_, 1, 1, N) (key bias only, broadcast over heads and queries) or
    (B_, 1, N, N) (shift bias, plus the key bias where there is a mask), never per head.
    """
    N = window_size * window_size
    nW = (H // window_size) * (W // window_size)
    bias = None
    if shift_size > 0:
        bias = shift_attention_bias(H, W, window_size, shift_size, device=device, dtype=dtype).view(1, nW, N, N)
    if mask_windows is not None:
        key = key_validity_bias(mask_windows, dtype).view(B, nW, 1, N)
        bias = key if bias is None else bias + key
    if bias is None:
        return None
    if bias.shape[0] != B:  # shift bias alone: the same for every image
        bias = bias.expand(B, nW, N, N)
    return bias.reshape(B * nW, 1, bias.shape[-2], N)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                     window_size: int, shift_size: int, num_heads: int, scale: float
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The contract of :func:`mat_kernels.reference.window_attention` for arguments already
    validated and completed by :func:`mat_kernels.ops.window_attention` (``scale`` given)."""
    B, H, W, C = q.shape
    ws, s = window_size, shift_size
    N, d = ws * ws, C // num_heads
    m = None
    if mask is not None:
        m = (mask if mask.ndim == 4 else mask.unsqueeze(-1)).detach()  # the mask gets no gradient
    qw, kw, vw = (to_windows(t, ws, s).view(-1, N, num_heads, d).transpose(1, 2) for t in (q, k, v))
    mw = None if m is None else to_windows(m, ws, s)
    bias = window_bias(B, H, W, ws, s, mw, q.device, bias_dtype(q))
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=bias, scale=scale)
    out = from_windows(out.transpose(1, 2).reshape(-1, N, C), ws, s, H, W)
    new_mask = None
    if mw is not None:
        with torch.no_grad():
            new_mask = from_windows(windowed_mask_update(mw), ws, s, H, W)
        if mask.ndim == 3:
            new_mask = new_mask.squeeze(-1)
    return out, new_mask
