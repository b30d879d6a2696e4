"""torch.library.opcheck of the Triton ops (schema, fake tensors, autograd registration, AOT
dispatch). Without a GPU the kernels run in Triton's interpreter on CPU tensors."""
from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")
from mat_kernels.triton import library as wa  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1", allow_module_level=True)


# ----------------------------------------------------------------------------------------------
# window attention
# ----------------------------------------------------------------------------------------------
def _attention_args(mask_kind, shift, dtype=torch.float32, requires_grad=True):
    B, H, W, heads, d, ws = 1, 8, 8, 2, 16, 4
    q, k, v = (torch.randn(B, H, W, heads * d, device=DEVICE, dtype=dtype, requires_grad=requires_grad)
               for _ in range(3))
    if mask_kind is None:
        mask = None
    elif mask_kind == "bool":
        mask = torch.rand(B, H, W, device=DEVICE) > 0.5
    else:
        mask = (torch.rand(B, H, W, 1, device=DEVICE) > 0.5).float()
    return q, k, v, mask, ws, shift, heads, d ** -0.5


@pytest.mark.parametrize("mask_kind,shift", [(None, 0), ("float", 2), ("bool", 1)])
def test_opcheck_window_attention_fwd(mask_kind, shift):
    args = _attention_args(mask_kind, shift)
    torch.library.opcheck(torch.ops.mat_kernels.window_attention_fwd_triton.default, args)


def test_opcheck_window_attention_bwd():
    q, k, v, mask, ws, shift, heads, scale = _attention_args("float", 2, requires_grad=False)
    out, lse, _ = torch.ops.mat_kernels.window_attention_fwd_triton(q, k, v, mask, ws, shift, heads, scale)
    dout = torch.randn_like(out)
    torch.library.opcheck(torch.ops.mat_kernels.window_attention_bwd_triton.default,
                          (dout, q, k, v, mask, out, lse, ws, shift, heads, scale))


def test_fake_shapes():
    """The fake implementation (traced from the launcher) gives the real outputs' metadata."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    q, k, v, mask, ws, shift, heads, scale = _attention_args("bool", 1, requires_grad=False)
    real = torch.ops.mat_kernels.window_attention_fwd_triton(q, k, v, mask, ws, shift, heads, scale)
    with FakeTensorMode() as mode:
        fq, fk, fv, fm = (mode.from_tensor(t) for t in (q, k, v, mask))
        fake = torch.ops.mat_kernels.window_attention_fwd_triton(fq, fk, fv, fm, ws, shift, heads, scale)
    for r, f in zip(real, fake):
        assert r.shape == f.shape and r.dtype == f.dtype and r.stride() == f.stride()


_COMPILED_PATH_SCRIPT = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
import mat_kernels.triton.library as ag
from torch._library.custom_ops import CustomOpDef
with FakeTensorMode():
    q, k, v = (torch.empty(2, 32, 32, 180, device="cuda") for _ in range(3))
    m = torch.empty(2, 32, 32, 1, device="cuda", dtype=torch.bool)
    out, lse, nm = torch.ops.mat_kernels.window_attention_fwd_triton(q, k, v, m, 16, 8, 6, 0.18)
    assert out.shape == q.shape and out.device.type == "cuda", out
    assert lse.shape == (2 * 4 * 6, 256) and lse.dtype == torch.float32, lse
    assert nm.shape == m.shape and nm.dtype == torch.bool, nm
    dq, dk, dv = torch.ops.mat_kernels.window_attention_bwd_triton(out, q, k, v, m, out, lse, 16, 8, 6, 0.18)
    assert dq.shape == dk.shape == dv.shape == q.shape
print("ok")
"""


def test_compiled_kernel_path_fake_tracing(tmp_path):
    """Without the interpreter the ops are ``triton_op``s whose fake implementation is the
    launcher traced with fake tensors (``wrap_triton``); check it on fake CUDA tensors in a
    fresh process (this one has TRITON_INTERPRET=1 baked into its kernels)."""
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _COMPILED_PATH_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
