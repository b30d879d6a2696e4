"""Running a named backend in a test on whatever machine this is."""
from __future__ import annotations

import contextlib

import pytest
import torch

from mat_kernels import backends

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def use_backend(name: str, request):
    """Run ``name`` here: "cuda" on a CPU machine runs the kernels of csrc/*.cu built as host C++
    (tests/cuda/_emulation.py) through the backend's own dispatch and autograd; a backend that
    cannot run at all (no Triton, no compiler for the emulation) is skipped with its reasons."""
    if name == "cuda" and DEVICE.type == "cpu":
        from tests.cuda._emulation import emulated_cuda_backend
        with emulated_cuda_backend(request.getfixturevalue("cuda_emulation")):
            yield
        return
    facts = dict(device=DEVICE, dtype=torch.float32, head_dim=16, window_size=4, mask_dtype=None)
    why = backends.not_supported_reasons(name, "window_attention", facts)
    if why:
        pytest.skip(f"{name} cannot run here: {'; '.join(why)}")
    yield
