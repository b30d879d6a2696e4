"""The SDPA backend: MAT's window attention on PyTorch's fused ``F.scaled_dot_product_attention``,
on CPU and CUDA tensors, with no compiler and no extension.

The shift and window partition are the reference's (:func:`mat_kernels.reference.windows.to_windows`),
MAT's two ``-100`` biases become one additive float mask per window, shared by every head, and
SDPA runs the attention (its own fused CPU kernel, PyTorch's memory-efficient kernel on CUDA)
forward and backward. The new mask comes from the reference's rule. The mask rules and bias_act
have no SDPA form: this backend runs them as the reference does (the same functions), so a network
set to ``"sdpa"`` runs everything in plain PyTorch ops.
"""
from __future__ import annotations

from typing import List

from ..contract import HALF_AND_FP32, Facts, dtype_reason
from ..reference import ENTRY_POINTS as _REFERENCE_ENTRY_POINTS
from .attention import window_attention, window_bias

__all__ = ["window_attention", "window_bias", "not_supported_reasons", "ENTRY_POINTS", "DTYPES", "DEVICES"]

DTYPES = HALF_AND_FP32
DEVICES = ("cpu", "cuda")


def not_supported_reasons(op: str, facts: Facts) -> List[str]:
    reasons = []
    if facts["device"].type not in DEVICES:
        reasons.append(f"needs CPU or CUDA tensors, got {facts['device']}")
    if op == "window_attention":
        reasons += dtype_reason("dtype", facts["dtype"], DTYPES)
    return reasons


ENTRY_POINTS = dict(_REFERENCE_ENTRY_POINTS, window_attention=window_attention)
