"""torch.library.opcheck of the Triton ops (schema, fake tensors, autograd registration, AOT
dispatch). Without a GPU the kernels run in Triton's interpreter on CPU tensors."""
from __future__ import annotations

import os

import pytest
import torch

wa = pytest.importorskip("mat_kernels.triton.autograd")

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
