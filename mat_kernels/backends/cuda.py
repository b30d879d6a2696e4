"""The CUDA backend: what the hand-written kernels of the compiled extension ``mat_kernels._C``
support, and one entry point per op that calls its op (loaded by :mod:`mat_kernels.cuda.library`).

Kernels live in ``csrc/``: ``window_attention_fwd.cu`` (fp32 SIMT forward),
``window_attention_fwd_tc.cu`` (tensor-core forward for fp16/bf16; ``MAT_KERNELS_CUDA_SIMT=1``
forces the SIMT one), ``window_attention_bwd.cu`` (backward by recomputation) and
``mask_update.cu``. There is no CUDA bias_act.

The kernels compile for sm_80/sm_90 and run, unchanged, against the reference in a CPU emulation
(tests/cuda/test_emulated.py). Until a GPU run of ``pytest -m gpu tests/cuda`` is recorded
(``GPU_VERIFIED``), the first use warns, and ``backend="auto"`` picks this backend only where
``preferences.PREFERENCES`` lists it from a measurement.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import torch

from ..cuda import library
from . import FUSED_ATTENTION_LIMITS, Facts

__all__ = ["not_supported_reasons", "window_attention", "window_mask_update", "partial_conv_mask_update",
           "UnverifiedBackendWarning", "GPU_VERIFIED"]

MASK_DTYPES = (torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Whether ``pytest -m gpu tests/cuda`` has passed on a GPU, with its log committed under
# benchmarks/results/. While False the first use warns.
GPU_VERIFIED = False
_warned = False


class UnverifiedBackendWarning(UserWarning):
    """The CUDA backend ran although its GPU test suite has no recorded pass."""


def _ops():
    global _warned
    ops = library.ops()
    if not GPU_VERIFIED and not _warned:
        _warned = True
        warnings.warn("mat_kernels: the CUDA backend has not been verified on a GPU yet (no recorded run of "
                      "tests/cuda on a GPU); compare with backend='reference' or use backend='triton'",
                      UnverifiedBackendWarning, stacklevel=4)
    return ops


def not_supported_reasons(op: str, facts: Facts) -> List[str]:
    reasons = []
    if library.LOAD_ERROR is not None:
        reasons.append(f"the CUDA extension mat_kernels._C is not available: {library.LOAD_ERROR}")
    device = facts["device"]
    if device.type != "cuda":
        reasons.append(f"needs CUDA tensors, got {device}")
    if op == "window_attention":
        reasons += FUSED_ATTENTION_LIMITS.reasons(facts)
        mask_dtype = facts.get("mask_dtype")
        if mask_dtype is not None and mask_dtype not in MASK_DTYPES:
            reasons.append(f"mask dtype must be one of {MASK_DTYPES}, got {mask_dtype}")
    elif facts["dtype"] not in MASK_DTYPES:
        reasons.append(f"mask dtype must be one of {MASK_DTYPES}, got {facts['dtype']}")
    return reasons


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                     window_size: int, shift_size: int, num_heads: int, scale: float
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    out, _lse, new_mask = _ops().window_attention_fwd_cuda(q, k, v, mask, window_size, shift_size, num_heads, scale)
    return out, (new_mask if mask is not None else None)


def window_mask_update(mask: torch.Tensor, window_size: int, shift_size: int) -> torch.Tensor:
    return _ops().window_mask_update_cuda(mask, window_size, shift_size)


def partial_conv_mask_update(mask: torch.Tensor, kernel_size: int, stride: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return _ops().partial_conv_mask_update_cuda(mask, kernel_size, stride)
