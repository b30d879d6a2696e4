"""Drop-in replacements for MAT's ``WindowAttention`` and ``SwinTransformerBlock``.

Constructor arguments, forward signatures, submodule and parameter names are the official ones,
so official state dicts load with ``strict=True``. The block computes its projections on the
whole token map and calls :func:`mat_kernels.ops.window_attention`, which shifts and partitions
(by copies in the reference, by index arithmetic in the fused kernels).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..reference.attention import windowed_attention
from ..reference.windows import shift_attention_bias
from .fused_qkv import normalize_tokens, project_qkv_fused
from .layers import FullyConnectedLayer


def _pair(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


class WindowAttention(nn.Module):
    """MAT's window attention on already partitioned windows.

    forward(x (B_, N, C), mask_windows (B_, N, 1) or None, mask (nW, N, N) or None)
    -> (out (B_, N, C), updated mask_windows or None). q and k are projected from the
    L2-normalised tokens, v from the raw tokens.
    """

    def __init__(self, dim, window_size, num_heads, down_ratio=1, qkv_bias=True, qk_scale=None,
                 attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.dim = dim
        self.window_size = _pair(window_size)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.q = FullyConnectedLayer(in_features=dim, out_features=dim)
        self.k = FullyConnectedLayer(in_features=dim, out_features=dim)
        self.v = FullyConnectedLayer(in_features=dim, out_features=dim)
        self.proj = FullyConnectedLayer(in_features=dim, out_features=dim)

    def project_qkv(self, x: torch.Tensor):
        """q, k from the L2-normalised tokens, v from the raw ones (any leading shape)."""
        norm_x = normalize_tokens(x)
        return self.q(norm_x), self.k(norm_x), self.v(x)

    def forward(self, x, mask_windows=None, mask=None):
        q, k, v = self.project_qkv(x)
        out, mask_windows = windowed_attention(q, k, v, self.num_heads, self.scale, mask_windows, mask)
        return self.proj(out), mask_windows


class Mlp(nn.Module):
    """MAT's MLP: fc1 (lrelu, gain sqrt 2) then fc2 (linear)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=None, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = FullyConnectedLayer(in_features=in_features, out_features=hidden_features, activation="lrelu")
        self.fc2 = FullyConnectedLayer(in_features=hidden_features, out_features=out_features)

    def forward(self, x):
        return self.fc2(self.fc1(x))


class SwinTransformerBlock(nn.Module):
    """MAT's Swin block: shifted-window attention, then fuse(concat[input, attn]) and the MLP.

    There is no residual and no LayerNorm inside the block (MAT puts the residual around the
    whole BasicLayer). When the grid is no larger than the window, the block uses one window
    covering the grid and no shift, as the official code does.

    ``backend`` selects the attention implementation ("auto", "reference", "triton", "cuda").
    """

    backend: str = "auto"

    def __init__(self, dim, input_resolution, num_heads, down_ratio=1, window_size=7, shift_size=0,
                 mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop=0.0, attn_drop=0.0, drop_path=0.0,
                 act_layer=None, norm_layer=None):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        if min(self.input_resolution) <= self.window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError(f"shift_size must satisfy 0 <= shift_size < window_size={self.window_size}, "
                             f"got {self.shift_size}")
        self.attn = WindowAttention(dim, window_size=_pair(self.window_size), num_heads=num_heads,
                                    down_ratio=down_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale)
        self.fuse = FullyConnectedLayer(in_features=dim * 2, out_features=dim, activation="lrelu")
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))
        # Persistent so official checkpoints load; forward recomputes it from x_size like the
        # official code (whose comparison with the stored copy never succeeds).
        attn_mask = None
        if self.shift_size > 0:
            H, W = self.input_resolution
            attn_mask = shift_attention_bias(H, W, self.window_size, self.shift_size)
        self.register_buffer("attn_mask", attn_mask)

    def forward(self, x: torch.Tensor, x_size, mask: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        H, W = x_size
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"x must have H*W = {H * W} tokens for x_size={tuple(x_size)}, got {L}")
        if mask is not None and tuple(mask.shape) != (B, L, 1):
            raise ValueError(f"mask must have shape (B, H*W, 1) = {(B, L, 1)}, got {tuple(mask.shape)}")
        shortcut = x
        # one GEMM for q and k (both from the normalised tokens); q, k are strided views
        q, k, v = project_qkv_fused(self.attn, x)
        q, k, v = (t.view(B, H, W, C) for t in (q, k, v))
        m = None if mask is None else mask.view(B, H, W, 1)
        out, m = ops.window_attention(q, k, v, m, window_size=self.window_size, shift_size=self.shift_size,
                                      num_heads=self.num_heads, scale=self.attn.scale, backend=self.backend)
        x = self.attn.proj(out.reshape(B, L, C))
        mask = None if m is None else m.reshape(B, L, 1)
        x = self.fuse(torch.cat([shortcut, x], dim=-1))
        return self.mlp(x), mask
