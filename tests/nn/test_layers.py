"""Layers and resampling ops against independent formulations and the recorded official cases.

The resampling ops are checked in float64 against a direct (loop-over-taps) implementation
of their definition; the partial convolution against ``official_cases.pt`` (recorded from the
official Conv2dLayerPartial).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mat_kernels import reference
from mat_kernels.nn import layers as L
from mat_kernels.nn.layers import (Conv2dLayer, Conv2dLayerPartial, FullyConnectedLayer, MinibatchStdLayer,
                                   ModulatedConv2d, StyleConv, ToRGB, apply_bias_act, bias_act,
                                   normalize_2nd_moment)
from mat_kernels.nn.resample import conv2d_resample, downsample2d, setup_filter, upfirdn2d, upsample2d
from mat_kernels.testing import assert_close, assert_mask_equal
from mat_kernels.models import set_backend

F64 = torch.float64


def upfirdn2d_direct(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """upfirdn2d from its definition: zero insertion by indexing, padding/cropping on a canvas,
    the FIR as an explicit sum over taps (true convolution), then subsampling."""
    B, C, H, W = x.shape
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    xu = torch.zeros(B, C, H * upy, W * upx, dtype=x.dtype)
    xu[:, :, ::upy, ::upx] = x
    Hp, Wp = H * upy + py0 + py1, W * upx + px0 + px1
    canvas = torch.zeros(B, C, Hp, Wp, dtype=x.dtype)
    for i in range(Hp):
        for j in range(Wp):
            si, sj = i - py0, j - px0
            if 0 <= si < xu.shape[2] and 0 <= sj < xu.shape[3]:
                canvas[:, :, i, j] = xu[:, :, si, sj]
    f = (f * gain ** (f.ndim / 2)).to(x.dtype)  # float32 filter scaled in float32, as the released code does
    if f.ndim == 1:
        f = torch.outer(f, f)  # a separable filter is its outer product (gain^0.5 per axis)
    fh, fw = f.shape
    Ho, Wo = Hp - fh + 1, Wp - fw + 1
    out = torch.zeros(B, C, Ho, Wo, dtype=x.dtype)
    for a in range(fh):
        for b in range(fw):
            tap = f[a, b] if flip_filter else f[fh - 1 - a, fw - 1 - b]
            out += canvas[:, :, a:a + Ho, b:b + Wo] * tap
    return out[:, :, ::downy, ::downx]


def test_setup_filter_binomial():
    f = setup_filter([1, 3, 3, 1])
    expected = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    assert torch.equal(f, expected)
    assert setup_filter([1] * 8).shape == (8,)  # >= 8 taps: separable


@pytest.mark.parametrize("up,down,pad,flip,gain", [
    ((1, 1), (1, 1), (0, 0, 0, 0), False, 1.0),
    ((2, 2), (1, 1), (2, 1, 2, 1), False, 4.0),
    ((1, 1), (2, 2), (1, 1, 1, 1), False, 1.0),
    ((2, 1), (1, 2), (3, -1, 0, 2), True, 2.0),   # anisotropic, crop, correlation
    ((1, 1), (1, 1), (-1, 2, 1, -2), False, 1.0),
])
def test_upfirdn2d_matches_direct_definition(up, down, pad, flip, gain):
    x = torch.randn(2, 3, 7, 6, dtype=F64)
    f = torch.rand(3, 4, dtype=torch.float32)  # asymmetric, so flipping matters
    got = upfirdn2d(x, f, up=list(up), down=list(down), padding=list(pad), flip_filter=flip, gain=gain)
    want = upfirdn2d_direct(x, f, up, down, pad, flip, gain)
    assert_close(got, want, "layers", "fwd", F64, name="upfirdn2d")


def test_upfirdn2d_separable_equals_outer_product():
    x = torch.randn(1, 2, 9, 9, dtype=F64)
    taps = torch.rand(8)
    f1 = setup_filter(taps)                     # separable (8 taps)
    assert f1.ndim == 1 and setup_filter(taps, separable=False).ndim == 2
    want = upfirdn2d_direct(x, f1, up=(2, 2), pad=(3, 3, 3, 3), gain=2.0)  # outer product in float64
    assert_close(upfirdn2d(x, f1, up=2, padding=3, gain=2.0), want, "layers", "fwd", F64)


def test_up_and_downsample_keep_dc_and_sizes():
    f = setup_filter([1, 3, 3, 1])
    x = torch.full((1, 1, 8, 8), 0.75, dtype=F64)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    assert up.shape == (1, 1, 16, 16) and down.shape == (1, 1, 4, 4)
    # Away from the zero padding a constant stays constant (unit DC gain).
    assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 0.75), "layers", "fwd", F64)
    assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 0.75), "layers", "fwd", F64)


def test_conv2d_resample_against_unfused_forms():
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    w = torch.randn(5, 3, 3, 3, dtype=F64)
    w1 = torch.randn(5, 3, 1, 1, dtype=F64)
    f = setup_filter([1, 3, 3, 1])
    fd = f.double()
    # No resampling: a plain convolution.
    assert_close(conv2d_resample(x, w, f, padding=1), F.conv2d(x, w, padding=1), "layers", "fwd", F64)
    # Down: (blur + strided conv) equals (conv + FIR downsample) wherever no zero padding enters.
    got = conv2d_resample(x, w, f, down=2, padding=1)
    want = downsample2d(F.conv2d(x, w, padding=1), fd)
    assert got.shape == (2, 5, 4, 4)
    assert_close(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], "layers", "fwd", F64)
    # Up: (transposed conv + blur) equals (FIR upsample + conv) in the interior.
    got = conv2d_resample(x, w, f, up=2, padding=1)
    want = F.conv2d(upsample2d(x, fd), w, padding=1)
    assert got.shape == (2, 5, 16, 16)
    assert_close(got[..., 3:-3, 3:-3], want[..., 3:-3, 3:-3], "layers", "fwd", F64)
    # 1x1 with down: FIR downsample then the 1x1 conv.
    assert_close(conv2d_resample(x, w1, f, down=2), F.conv2d(downsample2d(x, fd), w1), "layers", "fwd", F64)
    # Grouped transposed path (as ModulatedConv2d uses it): groups = separate convolutions.
    wg = torch.randn(4, 3, 3, 3, dtype=F64)
    xg = torch.randn(1, 6, 5, 5, dtype=F64)
    got = conv2d_resample(xg, wg, f, up=2, padding=1, groups=2)
    want = torch.cat([conv2d_resample(xg[:, 3 * g:3 * g + 3], wg[2 * g:2 * g + 2], f, up=2, padding=1)
                      for g in range(2)], dim=1)
    assert_close(got, want, "layers", "fwd", F64)


def test_resample_argument_errors():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(x, None, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="up"):
        upfirdn2d(x, None, up=0)
    with pytest.raises(ValueError, match="x must be"):
        upfirdn2d(x[0], None)
    with pytest.raises(ValueError, match="w must be"):
        conv2d_resample(x, torch.randn(1, 1, 3, 3, dtype=F64))


def test_bias_act_values_and_backend_hook():
    x = torch.tensor([[-1.0, 2.0], [0.5, -3.0]])
    b = torch.tensor([0.5, -1.0])
    y = bias_act(x, b, dim=1, act="lrelu")
    expected = torch.tensor([[-0.5 * 0.2, 1.0], [1.0, -4.0 * 0.2]]) * math.sqrt(2)
    assert_close(y, expected, "layers", "fwd", torch.float32)
    assert torch.equal(bias_act(x, b, act="linear", gain=2, clamp=1.5), ((x + b) * 2).clamp(-1.5, 1.5))
    # On CPU tensors every backend name uses the reference.
    for backend in ("auto", "reference", "triton", "cuda"):
        assert torch.equal(apply_bias_act(x, b, act="lrelu", backend=backend), y)
    with pytest.raises(ValueError, match="backend"):
        apply_bias_act(x, b, backend="fast")
    with pytest.raises(ValueError, match="act"):
        bias_act(x, b, act="gelu")


@pytest.mark.gpu
def test_bias_act_fused_on_cuda_matches_reference():
    x = torch.randn(2, 64, 16, 16, device="cuda")
    b = torch.randn(64, device="cuda")
    for act in ("linear", "lrelu"):
        assert_close(apply_bias_act(x, b, act=act, gain=0.7, backend="auto"), bias_act(x, b, act=act, gain=0.7),
                     "layers", "fwd", torch.float32)


def test_normalize_2nd_moment():
    z = torch.randn(3, 16, dtype=F64) * 5
    y = normalize_2nd_moment(z)
    assert_close(y, z / torch.sqrt(z.square().mean(dim=1, keepdim=True) + 1e-8), "layers", "fwd", F64)
    assert_close(y.square().mean(dim=1), torch.ones(3, dtype=F64), "layers", "fwd", torch.float32)


def test_conv2d_layer_is_scaled_conv_plus_bias_act():
    layer = Conv2dLayer(4, 6, 3, activation="lrelu").double()
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 4, 8, 8, dtype=F64)
    w = layer.weight / math.sqrt(4 * 9)
    expected = F.leaky_relu(F.conv2d(x, w, layer.bias, padding=1), 0.2) * math.sqrt(2) * 0.5
    assert_close(layer(x, gain=0.5), expected, "layers", "fwd", F64)
    assert set(dict(layer.named_buffers())) == {"resample_filter"}


def test_partial_conv_border_rescale_with_all_ones_mask():
    """Counts include the zero padding: corner x2.25, edge x1.5, interior x1 even for a full mask."""
    layer = Conv2dLayerPartial(3, 5, 3, activation="lrelu")
    x = torch.randn(2, 3, 6, 7)
    y, new_mask = layer(x, torch.ones(2, 1, 6, 7))
    base = layer.conv(x)
    ratio = torch.ones(6, 7)
    ratio[0, :] = ratio[-1, :] = ratio[:, 0] = ratio[:, -1] = 1.5
    ratio[0, 0] = ratio[0, -1] = ratio[-1, 0] = ratio[-1, -1] = 2.25
    assert torch.equal(new_mask, torch.ones(2, 1, 6, 7))
    assert_close(y, base * ratio, "partial_conv", "fwd", torch.float32)
    assert torch.equal(y[..., 2:-2, 2:-2], base[..., 2:-2, 2:-2])  # 9 / (9 + 1e-8) rounds to 1 in fp32


def test_partial_conv_holes_and_no_mask():
    layer = Conv2dLayerPartial(2, 3, 3, activation="lrelu", down=2)
    x = torch.randn(1, 2, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 0, 0] = 1  # one valid pixel: only the outputs whose 3x3 window sees it survive
    y, new_mask = layer(x, mask)
    assert y.shape == (1, 3, 4, 4)
    expected_mask = torch.zeros(1, 1, 4, 4)
    expected_mask[..., 0, 0] = 1
    assert_mask_equal(new_mask, expected_mask)
    assert torch.all(y[..., new_mask[0, 0] == 0] == 0)
    assert_close(y[..., 0, 0], layer.conv(x)[..., 0, 0] * 9, "partial_conv", "fwd", torch.float32)
    y2, m2 = layer(x)
    assert m2 is None and torch.equal(y2, layer.conv(x))
    with pytest.raises(ValueError, match="mask"):
        layer(x, torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="mask must be None"):
        Conv2dLayerPartial(2, 3, 3, up=2)(x, torch.ones(1, 1, 8, 8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("down", [1, 2])
def test_partial_conv_half_precision_layer_is_finite(dtype, down):
    """A .half()/.bfloat16() layer with a mask of that dtype: the mask rule is computed in float32
    (in fp16 1e-8 underflows and the official op order gives NaN at every hole), so the output is
    finite, exactly 0 at the new holes, and conv(x) times the float32 ratio rounded to the dtype."""
    torch.manual_seed(3)
    layer = Conv2dLayerPartial(3, 4, 3, activation="lrelu", down=down).to(dtype)
    x = torch.randn(2, 3, 12, 10).to(dtype)
    mask32 = (torch.rand(2, 1, 12, 10) > 0.8).float()
    mask32[1] = 0  # all hole
    mask32[0, :, :6] = 0  # a hole larger than the kernel
    with torch.no_grad():
        y, new_mask = layer(x, mask32.to(dtype))
        base = layer.conv(x)
    new32, ratio32 = reference.partial_conv_mask_update(mask32, kernel_size=3, stride=down)
    assert y.dtype == dtype and new_mask.dtype == dtype
    assert torch.isfinite(y).all()
    assert (new32 == 0).any() and torch.all(y[(new32 == 0).expand_as(y)] == 0)
    assert_mask_equal(new_mask, new32.to(dtype))
    assert torch.equal(y, base * ratio32.to(dtype))


def test_partial_conv_uses_the_ops_entry_point(monkeypatch):
    """The mask rule is mat_kernels.ops.partial_conv_mask_update with the layer's backend."""
    seen = []
    real = L.ops.partial_conv_mask_update

    def spy(mask, **kw):
        seen.append(kw)
        return real(mask, **kw)

    monkeypatch.setattr(L.ops, "partial_conv_mask_update", spy)
    layer = Conv2dLayerPartial(2, 2, 3, down=2)
    layer.backend = "reference"
    layer(torch.randn(1, 2, 8, 8), torch.ones(1, 1, 8, 8))
    assert seen == [dict(kernel_size=3, stride=2, backend="reference")]


