"""Argument validation shared by every backend of the public ops.

Each check raises ``ValueError``/``TypeError`` naming the offending argument and what was
expected, so bad input never reaches a kernel.
"""
from __future__ import annotations

import numbers
import operator

import torch

from .contract import FLOAT_DTYPES


def _is_bool(value) -> bool:
    """Python, numpy and 0-d torch booleans (which index like 0/1 but are not numbers here)."""
    if isinstance(value, (bool, torch.SymBool)):
        return True
    if isinstance(value, (int, float, torch.SymInt, torch.SymFloat)):
        return False  # decided without getattr, which dynamo cannot trace on symbolic numbers
    return str(getattr(value, "dtype", "")) in ("bool", "torch.bool")


def as_int(name: str, value) -> int:
    """``value`` as a Python int: ints and anything that indexes like one (``operator.index``:
    numpy integers, 0-d integer tensors), never a bool. The public ops convert every integer
    argument once with this, so backends only ever see Python ints."""
    # Plain (and symbolic, under torch.compile) ints first: the generic probes below are not
    # traceable by dynamo (getattr on a symbolic number is a graph break).
    if isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool):
        return value
    if not _is_bool(value):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise ValueError(f"{name} must be an int, got {value!r}")


def as_float(name: str, value, optional: bool = False):
    """``value`` as a Python float: real numbers (``numbers.Real``, e.g. numpy floats) and anything
    with ``__float__`` (0-d tensors), never a bool; None passes through when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, (float, torch.SymFloat, torch.SymInt)) or (isinstance(value, int) and not isinstance(value, bool)):
        return float(value)  # the common case, and the one torch.compile traces (see as_int)
    if not _is_bool(value) and not isinstance(value, (str, bytes)) and (
            isinstance(value, numbers.Real) or hasattr(type(value), "__float__")):
        try:
            return float(value)
        except (TypeError, ValueError, RuntimeError):
            pass
    raise TypeError(f"{name} must be a float{' or None' if optional else ''}, got {value!r}")


def as_ints(**values) -> tuple:
    """:func:`as_int` of each keyword argument, in order: ``a, b = as_ints(a=a, b=b)``."""
    return tuple(as_int(name, value) for name, value in values.items())


def check_positive_int(name: str, value) -> int:
    if _is_bool(value) or not isinstance(value, (int, torch.SymInt)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_nonempty(name: str, x: torch.Tensor, dims: str, sizes) -> None:
    """Zero-size spatial or channel dimensions are refused (a zero batch is allowed: every op
    returns empty results for it). ``dims`` names the dimensions ``sizes`` are, e.g. "H, W, C"."""
    if any(n == 0 for n in sizes):
        raise ValueError(f"{name} must have non-zero {dims}, got shape {tuple(x.shape)} "
                         f"(only the batch dimension B may be 0)")


def check_tokens(name: str, x, ndim: int = 4) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims (B, H, W, C), got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (fp16/bf16/fp32/fp64), got {x.dtype}")


def check_window_args(H: int, W: int, window_size, shift_size) -> None:
    check_positive_int("window_size", window_size)
    if isinstance(shift_size, bool) or not isinstance(shift_size, int):
        raise ValueError(f"shift_size must be an int, got {shift_size!r}")
    if not 0 <= shift_size < window_size:
        raise ValueError(f"shift_size must satisfy 0 <= shift_size < window_size={window_size}, got {shift_size}")
    if H % window_size:
        raise ValueError(f"window_size={window_size} must divide the grid height H={H}")
    if W % window_size:
        raise ValueError(f"window_size={window_size} must divide the grid width W={W}")


def check_mask(mask, B: int, H: int, W: int, device: torch.device, name: str = "mask") -> None:
    """A token mask is (B, H, W, 1) or (B, H, W), bool or floating, on the tokens' device."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    shape = tuple(mask.shape)
    if shape not in ((B, H, W, 1), (B, H, W)):
        raise ValueError(f"{name} must have shape (B, H, W, 1) or (B, H, W) = {(B, H, W, 1)}, got {shape}")
    if mask.dtype != torch.bool and mask.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be bool or floating (1 = valid, 0 = hole), got {mask.dtype}")
    if mask.device != device:
        raise ValueError(f"{name} must be on the same device as q ({device}), got {mask.device}")


def check_qkv(q, k, v, num_heads):
    """Validate q, k, v of shape (B, H, W, C) and return (B, H, W, C, head_dim)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tokens(name, t)
    for name, t in (("k", k), ("v", v)):
        if tuple(t.shape) != tuple(q.shape):
            raise ValueError(f"{name} must have the same shape as q {tuple(q.shape)}, got {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have the same dtype as q ({q.dtype}), got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on the same device as q ({q.device}), got {t.device}")
    check_positive_int("num_heads", num_heads)
    B, H, W, C = q.shape
    check_nonempty("q", q, "H, W and C", (H, W, C))
    if C % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide the channel count C={C}")
    return B, H, W, C, C // num_heads


def check_window_attention_args(q, k, v, mask, window_size, shift_size, num_heads, scale):
    B, H, W, C, head_dim = check_qkv(q, k, v, num_heads)
    check_window_args(H, W, window_size, shift_size)
    check_mask(mask, B, H, W, q.device)
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise TypeError(f"scale must be a float or None, got {scale!r}")
    return B, H, W, C, head_dim


def check_mask_image(mask, name: str = "mask") -> None:
    """An NCHW mask with one channel, for the partial-convolution rule."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and mask.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be bool or floating, got {mask.dtype}")
    check_nonempty(name, mask, "H and W", mask.shape[2:])


def check_window_mask_update_args(mask, window_size, shift_size):
    """Validate the arguments of ``window_mask_update``; return (B, H, W)."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (3, 4):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a (B, H, W, 1) or (B, H, W) tensor, got {got}")
    B, H, W = mask.shape[:3]
    check_mask(mask, B, H, W, mask.device)
    check_nonempty("mask", mask, "H and W", (H, W))
    check_window_args(H, W, window_size, shift_size)
    return B, H, W


def check_partial_conv_args(mask, kernel_size, stride) -> None:
    """Validate the arguments of ``partial_conv_mask_update``."""
    check_mask_image(mask)
    check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    check_positive_int("stride", stride)


def check_bias_act_args(x, b, dim, act, activations) -> int:
    """Validate the arguments of ``bias_act``; return ``dim`` made non-negative."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a floating tensor (fp16/bf16/fp32/fp64), got {x.dtype}")
    if act not in activations:
        raise ValueError(f"act must be one of {sorted(activations)}, got {act!r}")
    n = max(x.ndim, 1)
    if isinstance(dim, bool) or not isinstance(dim, int) or not -n <= dim < n:
        raise ValueError(f"dim must be an int in [-{n}, {n}) for x of shape {tuple(x.shape)}, got {dim!r}")
    dim = dim % n
    if b is not None:
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"b must be a torch.Tensor or None, got {type(b).__name__}")
        if x.ndim == 0 or b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"b must have shape (x.shape[dim],) = ({x.shape[dim] if x.ndim else '?'},), "
                             f"got {tuple(b.shape)}")
        if b.device != x.device:
            raise ValueError(f"b must be on x's device {x.device}, got {b.device}")
    return dim
