"""Fused bias + activation + gain + clamp (StyleGAN2's ``bias_act``) as Triton kernels.

Forward and first-order gradient are each one elementwise kernel; both are ``torch.library``
custom ops with autograd, and the gradient op is differentiable itself, so double backward
(R1 regularisation of the discriminator) works:

  ``mat_kernels::bias_act_triton(x, b, dim, act, alpha, gain, clamp) -> y``
  ``mat_kernels::bias_act_grad_triton(dy, x, b, dim, act, alpha, gain, clamp) -> dx``

For 'linear', 'relu' and 'lrelu' the activation's derivative is piecewise constant, so dx is dy
times a 0/gain/alpha*gain factor that depends on x and b only. The gradient op is therefore
linear in dy: its own backward is the same op applied to the incoming gradient, and its
derivative with respect to x and b is zero (as in PyTorch's leaky_relu double backward).
The bias gradient is the sum of dx over every dimension but ``dim`` (a PyTorch reduction).

Numerics follow the reference :func:`mat_kernels.nn.layers.bias_act` op by op: z = x + b,
act(z), times gain (skipped when gain is 1), clamp to +-clamp (when clamp >= 0), each result
rounded to x's dtype as PyTorch does for fp16/bf16 (computed in fp32). The gradient's masks use
the same comparisons as PyTorch's autograd: relu/lrelu test z > 0, clamp passes gradients where
-clamp <= y <= clamp (inclusive).

Layers call it through :func:`can_use_bias_act_triton` / :func:`bias_act_triton`.
"""
from __future__ import annotations

import math
import os
from typing import List, Optional

import torch
import triton
import triton.language as tl

from ._common import _round_to

__all__ = ["bias_act_triton", "can_use_bias_act_triton", "SUPPORTED_ACTS", "aot_configs"]

# name -> (kernel code, default alpha, default gain), as in the reference's table.
SUPPORTED_ACTS = {"linear": (0, 0.0, 1.0), "relu": (1, 0.0, math.sqrt(2)), "lrelu": (2, 0.2, math.sqrt(2))}
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_BLOCK = 1024  # elements per program: 8 per thread at 4 warps, enough in flight for bandwidth


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
# Launchers
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
    kernel[(triton.cdiv(n, _BLOCK),)](
        *first, x, x if b is None else b, out, n, C, inner, HAS_BIAS=b is not None,
        ACT=SUPPORTED_ACTS[act][0], ALPHA=float(alpha), GAIN=float(gain), CLAMP=float(clamp),
        IS_FP64=x.dtype == torch.float64, OFFS_64=n >= 2 ** 31 - _BLOCK, BLOCK=_BLOCK, num_warps=4)
    return out


def _bias_act_fwd(x, b, dim, act, alpha, gain, clamp):
    x = x.contiguous()
    b = None if b is None else b.contiguous()
    return _launch(_bias_act_fwd_kernel, torch.empty_like(x), (), x, b, dim, act, alpha, gain, clamp)


def _bias_act_grad(dy, x, b, dim, act, alpha, gain, clamp):
    x = x.contiguous()
    b = None if b is None else b.contiguous()
    return _launch(_bias_act_grad_kernel, torch.empty_like(x), (dy.contiguous(),), x, b, dim, act, alpha,
                   gain, clamp)


# ----------------------------------------------------------------------------------------------
# torch.library ops with autograd (the gradient op has its own autograd for double backward)
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op("mat_kernels::bias_act_triton", mutates_args=())
def _bias_act_op(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float, gain: float,
                 clamp: float) -> torch.Tensor:
    return _bias_act_fwd(x, b, dim, act, alpha, gain, clamp)


