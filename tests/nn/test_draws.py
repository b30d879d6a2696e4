"""mat_kernels.nn.draws: the generator's random draws follow the released calls, whatever the
memory order, and give the same values compiled (inductor, default settings) as eager."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mat_kernels.nn.blocks import BasicLayer, token2feature
from mat_kernels.nn.draws import bernoulli_map, normal_noise, seeded_draw
from mat_kernels.nn.layers import StyleConv
from mat_kernels.testing import assert_close


@pytest.mark.parametrize("shape,strides_of", [
    ((2, 16, 6), lambda t: t),                              # contiguous (B, L, C)
    ((1, 16, 6), lambda t: t.transpose(1, 2).contiguous().transpose(1, 2)),   # (B, C, L) memory order
    ((3, 16, 6), lambda t: t.transpose(1, 2).contiguous().transpose(1, 2)),
])
def test_bernoulli_map_fills_memory_in_the_given_order(shape, strides_of):
    """The released ``F.dropout(ones_like(x) * 0.5, training=True)`` on a tensor of x's layout is
    the map drawn with x's memory order."""
    x = strides_of(torch.randn(shape))
    order = sorted(range(3), key=lambda d: -x.stride(d))
    torch.manual_seed(5)
    expected = F.dropout(torch.ones_like(x) * 0.5, training=True)
    torch.manual_seed(5)
    got = bernoulli_map(x, shape, order)
    assert got.is_contiguous() and got.dtype == x.dtype
    assert torch.equal(got, expected)
    assert set(got.unique().tolist()) == {0.0, 1.0}


def test_normal_noise_is_the_released_randn():
    x = torch.randn(2, 4, 8, 8, dtype=torch.bfloat16)
    torch.manual_seed(3)
    expected = torch.randn([2, 1, 8, 8]).to(torch.bfloat16)
    torch.manual_seed(3)
    assert torch.equal(normal_noise(x, (2, 1, 8, 8)), expected)


def test_draws_take_no_gradient_and_check_their_arguments():
    x = torch.randn(2, 3, requires_grad=True)
    assert not bernoulli_map(x, (2, 3)).requires_grad
    with pytest.raises(ValueError, match="order"):
        seeded_draw(x, "bernoulli_half", (2, 3), (0, 0))
    with pytest.raises(ValueError, match="kind"):
        seeded_draw(x, "uniform", (2, 3))
    with pytest.raises(TypeError, match="after"):
        seeded_draw((2, 3), "normal", (2, 3))
    assert torch.Tag.nondeterministic_seeded in torch.ops.mat_kernels.seeded_draw.default.tags
    torch.library.opcheck(torch.ops.mat_kernels.seeded_draw.default, (x.detach(), "normal", [2, 3], [1, 0],
                                                                      torch.float32),
                          test_utils=("test_schema", "test_faketensor"))


DIM, RES, WS, HEADS, STYLE = 60, 16, 8, 6, 12


class StageWithDraws(torch.nn.Module):
    """The pattern of MAT's middle: a Swin stage, the always-on map mixed into its tokens,
    a second map on the features, then two noise layers in 'random' mode."""

    def __init__(self):
        super().__init__()
        self.stage = BasicLayer(DIM, [RES, RES], depth=1, num_heads=HEADS, window_size=WS)
        self.conv0 = StyleConv(DIM, DIM, STYLE, RES)
        self.conv1 = StyleConv(DIM, DIM, STYLE, RES)
        with torch.no_grad():
            self.conv0.noise_strength.fill_(0.5)
            self.conv1.noise_strength.fill_(0.5)

    def forward(self, x, style):
        x, _, _ = self.stage(x, (RES, RES), None)
        B, L, C = x.shape
        x = x * bernoulli_map(x, (B, L, C), (0, 2, 1) if B == 1 else (0, 1, 2))
        f = token2feature(x, (RES, RES)).contiguous()
        f = f * bernoulli_map(f, f.shape)
        f = self.conv0(f, style, noise_mode="random")
        return self.conv1(f, style, noise_mode="random")


@pytest.mark.parametrize("batch", [2, pytest.param(1, marks=pytest.mark.extended)])
def test_compiled_stage_draws_the_eager_maps_and_noise(batch):
    """Same seed, same output compiled and eager, without touching inductor's settings, forward
    and backward (the partitioner must not draw again for the backward), and the global RNG is
    left at the same position."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = StageWithDraws()
    x, style = torch.randn(batch, RES * RES, DIM), torch.randn(batch, STYLE)
    compiled = torch.compile(m, fullgraph=True)
    results = []
    for fn in (m, compiled):
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(11)
        out = fn(xi, style)
        next_draw = torch.rand(4)
        out.square().sum().backward()
        results.append((out.detach(), next_draw, xi.grad))
    (ref, ref_next, ref_gx), (out, nxt, gx) = results
    assert torch.equal(nxt, ref_next)
    assert_close(out, ref, "compiled", "fwd", torch.float32, "output")
    assert_close(gx, ref_gx, "compiled", "bwd", torch.float32, "input gradient")
