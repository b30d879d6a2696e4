"""MAT's window attention on PyTorch's fused ``F.scaled_dot_product_attention``.

No compiler and no extension: the shift and window partition are the reference's
(:func:`mat_kernels.reference.windows.to_windows`), MAT's two ``-100`` biases become one additive
float mask per window, shared by every head, and SDPA runs the attention (its own fused CPU
kernel, PyTorch's memory-efficient kernel on CUDA) forward and backward. The new mask comes from
the reference's rule. :mod:`mat_kernels.backends.sdpa` registers it as the backend ``"sdpa"``.
"""
from __future__ import annotations

from .attention import window_attention, window_bias

__all__ = ["window_attention", "window_bias"]
