"""Window attention written out step by step for tests that need its intermediate values (the
per-query logsumexp the kernels save, the softmax matrix). Built from mat_kernels.reference."""
from __future__ import annotations

import torch

from mat_kernels.reference import from_windows, shift_attention_bias, to_windows
from mat_kernels.reference.attention import key_validity_bias


def windowed(q, k, v, mask, ws, s, heads, scale):
    """Rolled, partitioned (B_, heads, N, d) q, k, v and the (B_, 1, N, N) total bias."""
    B, H, W, C = q.shape
    N, d = ws * ws, C // heads
    qw, kw, vw = (to_windows(t, ws, s).view(-1, N, heads, d).transpose(1, 2) for t in (q, k, v))
    bias = torch.zeros(qw.shape[0], 1, N, N, dtype=q.dtype)
    if s:
        bias = bias + shift_attention_bias(H, W, ws, s, dtype=q.dtype).repeat(B, 1, 1).unsqueeze(1)
    if mask is not None:
        m = mask if mask.ndim == 4 else mask.unsqueeze(-1)
        bias = bias + key_validity_bias(to_windows(m, ws, s), q.dtype)
    return qw, kw, vw, bias


def unwindow(t, ws, s, H, W):
    """(B_, heads, N, d) -> (B, H, W, heads * d) in the un-shifted layout."""
    B_, heads, N, d = t.shape
    return from_windows(t.transpose(1, 2).reshape(B_, N, heads * d), ws, s, H, W)


def reference_lse(q, k, mask, ws, s, heads, scale):
    """Per-query logsumexp of the biased scores, (B, heads, H, W) float32, as the kernels save it."""
    H, W = q.shape[1:3]
    qw, kw, _, bias = windowed(q, k, k, mask, ws, s, heads, scale)
    lse = torch.logsumexp((qw @ kw.transpose(-1, -2)) * scale + bias, dim=-1)  # (B_, heads, N)
    return unwindow(lse.unsqueeze(-1), ws, s, H, W).permute(0, 3, 1, 2).contiguous().float()
