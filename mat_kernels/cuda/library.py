"""The ``torch.library`` side of the compiled CUDA extension ``mat_kernels._C``: loading it, and
the fake kernels and autograd that C++ does not register.

``_C`` (sources in ``csrc/``) declares four ops in the ``mat_kernels`` namespace and implements
them for the CUDA dispatch key:

* ``window_attention_fwd_cuda(q, k, v, mask?, window_size, shift_size, num_heads, scale)
  -> (out (B, H, W, C), lse (B, heads, H, W) float32, new_mask)``; ``new_mask`` has the mask's
  shape and dtype, or is an empty ``(0,)`` tensor when ``mask`` is None (custom ops cannot
  return an optional tensor).
* ``window_attention_bwd_cuda(grad_out, q, k, v, mask?, out, lse, window_size, shift_size,
  num_heads, scale) -> (dq, dk, dv)``.
* ``window_mask_update_cuda(mask, window_size, shift_size) -> new_mask``.
* ``partial_conv_mask_update_cuda(mask, kernel_size, stride) -> (new_mask, ratio)``.

This module adds what C++ does not: fake (meta) kernels, so the ops trace under FakeTensor and
``torch.compile``, and the autograd formula of the attention forward (it calls the backward op;
the mask and the lse get no gradient; :func:`mat_kernels.contract.window_attention_autograd`). When
``_C`` is missing, ``LOAD_ERROR`` says why and :func:`ops` raises with that reason; nothing else
in the package is affected.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch

from ..contract import window_attention_autograd

NAMESPACE = "mat_kernels"
OP_NAMES = ("window_attention_fwd_cuda", "window_attention_bwd_cuda", "window_mask_update_cuda",
            "partial_conv_mask_update_cuda")
NOT_BUILT = ("the package was installed without the CUDA extension (no CUDA toolkit/torch CUDA build "
             "at install time); reinstall with a CUDA build of torch and nvcc on PATH "
             "(MAT_KERNELS_BUILD_CUDA=1 makes a missing toolkit an install error)")

LOAD_ERROR: Optional[str] = None
_registered = set()


def _load() -> Optional[str]:
    try:
        # Importing runs the TORCH_LIBRARY registrations; the module itself has no attributes.
        importlib.import_module("mat_kernels._C")
    except ModuleNotFoundError as exc:
        if exc.name == "mat_kernels._C":
            return NOT_BUILT
        return f"mat_kernels._C failed to import: {type(exc).__name__}: {exc}"
    except ImportError as exc:  # e.g. built against another torch, or libcudart missing
        return f"mat_kernels._C failed to import: {exc}"
    return None


def _partial_conv_out_size(n: int, kernel_size: int, stride: int) -> int:
    pad = kernel_size // 2
    return (n + 2 * pad - kernel_size) // stride + 1


def register(namespace: str = NAMESPACE) -> None:
    """Register fake kernels and autograd for the four ``*_cuda`` ops declared in ``namespace``
    (by ``_C`` for the default; any namespace with the same schemas works). Idempotent."""
    if namespace in _registered:
        return
    ns = namespace

    @torch.library.register_fake(f"{ns}::window_attention_fwd_cuda")
    def _fwd_fake(q, k, v, mask, window_size, shift_size, num_heads, scale):
        B, H, W, C = q.shape
        out = q.new_empty((B, H, W, C))
        lse = q.new_empty((B, num_heads, H, W), dtype=torch.float32)
        new_mask = mask.new_empty(mask.shape) if mask is not None else q.new_empty((0,))
        return out, lse, new_mask

    @torch.library.register_fake(f"{ns}::window_attention_bwd_cuda")
    def _bwd_fake(grad_out, q, k, v, mask, out, lse, window_size, shift_size, num_heads, scale):
        return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)

    @torch.library.register_fake(f"{ns}::window_mask_update_cuda")
    def _wmu_fake(mask, window_size, shift_size):
        return mask.new_empty(mask.shape)

    @torch.library.register_fake(f"{ns}::partial_conv_mask_update_cuda")
    def _pcmu_fake(mask, kernel_size, stride):
        B, _, H, W = mask.shape
        dtype = torch.float32 if mask.dtype == torch.bool else mask.dtype
        shape = (B, 1, _partial_conv_out_size(H, kernel_size, stride), _partial_conv_out_size(W, kernel_size, stride))
        return mask.new_empty(shape, dtype=dtype), mask.new_empty(shape, dtype=dtype)

    bwd_op = getattr(getattr(torch.ops, ns), "window_attention_bwd_cuda")

    backward, setup_context = window_attention_autograd(bwd_op)
    torch.library.register_autograd(f"{ns}::window_attention_fwd_cuda", backward, setup_context=setup_context)
    _registered.add(namespace)


def ops():
    """``torch.ops.mat_kernels`` with the ``*_cuda`` ops ready; raises RuntimeError naming why the
    extension is unavailable."""
    if LOAD_ERROR is not None:
        raise RuntimeError(f"the mat_kernels CUDA extension is unavailable: {LOAD_ERROR}")
    register(NAMESPACE)
    return getattr(torch.ops, NAMESPACE)


LOAD_ERROR = _load()
