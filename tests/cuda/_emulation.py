"""The CUDA kernels of csrc/*.cu run on the CPU (host C++ with csrc/tests/host_cuda_shim.h), and
the "cuda" backend of mat_kernels.ops pointed at them.

:func:`build` compiles the kernel files and csrc/tests/emulate_api.cpp into one shared library
(ctypes). :func:`emu_fwd` / :func:`emu_bwd` call its attention launchers directly
(tests/cuda/test_emulated.py). :func:`emulated_cuda_backend` goes one step further: it declares
the schemas of csrc/ops.cpp in a private namespace whose CPU kernels do what the C++ glue of
csrc/*_api.cpp does (allocate contiguous outputs, pass strides, launch), lets
``mat_kernels.cuda.library.register`` add its fake kernels and autograd formula there, and points
the backend at it with CPU tensors allowed. ``ops.window_attention(..., backend="cuda")`` (and the
mask ops) then run the unchanged kernels through the package's own dispatch, autograd included,
which is how tests/test_ops_properties.py checks the "cuda" backend on a machine without a GPU.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from ._build import CSRC, cuda_include_dir, require_tool, schemas_from_ops_cpp

DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3, torch.bool: 4}
KERNEL_FILES = sorted(CSRC.glob("*.cu"))
NAMESPACE = "mat_kernels_cudaemu"
_LIBRARY = []  # the torch.library.Library of NAMESPACE once defined (its registrations live with it)


def build(out: Path) -> ctypes.CDLL:
    """Compile the kernels as host C++ into ``out`` and load them (2 parallel compiler jobs)."""
    gxx = require_tool("g++")
    flags = ["-std=c++20", "-O2", "-fPIC", f"-I{CSRC}", f"-I{cuda_include_dir()}"]

    def compile_one(src):
        obj = out / f"{src.stem}.o"
        extra = ["-DMK_HOST_EMULATION", "-include", str(CSRC / "tests" / "host_cuda_shim.h"), "-x", "c++"] \
            if src.suffix == ".cu" else []
        subprocess.run([gxx, *flags, *extra, "-c", str(src), "-o", str(obj)], check=True)
        return str(obj)

    with ThreadPoolExecutor(max_workers=2) as pool:
        objs = list(pool.map(compile_one, KERNEL_FILES + [CSRC / "tests" / "emulate_api.cpp"]))
    lib_path = out / "libmk_emu.so"
    subprocess.run([gxx, "-shared", "-o", str(lib_path), *objs, "-lpthread"], check=True)
    lib = ctypes.CDLL(str(lib_path))
    for name in ("emu_window_attention_fwd", "emu_window_attention_bwd", "emu_window_mask_update",
                 "emu_partial_conv_mask_update"):
        getattr(lib, name).restype = ctypes.c_char_p
    return lib


def ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else ctypes.c_void_p(0)


def strides(t, n):
    return (ctypes.c_int64 * n)(*(t.stride()[:n] if t is not None else (0,) * n))


def check(err):
    """A launcher returns NULL on success, else the error text."""
    assert err is None, err.decode()


def emu_fwd(lib, q, k, v, mask, ws, s, heads, scale, force_simt=False):
    """The forward launcher on CPU tensors of any strides: (out, lse, new_mask or None)."""
    B, H, W, C = q.shape
    out = torch.empty(B, H, W, C, dtype=q.dtype)
    lse = torch.empty(B, heads, H, W, dtype=torch.float32)
    new_mask = torch.empty(mask.shape, dtype=mask.dtype) if mask is not None else None
    check(lib.emu_window_attention_fwd(
        ptr(q), ptr(k), ptr(v), strides(q, 4), strides(k, 4), strides(v, 4), DT[q.dtype], ptr(mask),
        DT[mask.dtype] if mask is not None else 0, strides(mask, 3), ptr(new_mask), ptr(out), ptr(lse),
        B, H, W, C, heads, ws, s, ctypes.c_float(scale), int(force_simt)))
    return out, lse, new_mask


def emu_bwd(lib, dout, q, k, v, mask, out, lse, ws, s, heads, scale):
    """The backward launcher (``out`` and ``lse`` contiguous, as the forward returns them)."""
    B, H, W, C = q.shape
    dq, dk, dv = (torch.empty(B, H, W, C, dtype=q.dtype) for _ in range(3))
    delta = torch.empty_like(lse)
    check(lib.emu_window_attention_bwd(
        ptr(dout), strides(dout, 4), ptr(q), ptr(k), ptr(v), strides(q, 4), strides(k, 4), strides(v, 4),
        DT[q.dtype], ptr(mask), DT[mask.dtype] if mask is not None else 0, strides(mask, 3), ptr(out), ptr(lse),
        ptr(delta), ptr(dq), ptr(dk), ptr(dv), B, H, W, C, heads, ws, s, ctypes.c_float(scale)))
    return dq, dk, dv


def _define_ops(lib) -> None:
    """The schemas of csrc/ops.cpp in ``NAMESPACE``, with CPU kernels doing what the C++ glue does."""
    ns = torch.library.Library(NAMESPACE, "DEF")
    for schema in schemas_from_ops_cpp():
        ns.define(schema)

    def fwd(q, k, v, mask, window_size, shift_size, num_heads, scale):
        # The glue reads MAT_KERNELS_CUDA_SIMT=1 to run fp16/bf16 on the SIMT kernel.
        simt = os.environ.get("MAT_KERNELS_CUDA_SIMT") == "1"
        out, lse, new_mask = emu_fwd(lib, q, k, v, mask, window_size, shift_size, num_heads, scale, simt)
        return out, lse, (new_mask if mask is not None else q.new_empty((0,)))

    def bwd(grad_out, q, k, v, mask, out, lse, window_size, shift_size, num_heads, scale):
        return emu_bwd(lib, grad_out, q, k, v, mask, out.contiguous(), lse.contiguous(), window_size, shift_size,
                       num_heads, scale)

    def wmu(mask, window_size, shift_size):
        B, H, W = mask.shape[:3]
        new = torch.empty(mask.shape, dtype=mask.dtype)
        check(lib.emu_window_mask_update(ptr(mask), DT[mask.dtype], strides(mask, 3), ptr(new), B, H, W,
                                         window_size, shift_size))
        return new

    def pcmu(mask, kernel_size, stride):
        B, _, H, W = mask.shape
        pad = kernel_size // 2
        H_out, W_out = ((n + 2 * pad - kernel_size) // stride + 1 for n in (H, W))
        out_dtype = torch.float32 if mask.dtype == torch.bool else mask.dtype
        new, ratio = (torch.empty(B, 1, H_out, W_out, dtype=out_dtype) for _ in range(2))
        check(lib.emu_partial_conv_mask_update(ptr(mask), DT[mask.dtype], strides(mask, 4), ptr(new), ptr(ratio),
                                               DT[out_dtype], B, H, W, H_out, W_out, kernel_size, stride))
        return new, ratio

    for name, fn in (("window_attention_fwd_cuda", fwd), ("window_attention_bwd_cuda", bwd),
                     ("window_mask_update_cuda", wmu), ("partial_conv_mask_update_cuda", pcmu)):
        ns.impl(name, fn, "CPU")
    _LIBRARY.append(ns)


@contextlib.contextmanager
def emulated_cuda_backend(lib):
    """Within the context, ``backend="cuda"`` runs the emulated kernels on CPU tensors: the
    backend's own limits (dtypes, head_dim, window size, mask dtypes) still apply; its device
    and extension reasons are dropped for CPU tensors."""
    from mat_kernels import cuda
    from mat_kernels.cuda import library as ext
    if not _LIBRARY:
        _define_ops(lib)
        ext.register(NAMESPACE)
    true_reasons = cuda.not_supported_reasons

    def reasons_on_cpu(op, facts):
        if facts["device"].type != "cpu":
            return true_reasons(op, facts)
        return [r for r in true_reasons(op, facts)
                if not r.startswith(("needs CUDA tensors", "the CUDA extension mat_kernels._C"))]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ext, "ops", lambda: getattr(torch.ops, NAMESPACE))
        mp.setattr(cuda, "not_supported_reasons", reasons_on_cpu)
        mp.setattr(cuda, "_warned", True)
        yield