def test_partial_conv_matches_official_cases(official_cases):
    cases = [c for c in official_cases["cases"] if c["kind"] == "conv2d_layer_partial"]
    assert len(cases) == 2 and {c["down"] for c in cases} == {1, 2}
    for case in cases:
        layer = Conv2dLayerPartial(case["in_channels"], case["out_channels"], case["kernel_size"],
                                   activation=case["activation"], down=case["down"])
        layer.load_state_dict(case["state_dict"], strict=True)
        with torch.no_grad():
            y, new_mask = layer(case["x"], case["mask"])
        assert_close(y, case["out"], "partial_conv", "fwd", torch.float32, name=f"partial conv down={case['down']}")
        assert_mask_equal(new_mask, case["new_mask"])


def test_modulated_conv_equals_per_sample_conv():
    mod = ModulatedConv2d(4, 6, 3, style_dim=5, demodulate=True).double()
    x = torch.randn(3, 4, 7, 7, dtype=F64)
    style = torch.randn(3, 5, dtype=F64)
    y = mod(x, style)
    s = mod.affine(style)
    for i in range(3):
        w = mod.weight[0] / math.sqrt(4 * 9) * s[i].view(1, 4, 1, 1)
        w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        assert_close(y[i:i + 1], F.conv2d(x[i:i + 1], w, padding=1), "layers", "fwd", F64)
    assert mod.affine.bias.detach().eq(1).all()  # bias_init = 1


