"""The Triton backend: MAT's kernels in Triton, their ``torch.library`` ops and their limits.

``window_attention.py``, ``mask_update.py`` and ``bias_act.py`` hold the kernels and their
launchers; ``library.py`` registers the ops (schemas, fakes, autograd) that call the launchers and
that are this backend's entry points; ``aot_table.py`` lists every launch configuration and
``aot.py`` compiles them (the compile gate). The kernels run on CUDA tensors, and on CPU tensors
in Triton's interpreter (``TRITON_INTERPRET=1`` when the package is imported).
"""
from __future__ import annotations

from typing import List

import torch

from ..contract import FLOAT_DTYPES, FUSED_ATTENTION_LIMITS, Facts, dtype_reason

# Importing the package imports triton and registers the ops, so that calls traced by
# torch.compile import nothing (an import there is a graph break). Without triton the import
# fails, and the registry reports that error as this backend's reason.
from . import _common, library

__all__ = ["not_supported_reasons", "ENTRY_POINTS", "LIMITS", "BIAS_ACT_DTYPES", "BIAS_ACT_ACTS"]

LIMITS = FUSED_ATTENTION_LIMITS
BIAS_ACT_DTYPES = FLOAT_DTYPES
BIAS_ACT_ACTS = ("linear", "relu", "lrelu")  # activations with a piecewise-constant derivative


def not_supported_reasons(op: str, facts: Facts) -> List[str]:
    reasons = []
    device = facts["device"]
    if device.type != "cuda" and not (_common.interpreting() and device.type == "cpu"):
        reasons.append(f"needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got {device}")
    if op == "window_attention":
        reasons += LIMITS.reasons(facts)
    elif op == "bias_act":
        reasons += dtype_reason("dtype", facts["dtype"], BIAS_ACT_DTYPES)
        if facts["act"] not in BIAS_ACT_ACTS:
            reasons.append(f"act must be one of {BIAS_ACT_ACTS}, got {facts['act']!r}")
        if facts.get("bias_dtype") not in (None, facts["dtype"]):
            reasons.append(f"b must have x's dtype {facts['dtype']}, got {facts['bias_dtype']}")
    return reasons


# The ops are the entry points (see mat_kernels.contract for the calling convention).
ENTRY_POINTS = {
    "window_attention": library.window_attention_fwd,
    "window_mask_update": library.window_mask_update,
    "partial_conv_mask_update": library.partial_conv_mask_update,
    "bias_act": library.bias_act,
}
