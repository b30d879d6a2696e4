"""MAT's multi-head contextual attention, in plain PyTorch, in the official op order.

This is the ground truth every fused kernel is tested against. Tokens come in image layout
(B, H, W, C) with heads as contiguous chunks of C; the cyclic shift and the window partition are
explicit copies here, as in the released code.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import _checks
from .windows import MASK_BIAS, from_windows, shift_attention_bias, to_windows


def key_validity_bias(mask_windows: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The official rule for the key bias: exact 0 -> -100, exact 1 -> 0, any other value kept.

    The rule compares the mask's own values, in the mask's dtype (bool as 0/1), as the official
    ``masked_fill(mask == 0, -100)`` does; only the resulting bias is then converted to ``dtype``
    (default: the mask's floating dtype). Rounding the mask first would change the rule: 1e-8 in
    float16 is 0 (-> -100), 0.9999 in bfloat16 is 1 (-> 0).

    ``mask_windows`` is (B_, N, 1); the result is (B_, 1, 1, N), broadcast over heads and queries.
    """
    m = mask_windows.squeeze(-1).unsqueeze(1).unsqueeze(1)
    if m.dtype == torch.bool:
        m = m.to(dtype or torch.float32)
    bias = m.masked_fill(m == 0, MASK_BIAS).masked_fill(m == 1, 0.0)
    return bias if dtype is None else bias.to(dtype)


def windowed_mask_update(mask_windows: torch.Tensor) -> torch.Tensor:
    """MAT's attention mask update on (B_, N, 1) windows: every token of a window becomes
    clamp(sum of the window's mask, 0, 1), i.e. valid if any token was valid."""
    N = mask_windows.shape[1]
    if mask_windows.dtype == torch.bool:
        return mask_windows.any(dim=1, keepdim=True).expand(-1, N, -1).contiguous()
    return torch.clamp(torch.sum(mask_windows, dim=1, keepdim=True), 0, 1).repeat(1, N, 1)