def test_style_conv_noise_modes():
    torch.manual_seed(3)
    sc = StyleConv(4, 4, style_dim=6, resolution=8)
    with torch.no_grad():
        sc.noise_strength.fill_(0.5)
        sc.bias.normal_()
    x, style = torch.randn(2, 4, 8, 8), torch.randn(2, 6)

    def run(backend):
        set_backend(sc, backend)
        with torch.no_grad():
            torch.manual_seed(11)
            return (sc(x, style, noise_mode="none"), sc(x, style, noise_mode="const"),
                    sc(x, style, noise_mode="random"))

    none, const, rnd = run("reference")  # the official op sequence, bit for bit
    with torch.no_grad():
        torch.manual_seed(11)
        noise = torch.randn(2, 1, 8, 8) * 0.5
        conv = sc.conv(x, style)
    assert torch.equal(none, bias_act(conv, sc.bias, act="lrelu"))
    assert torch.equal(const, bias_act(conv + sc.noise_const * 0.5, sc.bias, act="lrelu"))
    assert torch.equal(rnd, bias_act(conv + noise, sc.bias, act="lrelu"))
    # The CPU fast path of "auto" (mat_kernels/nn/fast_conv.py): the same, to fp32 rounding,
    # with the same noise draws.
    for got, exp in zip(run("auto"), (none, const, rnd)):
        assert_close(got, exp, "layers", "fwd", torch.float32)
    with pytest.raises(ValueError, match="noise_mode"):
        sc(x, style, noise_mode="fixed")
    with pytest.raises(ValueError, match="const"):
        sc(torch.randn(1, 4, 6, 6), style[:1], noise_mode="const")
    # Without noise there are no noise entries in the state dict.
    assert "noise_const" not in StyleConv(4, 4, 6, 8, use_noise=False).state_dict()


