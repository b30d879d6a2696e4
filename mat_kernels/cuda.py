"""The "cuda" backend of ``mat_kernels.ops``: the hand-written kernels of the compiled extension.

Kernels live in ``csrc/``: ``window_attention_fwd.cu`` (fp32 SIMT forward),
``window_attention_fwd_tc.cu`` (tensor-core forward for fp16/bf16; ``MAT_KERNELS_CUDA_SIMT=1``
forces the SIMT one), ``window_attention_bwd.cu`` (backward by recomputation, fp32 SIMT) and
``mask_update.cu``. ``mat_kernels._ext`` loads ``mat_kernels._C`` and registers fake kernels and
autograd. This module states what the backend supports and forwards the public ops with the
reference's signatures.

Status: the kernels compile for sm_80 and sm_90, and the unchanged kernel code runs and matches
the reference in a CPU emulation (tests/cuda/test_emulated.py), but no GPU run has been recorded
yet, so the first use warns and ``backend="auto"`` never picks this backend (see
``mat_kernels/_tuned.py``).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch

from . import _checks, _ext
from .backends import attention_limit_reasons

__all__ = ["window_attention", "window_mask_update", "partial_conv_mask_update", "not_supported_reasons",
           "UnverifiedBackendWarning"]

MAX_HEAD_DIM = 128
MAX_WINDOW_TOKENS = 1024
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MASK_DTYPES = (torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Tests point this at a namespace defined in Python with the same schemas (see
# tests/cuda/test_ext_registration.py); None means the compiled ops.
_NAMESPACE: Optional[str] = None


class UnverifiedBackendWarning(UserWarning):
    """The CUDA backend ran although its GPU test suite has no recorded pass yet."""


# Set to True in the commit that records a passing GPU run of ``pytest tests/cuda -m gpu``
# (with the GPU name and the run's output); until then the first use warns.
GPU_VERIFIED = False
_warned = False


def _warn_unverified() -> None:
    global _warned
    if not GPU_VERIFIED and not _warned:
        _warned = True
        warnings.warn("mat_kernels: the CUDA backend has not been verified on a GPU yet (no recorded run of "
                      "tests/cuda on a GPU); compare with backend='reference' or use backend='triton'",
                      UnverifiedBackendWarning, stacklevel=3)


def _ops():
    ops = _ext.ops(_NAMESPACE)
    _warn_unverified()
    return ops


def not_supported_reasons(op: str, facts: dict):
    """Why this backend cannot run ``op`` for ``facts`` (empty list: it can)."""
    reasons = []
    if _ext.LOAD_ERROR is not None:
        reasons.append(f"the CUDA extension mat_kernels._C is not available: {_ext.LOAD_ERROR}")
    device = facts["device"]
    if device.type != "cuda":
        reasons.append(f"needs CUDA tensors, got {device}")
    if op == "window_attention":
        reasons += attention_limit_reasons(facts, dtypes=DTYPES, max_head_dim=MAX_HEAD_DIM,
                                           max_window_tokens=MAX_WINDOW_TOKENS)
        mask_dtype = facts.get("mask_dtype")
        if mask_dtype is not None and mask_dtype not in MASK_DTYPES:
            reasons.append(f"mask dtype must be one of {MASK_DTYPES}, got {mask_dtype}")
    elif facts["dtype"] not in MASK_DTYPES:
        reasons.append(f"mask dtype must be one of {MASK_DTYPES}, got {facts['dtype']}")
    return reasons


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                     window_size: int, shift_size: int = 0, num_heads: int, scale: Optional[float] = None
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Shifted-window contextual attention on the CUDA kernels.

    Contract of :func:`mat_kernels.reference.window_attention`: q, k, v (B, H, W, C), any strides;
    mask (B, H, W, 1) or (B, H, W), bool or float, or None. Returns out (B, H, W, C) (contiguous,
    un-shifted layout) and the updated mask (shape and dtype of ``mask``) or None. Differentiable
    in q, k, v. Arguments are assumed validated (``mat_kernels.ops`` does it; the C++ glue checks
    again).
    """
    ops = _ops()
    head_dim = q.shape[-1] // num_heads
    scale = head_dim ** -0.5 if scale is None else float(scale)
    dev = q.device.type
    if torch.is_autocast_enabled(dev):
        # As PyTorch's own attention ops do: q, k, v in the autocast dtype; the mask keeps its dtype
        # because new_mask must come back in it.
        dt = torch.get_autocast_dtype(dev)
        if dt in DTYPES:
            q, k, v = q.to(dt), k.to(dt), v.to(dt)
    out, _lse, new_mask = ops.window_attention_fwd_cuda(q, k, v, mask, window_size, shift_size, num_heads, scale)
    return out, (new_mask if mask is not None else None)


def window_mask_update(mask: torch.Tensor, *, window_size: int, shift_size: int = 0) -> torch.Tensor:
    """Contract of :func:`mat_kernels.reference.window_mask_update`: (B, H, W, 1) or (B, H, W) in,
    same shape and dtype out."""
    _checks.check_window_mask_update_args(mask, window_size, shift_size)
    return _ops().window_mask_update_cuda(mask, window_size, shift_size)


def partial_conv_mask_update(mask: torch.Tensor, *, kernel_size: int, stride: int = 1
                             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Contract of :func:`mat_kernels.reference.partial_conv_mask_update`: (B, 1, H, W) in,
    (new_mask, ratio) each (B, 1, H_out, W_out) out, float32 for a bool mask."""
    _checks.check_partial_conv_args(mask, kernel_size, stride)
    new_mask, ratio = _ops().partial_conv_mask_update_cuda(mask, kernel_size, stride)
    return new_mask, ratio
