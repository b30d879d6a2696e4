"""Triton kernels for MAT's two mask-update rules, and their launchers.

* ``window_mask_update``: the attention layer's rule alone. Every token of a window of the
  (cyclically shifted by ``-shift``) grid becomes clamp(sum of the window's mask, 0, 1) (``any``
  for bool masks), written back in the un-shifted layout. The shift and the window partition are
  index arithmetic: no roll, no partition copy.
* ``partial_conv_mask_update``: the rule of ``Conv2dLayerPartial`` in one pass: the k x k box
  count S (zero padding k // 2, stride), ``new_mask = clamp(S, 0, 1)`` and
  ``ratio = k^2 / (S + 1e-8) * clamp(S, 0, 1)``.

Both match :mod:`mat_kernels.reference` bit for bit. For the ratio this means following the
reference's op order exactly: ``k^2 / t`` on a tensor is ``reciprocal(t) * k^2`` in PyTorch. Like
the reference, fp16/bf16 masks are counted and divided in float32 and the results rounded once
to the mask's dtype (in fp16 itself 1e-8 underflows and the ratio at holes is NaN). Division
uses ``div_rn`` because Triton's ``/`` is the approximate ``div.full.f32`` on NVIDIA GPUs. Sums of fractional masks are exact (and so bit-identical) when
the values have few mantissa bits (e.g. multiples of 1/256); for arbitrary fractions the
summation order of ``F.conv2d``/``torch.sum`` is not specified and the last bit may differ.

The ``torch.library`` ops that call the launchers are in ``library.py`` (no gradient: masks are
not differentiated in MAT).
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from ._common import _clamp01, _round_to, needs_int64_offsets

__all__ = ["window_mask_update_triton", "partial_conv_mask_update_triton", "pconv_out_shape"]


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _window_mask_update_kernel(m_ptr, out_ptr, H, W, n_win_h, n_win_w, stride_b, stride_h, stride_w,
                               shift, WS: tl.constexpr, BLOCK: tl.constexpr, WIN_BLOCK: tl.constexpr,
                               IS_BOOL: tl.constexpr, IS_FP64: tl.constexpr, OFFS_64: tl.constexpr):
    """One program per WIN_BLOCK consecutive windows of one window row of the shifted grid.

    m_ptr:   (B, H, W[, 1]) mask, element strides (stride_b, stride_h, stride_w); bool as uint8.
    out_ptr: (B, H, W[, 1]) contiguous output of the same dtype.
    Grid: (cdiv(n_win_w, WIN_BLOCK), n_win_h, B). Window (wy, wx) is window_partition's window
    wy * n_win_w + wx. Its token (r, c) lives at ((wy*WS + r + shift) % H,
    (wx*WS + c + shift) % W) of the un-shifted grid, because roll(-shift) moves index i + shift
    to i. The tile is [WIN_BLOCK, BLOCK, BLOCK] with BLOCK = next power of two >= WS; lanes
    outside the window or past the last window are masked off. OFFS_64: row/column offsets in
    64 bits (an image spanning >= 2**31 elements, see _common.needs_int64_offsets).
    """
    wy = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    wx = tl.program_id(0) * WIN_BLOCK + tl.arange(0, WIN_BLOCK)[:, None, None]
    r = tl.arange(0, BLOCK)[None, :, None]
    c = tl.arange(0, BLOCK)[None, None, :]
    inside = (wx < n_win_w) & (r < WS) & (c < WS)
    y = (wy * WS + r + shift) % H
    x = (wx * WS + c + shift) % W
    if OFFS_64:
        y = y.to(tl.int64)
        x = x.to(tl.int64)
    v = tl.load(m_ptr + b * stride_b + y * stride_h + x * stride_w, mask=inside, other=0)
    if IS_BOOL:
        # any(): uint8 0/1 values, the max is 1 iff one token is valid.
        new = tl.max(tl.max(v, axis=2), axis=1)
    else:
        # torch.sum accumulates fp16/bf16 in fp32 and rounds the total to the mask's dtype;
        # clamp then works on that rounded value (0 and 1 are exact in every dtype) and keeps
        # a NaN, as torch.clamp does.
        ACC: tl.constexpr = tl.float64 if IS_FP64 else tl.float32
        total = tl.sum(tl.sum(v.to(ACC), axis=2), axis=1)
        new = _round_to(total, out_ptr.dtype.element_ty, ACC)
        new = _clamp01(new).to(out_ptr.dtype.element_ty)
    out = tl.zeros([WIN_BLOCK, BLOCK, BLOCK], dtype=out_ptr.dtype.element_ty) + new[:, None, None]
    tl.store(out_ptr + b * H * W + y * W + x, out, mask=inside)


@triton.jit
def _partial_conv_mask_update_kernel(m_ptr, new_ptr, ratio_ptr, H, W, H_out, W_out,
                                     stride_b, stride_h, stride_w, K: tl.constexpr,
                                     STRIDE: tl.constexpr, BLOCK_H: tl.constexpr,
                                     BLOCK_W: tl.constexpr, IS_FP64: tl.constexpr, OFFS_64: tl.constexpr):
    """One program per BLOCK_H x BLOCK_W tile of outputs of one image.

    m_ptr:   (B, 1, H, W) mask with element strides (stride_b, -, stride_h, stride_w); bool as
             uint8. new_ptr, ratio_ptr: (B, 1, H_out, W_out) contiguous, the output dtype (float32
             for bool masks, else the mask's dtype).
    Grid: (cdiv(W_out, BLOCK_W), cdiv(H_out, BLOCK_H), B).
    Output (oy, ox) counts inputs (oy*STRIDE - K//2 + i, ox*STRIDE - K//2 + j), i, j < K;
    out-of-image taps are the conv's zero padding. OFFS_64: row/column offsets in 64 bits (an
    input or output image spanning >= 2**31 elements).
    """
    pid_w = tl.program_id(0)
    pid_h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    DTYPE: tl.constexpr = new_ptr.dtype.element_ty
    ACC: tl.constexpr = tl.float64 if IS_FP64 else tl.float32
    oy = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    ox = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    if OFFS_64:
        oy = oy.to(tl.int64)
        ox = ox.to(tl.int64)
    valid_out = (oy < H_out) & (ox < W_out)
    base = m_ptr + b * stride_b
    s = tl.zeros([BLOCK_H, BLOCK_W], dtype=ACC)
    # Kernel rows in a rolled loop, columns unrolled: fully unrolling K*K taps lets the compiler
    # hoist every load and spill (seen with k=7, and with k=3 in fp16 on Triton 3.9's ptxas).
    for i in tl.range(0, K, loop_unroll_factor=1):
        iy = oy * STRIDE - K // 2 + i
        row_ok = valid_out & (iy >= 0) & (iy < H)
        for j in tl.static_range(K):
            ix = ox * STRIDE - K // 2 + j
            ok = row_ok & (ix >= 0) & (ix < W)
            s += tl.load(base + iy * stride_h + ix * stride_w, mask=ok, other=0).to(ACC)
    # The reference's op order in ACC (float32, float64 for fp64 masks):
    #   t = S + 1e-8; ratio = reciprocal(t) * k^2; new = clamp(S, 0, 1); ratio = ratio * new;
    # fp16/bf16 outputs are rounded once at the end (the reference's fp32 math for those dtypes;
    # in fp16 itself 1e-8 would underflow and the ratio at holes would be NaN).
    t = s + tl.full([BLOCK_H, BLOCK_W], 1e-8, ACC)
    one = tl.full([BLOCK_H, BLOCK_W], 1.0, ACC)
    if IS_FP64:
        rcp = one / t  # fp64 division is always IEEE round-to-nearest
    else:
        rcp = tl.math.div_rn(one, t)  # '/' would be the approximate div.full.f32 on GPUs
    new = _clamp01(s)  # keeps a NaN count NaN, as torch.clamp does
    ratio = (rcp * (K * K)) * new
    new = _round_to(new, DTYPE, ACC)  # exact in DTYPE now, so the store casts are too
    ratio = _round_to(ratio, DTYPE, ACC)
    out_off = b * H_out * W_out + oy * W_out + ox
    tl.store(new_ptr + out_off, new.to(DTYPE), mask=valid_out)
    tl.store(ratio_ptr + out_off, ratio.to(DTYPE), mask=valid_out)


# ----------------------------------------------------------------------------------------------
# Launchers (arguments already validated)
# ----------------------------------------------------------------------------------------------
PCONV_BLOCK = (32, 32)  # (BLOCK_H, BLOCK_W): 1024 outputs, 4 per thread at PCONV_WARPS
PCONV_WARPS = 8


_WINDOW_TILE = 1024  # tokens per program of the window kernel: 16 windows of 8x8, 4 of 16x16


def window_block(window_size: int, n_win_w: int) -> int:
    """Windows per program: fill a ~1024-token tile, but not past the windows of one row."""
    per_tile = max(1, _WINDOW_TILE // triton.next_power_of_2(window_size) ** 2)
    return min(per_tile, triton.next_power_of_2(n_win_w))


def _as_kernel_tensor(mask: torch.Tensor) -> torch.Tensor:
    # Triton has no portable bool pointer; a bool tensor is one byte of 0/1 per element.
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def window_mask_update_triton(mask: torch.Tensor, window_size: int, shift_size: int = 0) -> torch.Tensor:
    """Launch ``_window_mask_update_kernel``. mask: (B, H, W, 1) or (B, H, W); returns a new
    contiguous tensor of the same shape and dtype."""
    B, H, W = mask.shape[:3]
    ws = window_size
    m = _as_kernel_tensor(mask)
    out = torch.empty(mask.shape, dtype=m.dtype, device=mask.device)
    if mask.numel() == 0:
        return out.view(mask.dtype)
    n_win_w = W // ws
    block = triton.next_power_of_2(ws)
    win_block = window_block(ws, n_win_w)
    grid = (triton.cdiv(n_win_w, win_block), H // ws, B)
    _window_mask_update_kernel[grid](
        m, out, H, W, H // ws, n_win_w, m.stride(0), m.stride(1), m.stride(2), shift_size,
        WS=ws, BLOCK=block, WIN_BLOCK=win_block, IS_BOOL=mask.dtype == torch.bool,
        IS_FP64=mask.dtype == torch.float64, OFFS_64=needs_int64_offsets(m, out), num_warps=4)
    return out.view(mask.dtype)


def pconv_out_shape(mask_shape, kernel_size: int, stride: int) -> Tuple[int, int, int, int]:
    B, _, H, W = mask_shape
    pad = kernel_size // 2
    return B, 1, (H + 2 * pad - kernel_size) // stride + 1, (W + 2 * pad - kernel_size) // stride + 1


def partial_conv_mask_update_triton(mask: torch.Tensor, kernel_size: int, stride: int = 1
                                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Launch ``_partial_conv_mask_update_kernel``. mask: (B, 1, H, W); returns (new_mask, ratio),
    each (B, 1, H_out, W_out), float32 for bool masks, else the mask's dtype."""
    shape = pconv_out_shape(mask.shape, kernel_size, stride)
    dtype = torch.float32 if mask.dtype == torch.bool else mask.dtype
    new = torch.empty(shape, dtype=dtype, device=mask.device)
    ratio = torch.empty(shape, dtype=dtype, device=mask.device)
    B, _, H_out, W_out = shape
    if new.numel() == 0:
        return new, ratio
    m = _as_kernel_tensor(mask)
    bh, bw = PCONV_BLOCK
    grid = (triton.cdiv(W_out, bw), triton.cdiv(H_out, bh), B)
    _partial_conv_mask_update_kernel[grid](
        m, new, ratio, mask.shape[2], mask.shape[3], H_out, W_out, m.stride(0), m.stride(2), m.stride(3),
        K=kernel_size, STRIDE=stride, BLOCK_H=bh, BLOCK_W=bw, IS_FP64=dtype == torch.float64,
        OFFS_64=needs_int64_offsets(m, new), num_warps=PCONV_WARPS)
    return new, ratio