def windowed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                       scale: float, mask_windows: Optional[torch.Tensor] = None,
                       shift_bias: Optional[torch.Tensor] = None
                       ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Attention inside windows, exactly as MAT's ``WindowAttention`` after its projections.

    Args:
        q, k, v: (B_, N, C) projected tokens of B_ windows of N tokens.
        num_heads: heads; head h uses channels [h * C / heads, (h + 1) * C / heads).
        scale: applied after the product q k^T.
        mask_windows: (B_, N, 1) key validity (1 valid, 0 hole) or None; see
            :func:`window_attention` for the rule, NaN and (no) gradient.
        shift_bias: (nW, N, N) additive bias, window index fastest in B_, or None.
    Returns:
        out (B_, N, C) before the output projection, and the updated (B_, N, 1) mask or None.
    """
    B_, N, C = q.shape
    d = C // num_heads
    if mask_windows is not None:
        mask_windows = mask_windows.detach()  # the mask gets no gradient (in every backend)
    q, k, v = (t.reshape(B_, N, num_heads, d).permute(0, 2, 1, 3) for t in (q, k, v))
    # q @ k^T with k permuted like q and v, then transposed. The official code permutes k to
    # (B_, h, d, N) directly, which computes the same product, but inductor's attention pattern
    # matcher (torch 2.13, torch/_inductor/fx_passes/fuse_attention.py) takes that form for
    # ``q @ k.transpose(-2, -1)`` and hands the un-permuted k to scaled_dot_product_attention,
    # which then fails to broadcast ("Attempting to broadcast a dimension of length 64"); the
    # smallest repro is softmax((q @ k) * s) @ v with k = t.reshape(B, N, h, d).permute(0, 2, 3, 1)
    # under torch.no_grad() in torch.compile. This form compiles.
    attn = (q @ k.transpose(-2, -1)) * scale
    if attn.dtype in (torch.float16, torch.bfloat16):
        # Biases and softmax in fp32, as the fused kernels do and as the official code does under
        # autocast (its fp32 bias buffers promote the scores). fp32/fp64 inputs are untouched.
        attn = attn.float()
    if shift_bias is not None:
        nW = shift_bias.shape[0]
        attn = attn.view(B_ // nW, nW, num_heads, N, N) + shift_bias.to(attn.dtype).unsqueeze(1).unsqueeze(0)
        attn = attn.view(B_, num_heads, N, N)
    new_mask = None
    if mask_windows is not None:
        attn = attn + key_validity_bias(mask_windows, attn.dtype)
        with torch.no_grad():
            new_mask = windowed_mask_update(mask_windows)
    attn = torch.softmax(attn, dim=-1).to(v.dtype)
    out = (attn @ v).transpose(1, 2).reshape(B_, N, C)
    return out, new_mask


def _as_token_mask(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.ndim == 4 else mask.unsqueeze(-1)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: Optional[torch.Tensor] = None, *, window_size: int, shift_size: int = 0,
                     num_heads: int, scale: Optional[float] = None
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Shifted-window contextual attention with MAT's dynamic key mask.

    Args:
        q, k, v: (B, H, W, C) projected tokens, C = num_heads * head_dim.
        mask: (B, H, W, 1) or (B, H, W), 1 = valid, 0 = hole (bool or float), or None. See
            "Mask semantics" below.
        window_size: window side; must divide H and W.
        shift_size: cyclic shift, 0 <= shift_size < window_size.
        num_heads: number of heads.
        scale: score scale, default head_dim ** -0.5.
    Returns:
        out (B, H, W, C) in the input (un-shifted) layout, and the updated mask with the shape and
        dtype of ``mask`` (None when ``mask`` is None).

    Mask semantics (the same in every backend of :mod:`mat_kernels.ops`):

    * Key bias: the official rule on the mask's own values, in its own dtype, never rounded to
      q's dtype first (under autocast the mask stays float32 while q/k/v are cast): exactly 0
      -> -100, exactly 1 -> 0, any other value (0.9999, 1e-8, -0.5) is added to the scores as it
      is. The bias is added to scores held in at least float32 (float16/bfloat16 scores are
      promoted, as the official ``attn + bias`` promotes them to the float32 mask's dtype).
    * New mask: every token of a window becomes clamp(sum of the window's mask, 0, 1), summed
      in at least float32 (float64 masks in float64) and returned in the mask's dtype; bool
      masks give "any token valid".
    * NaN: propagates as in the official op sequence. A NaN mask value is a NaN key bias, so
      every query of that (shifted) window gets NaN scores and a NaN output row (all heads),
      and that window's new mask is NaN (clamp keeps NaN); other windows are unaffected.
    * Gradient: the mask gets none (it is detached; MAT never trains it), so a mask with
      ``requires_grad`` ends with ``grad`` None. Only q, k and v are differentiated.
    * Empty batch: B = 0 returns empty ``out`` and new mask (and empty gradients); zero H, W or
      C is a ValueError.
    * Integer arguments may be any int-like number (``operator.index``: numpy integers) and
      ``scale`` any real number; bools are refused.
    """
    window_size, shift_size, num_heads = _checks.as_ints(window_size=window_size, shift_size=shift_size,
                                                         num_heads=num_heads)
    scale = _checks.as_float("scale", scale, optional=True)
    _, _, _, _, head_dim = _checks.check_window_attention_args(
        q, k, v, mask, window_size, shift_size, num_heads, scale)
    scale = head_dim ** -0.5 if scale is None else scale
    return window_attention_core(q, k, v, mask, window_size, shift_size, num_heads, scale)


def window_attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                          window_size: int, shift_size: int, num_heads: int, scale: float
                          ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """:func:`window_attention` for arguments already validated, with ``scale`` given: what the
    reference backend of :mod:`mat_kernels.ops` runs."""
    B, H, W, C = q.shape
    s, ws = shift_size, window_size
    m = None if mask is None else _as_token_mask(mask)  # detached in windowed_attention
    qw, kw, vw = (to_windows(t, ws, s) for t in (q, k, v))
    mw = None if m is None else to_windows(m, ws, s)
    # The official block always passes the recomputed region bias; for shift 0 it is all zeros,
    # so it is skipped here (adding zeros is exact).
    bias = shift_attention_bias(H, W, ws, s, device=q.device, dtype=q.dtype) if s > 0 else None
    out, new_mw = windowed_attention(qw, kw, vw, num_heads, scale, mw, bias)
    out = from_windows(out, ws, s, H, W)
    new_mask = None if new_mw is None else from_windows(new_mw, ws, s, H, W)
    if new_mask is not None and mask.ndim == 3:
        new_mask = new_mask.squeeze(-1)
    return out, new_mask
