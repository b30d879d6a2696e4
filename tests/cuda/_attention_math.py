"""Window attention written out step by step for tests that need its intermediate values (the
per-query logsumexp the kernels save, the softmax matrix). Built from mat_kernels.reference."""
from __future__ import annotations

import torch

from mat_kernels.reference import shift_attention_bias, window_partition, window_reverse
from mat_kernels.reference.attention import key_validity_bias


def windowed(q, k, v, mask, ws, s, heads, scale):
    """Rolled, partitioned (B_, heads, N, d) q, k, v and the (B_, 1, N, N) total bias."""
    B, H, W, C = q.shape
    N, d = ws * ws, C // heads
    roll = (lambda t: torch.roll(t, shifts=(-s, -s), dims=(1, 2))) if s else (lambda t: t)
    qw, kw, vw = (window_partition(roll(t), ws).view(-1, N, heads, d).transpose(1, 2) for t in (q, k, v))
    bias = torch.zeros(qw.shape[0], 1, N, N, dtype=q.dtype)
    if s:
        bias = bias + shift_attention_bias(H, W, ws, s, dtype=q.dtype).repeat(B, 1, 1).unsqueeze(1)
    if mask is not None:
        m = mask if mask.ndim == 4 else mask.unsqueeze(-1)
        bias = bias + key_validity_bias(window_partition(roll(m), ws).view(-1, N, 1).to(q.dtype))
    return qw, kw, vw, bias


def unwindow(t, ws, s, H, W):
    """(B_, heads, N, d) -> (B, H, W, heads * d) in the un-shifted layout."""
    B_, heads, N, d = t.shape
    x = window_reverse(t.transpose(1, 2).reshape(B_, ws, ws, heads * d), ws, H, W)
    return torch.roll(x, shifts=(s, s), dims=(1, 2)) if s else x


def reference_lse(q, k, mask, ws, s, heads, scale):
    """Per-query logsumexp of the biased scores, (B, heads, H, W) float32, as the kernels save it."""
    H, W = q.shape[1:3]
    qw, kw, _, bias = windowed(q, k, k, mask, ws, s, heads, scale)
    lse = torch.logsumexp((qw @ kw.transpose(-1, -2)) * scale + bias, dim=-1)  # (B_, heads, N)
    return unwindow(lse.unsqueeze(-1), ws, s, H, W).permute(0, 3, 1, 2).contiguous().float()
