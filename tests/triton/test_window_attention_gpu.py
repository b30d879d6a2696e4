"""Triton window attention on CUDA (the shared case list in every dtype is in tests/test_ops.py): MAT's real shapes,
opcheck on CUDA, autocast, and torch.compile(fullgraph=True) of the Swin block on the Triton
backend. Every test is marked ``gpu`` (skipped without a CUDA device)."""
from __future__ import annotations

import pytest
import torch

from mat_kernels import ops
from mat_kernels.testing import assert_close, assert_mask_equal, check_window_attention, make_mask

pytestmark = pytest.mark.gpu

pytest.importorskip("triton")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _check(*args, **kw):
    return check_window_attention("triton", *args, device="cuda", **kw)
OP = "window_attention"


# MAT's attention shapes: C = 180, 6 heads (head_dim 30), batch 8.
MAT_SHAPES = [(64, 8, 0), (64, 8, 4), (32, 16, 0), (32, 16, 8), (16, 16, 0)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("grid,ws,shift", MAT_SHAPES)
@pytest.mark.parametrize("pattern", ["none", "random", "large_hole", "all_holes"])
def test_mat_shapes(grid, ws, shift, pattern, dtype):
    g = torch.Generator().manual_seed(7)
    mask = make_mask(pattern, 8, grid, grid, ws, generator=g, dtype=torch.float32)
    _check(8, grid, grid, 6, 30, ws, shift, mask, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mat_shape_fused_projection(dtype):
    """q, k, v as chunks of one (B, H, W, 540) projection, bool mask, 64x64 grid, shift 4."""
    g = torch.Generator().manual_seed(8)
    mask = make_mask("random", 8, 64, 64, 8, generator=g, dtype=torch.float32).bool()
    _check(8, 64, 64, 6, 30, 8, 4, mask, dtype=dtype, fused=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_cuda(dtype):
    B, H, W, heads, d, ws, shift = 2, 32, 32, 6, 30, 16, 8
    q, k, v = (torch.randn(B, H, W, heads * d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    mask = (torch.rand(B, H, W, 1, device="cuda") > 0.5).float()
    torch.library.opcheck(torch.ops.mat_kernels.window_attention_fwd_triton.default,
                          (q, k, v, mask, ws, shift, heads, d ** -0.5))
    torch.library.opcheck(torch.ops.mat_kernels.window_attention_fwd_triton.default,
                          (q, k, v, None, ws, 0, heads, d ** -0.5))
    out, lse, _ = torch.ops.mat_kernels.window_attention_fwd_triton(q, k, v, mask, ws, shift, heads, d ** -0.5)
    torch.library.opcheck(torch.ops.mat_kernels.window_attention_bwd_triton.default,
                          (torch.randn_like(out), q.detach(), k.detach(), v.detach(), mask, out.detach(), lse,
                           ws, shift, heads, d ** -0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_autocast_casts_qkv(dtype):
    """Under autocast, fp32 q, k, v run in the autocast dtype; the mask keeps its dtype."""
    B, H, W, heads, d, ws = 2, 32, 32, 6, 30, 8
    q, k, v = (torch.randn(B, H, W, heads * d, device="cuda") for _ in range(3))
    mask = (torch.rand(B, H, W, 1, device="cuda") > 0.5).float()
    with torch.autocast("cuda", dtype=dtype):
        out, nm = ops.window_attention(q, k, v, mask, backend="triton", window_size=ws, shift_size=4, num_heads=heads)
    assert out.dtype == dtype and nm.dtype == torch.float32
    ref, rm = ops.window_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, backend="triton", window_size=ws, shift_size=4,
                                  num_heads=heads)
    assert torch.equal(out, ref)
    assert_mask_equal(nm, rm)


def test_compile_swin_block_fullgraph():
    """mat_kernels.nn.SwinTransformerBlock on the Triton backend compiles without graph breaks
    (fullgraph=True) and matches the eager reference block, forward and backward."""
    from mat_kernels.nn import SwinTransformerBlock
    torch.manual_seed(0)
    H = W = 32
    blk = SwinTransformerBlock(180, (H, W), 6, window_size=8, shift_size=4, mlp_ratio=2.0).cuda()
    x = torch.randn(2, H * W, 180, device="cuda", requires_grad=True)
    mask = (torch.rand(2, H * W, 1, device="cuda") > 0.5).float()

    blk.backend = "reference"
    ref, ref_mask = blk(x, (H, W), mask)
    (rgx,) = torch.autograd.grad(ref.sum(), x)

    blk.backend = "triton"
    compiled = torch.compile(blk, fullgraph=True)
    y, m = compiled(x, (H, W), mask)
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert_mask_equal(m, ref_mask)
    assert_close(y, ref, "swin_block", "fwd")
    assert_close(gx, rgx, "swin_block", "bwd", name="dx")
