"""fp16 autocast on a Swin stage and on partial convolutions: large activations, large holes and
all-hole windows stay finite and close to fp32 (bounds in ``mat_kernels.testing``)."""
from __future__ import annotations

import pytest
import torch

from mat_kernels.nn.blocks import BasicLayer
from mat_kernels.nn.layers import Conv2dLayerPartial
from mat_kernels.testing import assert_close

DIM, RES, WS, HEADS = 60, 16, 8, 6


def _hole_mask(batch, res):
    m = torch.ones(batch, 1, res, res)
    m[0] = 0                              # the whole first image is a hole
    m[1:, :, : res // 2 + 1, : res // 2 + 3] = 0  # all-hole windows beside mixed ones
    return m


@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_swin_stage_fp16_autocast_is_finite_and_close(scale):
    torch.manual_seed(0)
    layer = BasicLayer(DIM, [RES, RES], depth=2, num_heads=HEADS, window_size=WS)
    # large activations: tokens of norm ~ scale * sqrt(DIM) (fp16 overflows at 65504)
    mask = _hole_mask(2, RES).flatten(2).transpose(1, 2)
    # tokens in holes are exactly zero, as after a partial conv (fp16 cannot hold normalize's eps)
    x = (torch.randn(2, RES * RES, DIM) * scale * mask).requires_grad_(True)
    outs = []
    for enabled in (False, True):
        with torch.autocast("cpu", dtype=torch.float16, enabled=enabled):
            out, _, new_mask = layer(x, (RES, RES), mask)
        gx, = torch.autograd.grad(out.float().square().mean(), x)
        outs.append((out.float(), new_mask, gx))
    (ref, ref_mask, ref_g), (out, out_mask, g) = outs
    assert_close(out, ref, "stage", "fwd", torch.float16)
    assert torch.isfinite(g).all()
    assert torch.equal(out_mask.float(), ref_mask.float())  # the mask rules count in fp32


@pytest.mark.parametrize("down", [1, 2])
def test_partial_conv_fp16_autocast_is_finite_and_close(down):
    torch.manual_seed(0)
    conv = Conv2dLayerPartial(DIM, DIM, kernel_size=3, down=down, activation="lrelu")
    x = torch.randn(2, DIM, 32, 32) * 100
    mask = _hole_mask(2, 32)
    with torch.no_grad():
        ref, ref_mask = conv(x, mask)
        with torch.autocast("cpu", dtype=torch.float16):
            out, out_mask = conv(x, mask)
            half_in, _ = conv(x.half(), mask.half())  # fp16 inputs too: the ratio has no NaN at holes
    assert_close(out.float(), ref, "stage", "fwd", torch.float16)
    assert torch.isfinite(half_in).all()
    assert torch.equal(out_mask.float(), ref_mask) and torch.equal(ref_mask[0], torch.zeros_like(ref_mask[0]))
