"""torch.compile with the default inductor backend: Swin blocks (mask / no mask, shift / no
shift), a BasicLayer and a StyleConv with random noise (same seed) match eager within the fp32
tolerance."""
from __future__ import annotations

import pytest
import torch

from mat_kernels.nn import StyleConv, SwinTransformerBlock
from mat_kernels.nn.blocks import BasicLayer
from mat_kernels.testing import assert_close


DIM, RES, WS, HEADS = 60, 16, 8, 6


def _mask(batch):
    m = torch.ones(batch, RES, RES, 1)
    m[0, :WS, :WS] = 0          # one all-hole window (unshifted)
    m[-1, 4:13, 2:15] = 0       # a hole across windows
    return m.view(batch, RES * RES, 1)


@pytest.mark.parametrize("shift", [0, WS // 2])
@pytest.mark.parametrize("with_mask", [False, True])
def test_compiled_swin_block_matches_eager(shift, with_mask):
    torch._dynamo.reset()
    blk = SwinTransformerBlock(DIM, (RES, RES), HEADS, window_size=WS, shift_size=shift).eval()
    x = torch.randn(2, RES * RES, DIM)
    mask = _mask(2) if with_mask else None
    with torch.no_grad():
        ref, ref_mask = blk(x, (RES, RES), mask)
        out, out_mask = torch.compile(blk, fullgraph=True)(x, (RES, RES), mask)
    assert_close(out, ref, "compiled", "fwd", torch.float32)
    if with_mask:
        assert torch.equal(out_mask, ref_mask)
    else:
        assert out_mask is None


def test_compiled_basic_layer_forward_backward_matches_eager():
    torch._dynamo.reset()
    layer = BasicLayer(DIM, [RES, RES], depth=2, num_heads=HEADS, window_size=WS)
    x = torch.randn(2, RES * RES, DIM)
    mask = _mask(2)
    compiled = torch.compile(layer, fullgraph=True)
    results = []
    for fn in (layer, compiled):
        xi = x.clone().requires_grad_(True)
        out, _, new_mask = fn(xi, (RES, RES), mask)
        out.square().sum().backward()
        results.append((out.detach(), new_mask, xi.grad, layer.blocks[0].attn.q.weight.grad.clone()))
        layer.zero_grad(set_to_none=True)
    (ref, ref_mask, ref_gx, ref_gw), (out, out_mask, gx, gw) = results
    assert_close(out, ref, "compiled", "fwd", torch.float32)
    assert torch.equal(out_mask, ref_mask)
    assert_close(gx, ref_gx, "compiled", "bwd", torch.float32, "input gradient")
    assert_close(gw, ref_gw, "compiled", "bwd", torch.float32, "q weight gradient")


def test_compiled_style_conv_draws_the_eager_noise():
    """noise_mode='random' under inductor's default settings: the eager randn for a seed."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    conv = StyleConv(8, 8, 4, 8)
    with torch.no_grad():
        conv.noise_strength.fill_(1.0)
    x, style = torch.randn(2, 8, 8, 8), torch.randn(2, 4)
    with torch.no_grad():
        torch.manual_seed(3)
        ref = conv(x, style, noise_mode="random")
        torch.manual_seed(3)
        out = torch.compile(conv, fullgraph=True)(x, style, noise_mode="random")
    assert_close(out, ref, "compiled", "fwd", torch.float32)