@_bias_act_op.register_fake
def _(x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("mat_kernels::bias_act_grad_triton", mutates_args=())
def _bias_act_grad_op(dy: torch.Tensor, x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str,
                      alpha: float, gain: float, clamp: float) -> torch.Tensor:
    return _bias_act_grad(dy, x, b, dim, act, alpha, gain, clamp)


@_bias_act_grad_op.register_fake
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
    dx = torch.ops.mat_kernels.bias_act_grad_triton(dy, x, b, *ctx.params)
    db = None
    if b is not None and ctx.needs_input_grad[1]:
        db = dx.sum(dim=[d for d in range(dx.ndim) if d != dim]) if dx.ndim > 1 else dx
    return dx, db, None, None, None, None, None


def _bias_act_grad_backward(ctx, ddx):
    # dx is linear in dy with a factor that is piecewise constant in x and b: d(dx)/d(dy) is the
    # same op, d(dx)/dx = d(dx)/db = 0.
    x, b = ctx.saved_tensors
    d_dy = torch.ops.mat_kernels.bias_act_grad_triton(ddx, x, b, *ctx.params)
    return d_dy, None, None, None, None, None, None, None


torch.library.register_autograd("mat_kernels::bias_act_triton", _bias_act_backward, setup_context=_save)
torch.library.register_autograd("mat_kernels::bias_act_grad_triton", _bias_act_grad_backward,
                                setup_context=_save)


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------
def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def can_use_bias_act_triton(x: torch.Tensor, b: Optional[torch.Tensor] = None, act: str = "linear",
                            allow_interpreter: bool = False) -> bool:
    """Whether :func:`bias_act_triton` can run these arguments: a CUDA tensor (or a CPU tensor
    under TRITON_INTERPRET=1 when ``allow_interpreter``) of fp16/bf16/fp32/fp64, an activation
    in ``SUPPORTED_ACTS``, and ``b`` None or of x's dtype and device."""
    if not isinstance(x, torch.Tensor) or act not in SUPPORTED_ACTS or x.dtype not in DTYPES:
        return False
    if not (x.is_cuda or (allow_interpreter and x.device.type == "cpu" and _interpreting())):
        return False
    return b is None or (isinstance(b, torch.Tensor) and b.dtype == x.dtype and b.device == x.device)


def bias_act_triton(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
                    alpha: Optional[float] = None, gain: Optional[float] = None,
                    clamp: Optional[float] = None) -> torch.Tensor:
    """Fused twin of :func:`mat_kernels.nn.layers.bias_act` for 'linear', 'relu' and 'lrelu'.

    Args:
        x: any shape, fp16/bf16/fp32/fp64, CUDA (or CPU under TRITON_INTERPRET=1).
        b: (x.shape[dim],) of x's dtype and device, or None.
        dim: the dimension ``b`` runs along (negative allowed).
        act, alpha, gain, clamp: as the reference; None picks the activation's default alpha/gain,
            clamp None or < 0 disables clamping.
    Returns:
        y with x's shape and dtype (contiguous). Differentiable twice with respect to x and b.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if act not in SUPPORTED_ACTS:
        raise ValueError(f"act must be one of {sorted(SUPPORTED_ACTS)} for the Triton bias_act, got {act!r}")
    if x.dtype not in DTYPES:
        raise TypeError(f"x must be fp16/bf16/fp32/fp64, got {x.dtype}")
    if x.device.type != "cuda" and not (x.device.type == "cpu" and _interpreting()):
        raise ValueError(f"x must be a CUDA tensor (or a CPU tensor with TRITON_INTERPRET=1), got {x.device}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -max(x.ndim, 1) <= dim < max(x.ndim, 1):
        raise ValueError(f"dim must be an int in [-{x.ndim}, {x.ndim}) for x of shape {tuple(x.shape)}, got {dim!r}")
    dim = dim % max(x.ndim, 1)
    if b is not None:
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"b must be a torch.Tensor or None, got {type(b).__name__}")
        if x.ndim == 0 or b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"b must have shape (x.shape[dim],) = ({x.shape[dim] if x.ndim else '?'},), "
                             f"got {tuple(b.shape)}")
        if b.dtype != x.dtype:
            raise TypeError(f"b must have x's dtype {x.dtype}, got {b.dtype}")
        if b.device != x.device:
            raise ValueError(f"b must be on x's device {x.device}, got {b.device}")
    _, def_alpha, def_gain = SUPPORTED_ACTS[act]
    alpha = float(def_alpha if alpha is None else alpha)
    gain = float(def_gain if gain is None else gain)
    clamp = -1.0 if clamp is None or clamp < 0 else float(clamp)
    return torch.ops.mat_kernels.bias_act_triton(x, b, dim, act, alpha, gain, clamp)


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compile configs (see mat_kernels/triton/aot.py)
# ----------------------------------------------------------------------------------------------
def aot_configs() -> List[dict]:
    """MAT's uses: lrelu with gain sqrt(2) with and without a bias and with conv_clamp 256, linear
    with a bias; forward and gradient kernels; fp32/fp16/bf16."""
    configs = []
    cases = [("lrelu", True, -1.0), ("lrelu", True, 256.0), ("lrelu", False, -1.0), ("linear", True, -1.0),
             ("relu", True, -1.0)]
    for dname, ptr in (("fp32", "*fp32"), ("fp16", "*fp16"), ("bf16", "*bf16")):
        for act, has_bias, clamp in cases:
            code, alpha, gain = SUPPORTED_ACTS[act]
            const = dict(HAS_BIAS=has_bias, ACT=code, ALPHA=alpha, GAIN=gain, CLAMP=clamp, IS_FP64=False,
                         OFFS_64=False, BLOCK=_BLOCK)
            label = f"{act}{' +b' if has_bias else ''}{f' clamp={clamp:g}' if clamp >= 0 else ''}"
            sizes = {"x_ptr": ptr, "b_ptr": ptr, "n": "i32", "C": "i32", "inner": "i32"}
            configs.append(dict(name=f"bias_act fwd {label}", fn=_bias_act_fwd_kernel, dtype=dname,
                                signature={**sizes, "y_ptr": ptr}, constexprs=const, num_warps=4,
                                mat_shape=True))
            configs.append(dict(name=f"bias_act grad {label}", fn=_bias_act_grad_kernel, dtype=dname,
                                signature={"dy_ptr": ptr, **sizes, "dx_ptr": ptr}, constexprs=const,
                                num_warps=4, mat_shape=True))
    return configs
