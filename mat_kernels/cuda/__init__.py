"""The CUDA backend: the hand-written kernels of the compiled extension ``mat_kernels._C``
(sources in ``csrc/``), their limits and their entry points. ``library.py`` loads the extension
and registers the fake kernels and autograd that C++ does not.

Kernels: ``window_attention_fwd.cu`` (fp32 SIMT forward), ``window_attention_fwd_tc.cu``
(tensor-core forward for fp16/bf16; ``MAT_KERNELS_CUDA_SIMT=1`` forces the SIMT one),
``window_attention_bwd.cu`` (backward by recomputation) and ``mask_update.cu``. There is no CUDA
bias_act.

The kernels compile for sm_80/sm_90 and run, unchanged, against the reference in a CPU emulation
(tests/cuda/test_emulated.py). Until a GPU run of ``pytest -m gpu tests/cuda`` is recorded
(``GPU_VERIFIED``), the first use warns, and ``backend="auto"`` picks this backend only where
``backends.preferences.PREFERENCES`` lists it from a measurement.
"""
from __future__ import annotations

import warnings
from typing import List

from ..contract import FUSED_ATTENTION_LIMITS, MASK_DTYPES, Facts, dtype_reason
from . import library

__all__ = ["not_supported_reasons", "ENTRY_POINTS", "LIMITS", "MASK_DTYPES", "UnverifiedBackendWarning",
           "GPU_VERIFIED"]

LIMITS = FUSED_ATTENTION_LIMITS

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
        reasons += LIMITS.reasons(facts)
        if facts.get("mask_dtype") is not None:
            reasons += dtype_reason("mask dtype", facts["mask_dtype"], MASK_DTYPES)
    else:
        reasons += dtype_reason("mask dtype", facts["dtype"], MASK_DTYPES)
    return reasons


def window_attention(q, k, v, mask, window_size, shift_size, num_heads, scale):
    return _ops().window_attention_fwd_cuda(q, k, v, mask, window_size, shift_size, num_heads, scale)


def window_mask_update(mask, window_size, shift_size):
    return _ops().window_mask_update_cuda(mask, window_size, shift_size)


def partial_conv_mask_update(mask, kernel_size, stride):
    return _ops().partial_conv_mask_update_cuda(mask, kernel_size, stride)


# No bias_act: the registry reports "cuda has no implementation of bias_act".
ENTRY_POINTS = {"window_attention": window_attention, "window_mask_update": window_mask_update,
                "partial_conv_mask_update": partial_conv_mask_update}
