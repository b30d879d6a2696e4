"""The mask-update rules of the reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mat_kernels import reference

from mat_kernels.testing import MASK_PATTERNS, make_mask


@pytest.mark.parametrize("pattern", [p for p in MASK_PATTERNS if p != "none"])
@pytest.mark.parametrize("window,shift", [(8, 0), (8, 4), (16, 8), (8, 3)])
def test_window_mask_update_matches_attention_rule(pattern, window, shift):
    mask = make_mask(pattern, 2, 32, 16, window, dtype=torch.float32)
    q = k = v = torch.randn(2, 32, 16, 4)
    _, via_attn = reference.window_attention(q, k, v, mask, window_size=window, shift_size=shift, num_heads=1)
    alone = reference.window_mask_update(mask, window_size=window, shift_size=shift)
    assert torch.equal(alone, via_attn)
    # Windows are all-or-nothing in the rolled frame.
    rolled = torch.roll(alone, (-shift, -shift), (1, 2))
    w = reference.window_partition(rolled, window).flatten(1)
    assert ((w == w[:, :1]).all(dim=1)).all()


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_conv_mask_update_all_ones_border_ratio(stride):
    mask = torch.ones(1, 1, 8, 8)
    new, ratio = reference.partial_conv_mask_update(mask, kernel_size=3, stride=stride)
    assert torch.equal(new, torch.ones_like(new))
    if stride == 1:
        assert ratio[0, 0, 0, 0].item() == 2.25 and ratio[0, 0, 0, 3].item() == 1.5
        assert ratio[0, 0, 3, 3].item() == 1.0
    else:
        assert ratio.shape == (1, 1, 4, 4)
        assert ratio[0, 0, 0, 0].item() == 2.25 and ratio[0, 0, 2, 2].item() == 1.0


def test_partial_conv_mask_update_counts():
    mask = (torch.rand(2, 1, 10, 10) > 0.7).float()
    new, ratio = reference.partial_conv_mask_update(mask, kernel_size=3, stride=1)
    count = F.conv2d(mask, torch.ones(1, 1, 3, 3), padding=1)
    assert torch.equal(new, (count > 0).float())
    torch.testing.assert_close(ratio, torch.where(count > 0, 9 / (count + 1e-8), torch.zeros_like(count)))
    new_b, ratio_b = reference.partial_conv_mask_update(mask.bool(), kernel_size=3, stride=1)
    assert torch.equal(new_b, new) and torch.equal(ratio_b, ratio)


def test_partial_conv_matches_official_cases(official_cases):
    for case in official_cases["cases"]:
        if case["kind"] != "conv2d_layer_partial":
            continue
        new, _ = reference.partial_conv_mask_update(case["mask"], kernel_size=case["kernel_size"],
                                                    stride=case["down"])
        assert torch.equal(new, case["new_mask"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (5, 1), (7, 2)])
def test_partial_conv_mask_update_half_precision_is_fp32_rounded(dtype, k, stride):
    """fp16/bf16 masks are counted in float32 and rounded once: no NaN at holes (the official op
    order in float16 gives NaN there, 1e-8 underflowing to 0) and exactly the float32 result
    rounded to the dtype. Binary and 1/256-step fractional masks are exact in both dtypes."""
    g = torch.Generator().manual_seed(5)
    binary = (torch.rand(3, 1, 13, 10, generator=g) > 0.6).float()
    binary[1] = 0  # all hole
    frac = torch.randint(0, 256, (1, 1, 13, 10), generator=g).float() / 256
    frac = frac * (torch.rand(1, 1, 13, 10, generator=g) < 0.1)
    mask32 = torch.cat([binary, frac])
    mask = mask32.to(dtype)
    assert torch.equal(mask.float(), mask32)
    new, ratio = reference.partial_conv_mask_update(mask, kernel_size=k, stride=stride)
    new32, ratio32 = reference.partial_conv_mask_update(mask32, kernel_size=k, stride=stride)
    assert new.dtype == dtype and ratio.dtype == dtype
    assert torch.isfinite(ratio).all() and torch.isfinite(new).all()
    assert (ratio[new32 == 0] == 0).all() and (ratio32 == 0).any()
    assert torch.equal(new, new32.to(dtype)) and torch.equal(ratio, ratio32.to(dtype))


def test_partial_conv_mask_update_float16_official_op_order_would_be_nan():
    """Why the rule above exists: the unchanged op sequence in float16 is NaN at every hole."""
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.float16)
    mask[0, 0, 0, 0] = 1
    count = F.conv2d(mask.float(), torch.ones(1, 1, 3, 3), padding=1).half()
    naive = 9 / (count + 1e-8) * torch.clamp(count, 0, 1)
    assert naive.isnan().any()
    _, ratio = reference.partial_conv_mask_update(mask, kernel_size=3)
    assert torch.isfinite(ratio).all()


def test_partial_conv_mask_update_ignores_autocast():
    """Under autocast the conv would run in bfloat16/float16 again; the rule keeps float32."""
    g = torch.Generator().manual_seed(6)
    mask = (torch.rand(2, 1, 9, 12, generator=g) > 0.5).float()
    for m in (mask, mask.bfloat16()):
        want = reference.partial_conv_mask_update(m, kernel_size=3, stride=2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = reference.partial_conv_mask_update(m, kernel_size=3, stride=2)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and torch.equal(a, b)