def test_to_rgb_upsamples_the_skip():
    rgb = ToRGB(8, 3, style_dim=4)
    x, style, skip = torch.randn(1, 8, 8, 8), torch.randn(1, 4), torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        out = rgb(x, style, skip)
        base = rgb(x, style)
    assert torch.equal(out, base + upsample2d(skip, rgb.resample_filter))
    assert [k for k in rgb.state_dict()] == ["bias", "resample_filter", "conv.weight", "conv.resample_filter",
                                             "conv.affine.weight", "conv.affine.bias"]


def test_minibatch_std_layer():
    x = torch.randn(4, 6, 3, 3, dtype=F64)
    y = MinibatchStdLayer(group_size=2, num_channels=1)(x)
    assert y.shape == (4, 7, 3, 3) and torch.equal(y[:, :6], x)
    for n in range(4):  # sample n is grouped with n +- 2 (column n mod 2)
        grp = x[[n % 2, n % 2 + 2]]
        std = torch.sqrt(grp.var(dim=0, unbiased=False) + 1e-8).mean()
        assert_close(y[n, 6], torch.full((3, 3), std.item(), dtype=F64), "layers", "fwd", F64)
    with pytest.raises(ValueError, match="divisible"):
        MinibatchStdLayer(group_size=4)(torch.randn(6, 2, 2, 2))


def test_fully_connected_backend_attribute_defaults_to_auto():
    fc = FullyConnectedLayer(3, 4, activation="lrelu")
    assert fc.backend == "auto"
    x = torch.randn(2, 3)
    w, b = fc.effective_weight_bias()
    assert torch.equal(fc(x), bias_act(x.matmul(w.t()), b, dim=1, act="lrelu"))
    tokens = torch.randn(2, 5, 3)  # token maps take the CPU fast path (fast_conv.py) under "auto"
    expected = bias_act(tokens.matmul(w.t()), b, dim=2, act="lrelu")
    with torch.no_grad():
        assert_close(fc(tokens), expected, "layers", "fwd", torch.float32)
        fc.backend = "reference"
        assert torch.equal(fc(tokens), expected)
