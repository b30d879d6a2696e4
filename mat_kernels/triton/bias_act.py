"""Fused bias + activation + gain + clamp (StyleGAN2's ``bias_act``) as Triton kernels.

Forward and first-order gradient are each one elementwise kernel with its launcher
(:func:`bias_act_fwd`, :func:`bias_act_grad`). ``library.py`` makes both ``torch.library`` ops
with autograd; the gradient op is differentiable itself, so double backward (R1 regularisation
of the discriminator) works.

For 'linear', 'relu' and 'lrelu' the activation's derivative is piecewise constant, so dx is dy
times a 0/gain/alpha*gain factor that depends on x and b only. The gradient op is therefore
linear in dy: its own backward is the same op applied to the incoming gradient, and its
derivative with respect to x and b is zero (as in PyTorch's leaky_relu double backward).
The bias gradient is the sum of dx over every dimension but ``dim`` (a PyTorch reduction).

Numerics follow the reference :func:`mat_kernels.reference.bias_act` op by op: z = x + b,
act(z), times gain (skipped when gain is 1), clamp to +-clamp (when clamp >= 0), each result
rounded to x's dtype as PyTorch does for fp16/bf16 (computed in fp32). The gradient's masks use
the same comparisons as PyTorch's autograd: relu/lrelu test z > 0, clamp passes gradients where
-clamp <= y <= clamp (inclusive).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from ._common import _round_to

__all__ = ["bias_act_fwd", "bias_act_grad", "SUPPORTED_ACTS"]

# name -> (kernel code, default alpha, default gain), as in the reference's table.
SUPPORTED_ACTS = {"linear": (0, 0.0, 1.0), "relu": (1, 0.0, math.sqrt(2)), "lrelu": (2, 0.2, math.sqrt(2))}
BLOCK_SIZE = 1024  # elements per program: 8 per thread at 4 warps, enough in flight for bandwidth


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _offsets(n, BLOCK: tl.constexpr, OFFS_64: tl.constexpr):
    if OFFS_64:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < n


@triton.jit
def _pre_activation(x_ptr, b_ptr, offs, valid, C, inner, HAS_BIAS: tl.constexpr, DTYPE: tl.constexpr,
                    ACC: tl.constexpr):
    # z = x + b with b broadcast along `dim`: element i of the contiguous x has channel
    # (i // inner) % C.
    x = tl.load(x_ptr + offs, mask=valid, other=0).to(ACC)
    if HAS_BIAS:
        b = tl.load(b_ptr + (offs // inner) % C, mask=valid, other=0).to(ACC)
        x = _round_to(x + b, DTYPE, ACC)
    return x


@triton.jit
def _activate(z, ACT: tl.constexpr, ALPHA: tl.constexpr, GAIN: tl.constexpr, DTYPE: tl.constexpr,
              ACC: tl.constexpr, BLOCK: tl.constexpr):
    # act(z) * gain, before the clamp. Constants are built in ACC precision (a bare Python float
    # would be an fp32 literal even next to fp64 values).
    if ACT == 1:
        y = tl.where(z > 0, z, tl.zeros_like(z))
    elif ACT == 2:
        y = tl.where(z > 0, z, _round_to(z * tl.full([BLOCK], ALPHA, ACC), DTYPE, ACC))
    else:
        y = z
    if GAIN != 1.0:
        y = _round_to(y * tl.full([BLOCK], GAIN, ACC), DTYPE, ACC)
    return y


@triton.jit
def _bias_act_fwd_kernel(x_ptr, b_ptr, y_ptr, n, C, inner, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                         ALPHA: tl.constexpr, GAIN: tl.constexpr, CLAMP: tl.constexpr,
                         IS_FP64: tl.constexpr, OFFS_64: tl.constexpr, BLOCK: tl.constexpr):
    """y = clamp(act(x + b) * gain, -CLAMP, CLAMP) elementwise.

    x_ptr, y_ptr: n contiguous elements of x's shape; b_ptr: (C,) with C = x.shape[dim], and
    inner = prod(x.shape[dim + 1:]). ACT: 0 linear, 1 relu, 2 lrelu. CLAMP < 0: no clamp.
    Grid: (cdiv(n, BLOCK),).
    """
    DTYPE: tl.constexpr = y_ptr.dtype.element_ty
    ACC: tl.constexpr = tl.float64 if IS_FP64 else tl.float32
    offs, valid = _offsets(n, BLOCK, OFFS_64)
    z = _pre_activation(x_ptr, b_ptr, offs, valid, C, inner, HAS_BIAS, DTYPE, ACC)
    y = _activate(z, ACT, ALPHA, GAIN, DTYPE, ACC, BLOCK)
    if CLAMP >= 0:
        c = _round_to(tl.full([BLOCK], CLAMP, ACC), DTYPE, ACC)  # the clamp as x.dtype stores it
        y = tl.minimum(tl.maximum(y, -c), c)
    tl.store(y_ptr + offs, y.to(DTYPE), mask=valid)


@triton.jit
def _bias_act_grad_kernel(dy_ptr, x_ptr, b_ptr, dx_ptr, n, C, inner, HAS_BIAS: tl.constexpr,
                          ACT: tl.constexpr, ALPHA: tl.constexpr, GAIN: tl.constexpr, CLAMP: tl.constexpr,
                          IS_FP64: tl.constexpr, OFFS_64: tl.constexpr, BLOCK: tl.constexpr):
    """dx = dy * d(bias_act)/dz, recomputing z = x + b (cheaper than storing it).

    Same layout and grid as the forward kernel; dy_ptr and dx_ptr have x's shape and dtype.
    Steps in autograd's order: clamp mask (on the unclamped output), times gain, activation
    slope (z > 0 ? 1 : relu 0 / lrelu alpha).
    """
    DTYPE: tl.constexpr = dx_ptr.dtype.element_ty
    ACC: tl.constexpr = tl.float64 if IS_FP64 else tl.float32
    offs, valid = _offsets(n, BLOCK, OFFS_64)
    g = tl.load(dy_ptr + offs, mask=valid, other=0).to(ACC)
    z = _pre_activation(x_ptr, b_ptr, offs, valid, C, inner, HAS_BIAS, DTYPE, ACC)
    if CLAMP >= 0:
        y = _activate(z, ACT, ALPHA, GAIN, DTYPE, ACC, BLOCK)
        c = _round_to(tl.full([BLOCK], CLAMP, ACC), DTYPE, ACC)  # the clamp as x.dtype stores it
        g = tl.where((y >= -c) & (y <= c), g, tl.zeros_like(g))
    if GAIN != 1.0:
        g = _round_to(g * tl.full([BLOCK], GAIN, ACC), DTYPE, ACC)
    if ACT == 1:
        g = tl.where(z > 0, g, tl.zeros_like(g))
    elif ACT == 2:
        g = tl.where(z > 0, g, _round_to(g * tl.full([BLOCK], ALPHA, ACC), DTYPE, ACC))
    tl.store(dx_ptr + offs, g.to(DTYPE), mask=valid)


# ----------------------------------------------------------------------------------------------
# Launchers (arguments validated by mat_kernels.ops; x and b of one dtype)
# ----------------------------------------------------------------------------------------------
def _layout(x: torch.Tensor, dim: int):
    C = x.shape[dim]
    inner = math.prod(x.shape[dim + 1:])
    return C, inner


def _launch(kernel, out: torch.Tensor, first: tuple, x: torch.Tensor, b: Optional[torch.Tensor], dim: int,
            act: str, alpha: float, gain: float, clamp: float) -> torch.Tensor:
    n = x.numel()
    if n == 0:
        return out
    C, inner = _layout(x, dim)
    kernel[(triton.cdiv(n, BLOCK_SIZE),)](
        *first, x, x if b is None else b, out, n, C, inner, HAS_BIAS=b is not None,
        ACT=SUPPORTED_ACTS[act][0], ALPHA=float(alpha), GAIN=float(gain), CLAMP=float(clamp),
        IS_FP64=x.dtype == torch.float64, OFFS_64=n >= 2 ** 31 - BLOCK_SIZE, BLOCK=BLOCK_SIZE, num_warps=4)
    return out


def bias_act_fwd(x, b, dim, act, alpha, gain, clamp):
    x = x.contiguous()
    b = None if b is None else b.contiguous()
    return _launch(_bias_act_fwd_kernel, torch.empty_like(x), (), x, b, dim, act, alpha, gain, clamp)


def bias_act_grad(dy, x, b, dim, act, alpha, gain, clamp):
    x = x.contiguous()
    b = None if b is None else b.contiguous()
    return _launch(_bias_act_grad_kernel, torch.empty_like(x), (dy.contiguous(),), x, b, dim, act, alpha,
                   gain, clamp)
