"""The Triton backend: what the kernels of :mod:`mat_kernels.triton` support, and one entry point
per op that calls its ``torch.library`` op (:mod:`mat_kernels.triton.library`)."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from . import FUSED_ATTENTION_LIMITS, Facts

# Imports triton and registers the ops. At module level, so that calls traced by torch.compile
# import nothing (an import there is a graph break).
try:
    from ..triton import _common, library
    IMPORT_ERROR = None
except ImportError as exc:
    _common = library = None
    IMPORT_ERROR = f"triton is not installed or failed to import ({exc})"

__all__ = ["not_supported_reasons", "window_attention", "window_mask_update", "partial_conv_mask_update",
           "bias_act"]

BIAS_ACT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
BIAS_ACT_ACTS = ("linear", "relu", "lrelu")  # activations with a piecewise-constant derivative


def not_supported_reasons(op: str, facts: Facts) -> List[str]:
    if IMPORT_ERROR is not None:
        return [IMPORT_ERROR]
    reasons = []
    device = facts["device"]
    if device.type != "cuda" and not (_common.interpreting() and device.type == "cpu"):
        reasons.append(f"needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got {device}")
    if op == "window_attention":
        reasons += FUSED_ATTENTION_LIMITS.reasons(facts)
    elif op == "bias_act":
        if facts["dtype"] not in BIAS_ACT_DTYPES:
            reasons.append(f"dtype must be one of {BIAS_ACT_DTYPES}, got {facts['dtype']}")
        if facts["act"] not in BIAS_ACT_ACTS:
            reasons.append(f"act must be one of {BIAS_ACT_ACTS}, got {facts['act']!r}")
        if facts.get("bias_dtype") not in (None, facts["dtype"]):
            reasons.append(f"b must have x's dtype {facts['dtype']}, got {facts['bias_dtype']}")
    return reasons


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                     window_size: int, shift_size: int, num_heads: int, scale: float
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    out, _lse, new_mask = library.window_attention_fwd(q, k, v, mask, window_size, shift_size, num_heads, scale)
    return out, (new_mask if mask is not None else None)


def window_mask_update(mask: torch.Tensor, window_size: int, shift_size: int) -> torch.Tensor:
    return library.window_mask_update(mask, window_size, shift_size)


def partial_conv_mask_update(mask: torch.Tensor, kernel_size: int, stride: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return library.partial_conv_mask_update(mask, kernel_size, stride)


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float, gain: float,
             clamp: float) -> torch.Tensor:
    return library.bias_act(x, b, dim, act, alpha, gain, clamp)
