"""The Triton backend of ``mat_kernels.ops``: what it supports, and the public ops.

A module of its own (not the package ``__init__``) so that the function ``window_attention``
is never shadowed by the kernel submodule of the same name.
"""
from __future__ import annotations

import os

import torch

from ..backends import attention_limit_reasons

__all__ = ["window_attention", "window_mask_update", "partial_conv_mask_update", "not_supported_reasons"]

MAX_HEAD_DIM = 128
MAX_WINDOW_TOKENS = 1024
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def not_supported_reasons(op: str, facts: dict):
    reasons = []
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return [f"triton is not installed ({exc})"]
    device = facts["device"]
    if device.type != "cuda" and not (interpreting() and device.type == "cpu"):
        reasons.append(f"needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got {device}")
    if op == "window_attention":
        reasons += attention_limit_reasons(facts, dtypes=DTYPES, max_head_dim=MAX_HEAD_DIM,
                                           max_window_tokens=MAX_WINDOW_TOKENS)
    return reasons


from .autograd import window_attention  # noqa: E402  (imports triton: after the limits above)
from .mask_update import partial_conv_mask_update, window_mask_update  # noqa: E402
