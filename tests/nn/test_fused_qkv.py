"""The fused q/k projection (one GEMM over the normalised tokens) against the module's own
unfused ``project_qkv``, and the Swin block that uses it against the official op order."""
from __future__ import annotations

import pytest
import torch

from mat_kernels import reference
from mat_kernels.nn import SwinTransformerBlock, WindowAttention
from mat_kernels.nn.fused_qkv import project_qkv_fused
from mat_kernels.testing import assert_close


def _attn(dim=36, heads=6):
    attn = WindowAttention(dim, (8, 8), heads)
    with torch.no_grad():  # non-zero biases so a dropped or swapped bias shows
        for fc in (attn.q, attn.k, attn.v):
            fc.bias.normal_()
    return attn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_equals_unfused(dtype):
    attn = _attn().to(dtype)
    x = torch.randn(2, 5, 7, 36, dtype=dtype)
    q, k, v = project_qkv_fused(attn, x)
    rq, rk, rv = attn.project_qkv(x)
    what = "fwd"
    for got, exp, name in ((q, rq, "q"), (k, rk, "k"), (v, rv, "v")):
        assert got.shape == exp.shape
        assert_close(got, exp, "swin_block" if dtype == torch.float32 else "window_attention", what,
                     dtype=dtype if dtype == torch.float64 else None, name=name)
    # q and k are the two halves of one buffer (no copies)
    assert q.data_ptr() + 36 * q.element_size() == k.data_ptr() and q.stride()[-2] == 72


def test_fused_gradients_match():
    attn = _attn().double()
    x = torch.randn(1, 16, 36, dtype=torch.float64, requires_grad=True)
    g = [torch.randn(1, 16, 36, dtype=torch.float64) for _ in range(3)]
    wrt = [x] + [p for fc in (attn.q, attn.k, attn.v) for p in fc.parameters()]
    loss_f = sum((t * gi).sum() for t, gi in zip(project_qkv_fused(attn, x), g))
    grads_f = torch.autograd.grad(loss_f, wrt)
    loss_r = sum((t * gi).sum() for t, gi in zip(attn.project_qkv(x), g))
    grads_r = torch.autograd.grad(loss_r, wrt)
    for a, b in zip(grads_f, grads_r):
        assert_close(a, b, "window_attention", "bwd")


@pytest.mark.parametrize("shift", [0, 4])
def test_block_uses_fused_projection_and_matches_op_order(shift):
    """The block (fused projection, reference backend) equals the official op order written
    out with the unfused projections, in float64."""
    torch.manual_seed(0)
    H = W = 16
    blk = SwinTransformerBlock(36, (H, W), 6, window_size=8, shift_size=shift, mlp_ratio=2.0).double()
    blk.backend = "reference"
    x = torch.randn(2, H * W, 36, dtype=torch.float64)
    mask = (torch.rand(2, H * W, 1) > 0.5).double()
    out, new_mask = blk(x, (H, W), mask)
    q, k, v = (t.reshape(2, H, W, 36) for t in blk.attn.project_qkv(x))
    att, ref_mask = reference.window_attention(q, k, v, mask.view(2, H, W, 1), window_size=8, shift_size=shift,
                                               num_heads=6, scale=blk.attn.scale)
    y = blk.attn.proj(att.reshape(2, H * W, 36))
    ref = blk.mlp(blk.fuse(torch.cat([x, y], dim=-1)))
    assert_close(out, ref, "window_attention", "fwd")
    assert torch.equal(new_mask, ref_mask.reshape(2, H * W, 1))
