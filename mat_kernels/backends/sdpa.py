"""The SDPA backend: MAT's window attention on PyTorch's fused ``scaled_dot_product_attention``
(:mod:`mat_kernels.sdpa`), on CPU and CUDA tensors, with no compiler and no extension.

The mask rules and bias_act have no SDPA form: this backend runs them as the reference does
(the same functions), so a network set to ``"sdpa"`` runs everything in plain PyTorch ops.
"""
from __future__ import annotations

from typing import List

import torch

from ..reference import (bias_act_core as bias_act, partial_conv_mask_update_core as partial_conv_mask_update,
                         window_mask_update_core as window_mask_update)
from ..sdpa import window_attention
from . import Facts

__all__ = ["not_supported_reasons", "window_attention", "window_mask_update", "partial_conv_mask_update",
           "bias_act", "DTYPES", "DEVICES"]

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
DEVICES = ("cpu", "cuda")


def not_supported_reasons(op: str, facts: Facts) -> List[str]:
    reasons = []
    if facts["device"].type not in DEVICES:
        reasons.append(f"needs CPU or CUDA tensors, got {facts['device']}")
    if op == "window_attention" and facts["dtype"] not in DTYPES:
        reasons.append(f"dtype must be one of {DTYPES}, got {facts['dtype']}")
    return reasons
