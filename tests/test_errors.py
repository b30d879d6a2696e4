"""Every bad input to the public ops gets its own clear error naming the argument."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mat_kernels
from mat_kernels import reference

ATTENTION_FNS = {"reference": reference.window_attention, "ops": mat_kernels.window_attention}


def _good(**over):
    kw = dict(q=torch.randn(1, 16, 16, 12), k=torch.randn(1, 16, 16, 12), v=torch.randn(1, 16, 16, 12),
              mask=torch.ones(1, 16, 16, 1), window_size=8, shift_size=4, num_heads=2)
    kw.update(over)
    return kw


def _call(fn, kw):
    kw = dict(kw)
    q, k, v, mask = kw.pop("q"), kw.pop("k"), kw.pop("v"), kw.pop("mask")
    return fn(q, k, v, mask, **kw)


BAD_ATTENTION = {
    "q_not_tensor": (dict(q=[1.0]), TypeError, "q"),
    "q_3d": (dict(q=torch.randn(1, 256, 12)), ValueError, "q must have 4 dims"),
    "q_int": (dict(q=torch.ones(1, 16, 16, 12, dtype=torch.int32)), TypeError, "q must be a floating"),
    "k_shape": (dict(k=torch.randn(1, 16, 16, 6)), ValueError, "k must have the same shape"),
    "v_shape": (dict(v=torch.randn(2, 16, 16, 12)), ValueError, "v must have the same shape"),
    "v_dtype": (dict(v=torch.randn(1, 16, 16, 12, dtype=torch.float64)), TypeError, "v must have the same dtype"),
    "heads_divide": (dict(num_heads=5), ValueError, "num_heads=5 must divide the channel count C=12"),
    "heads_zero": (dict(num_heads=0), ValueError, "num_heads must be a positive int"),
    "window_zero": (dict(window_size=0), ValueError, "window_size must be a positive int"),
    "window_H": (dict(q=torch.randn(1, 12, 16, 12), k=torch.randn(1, 12, 16, 12), v=torch.randn(1, 12, 16, 12),
                      mask=None, shift_size=0), ValueError, "must divide the grid height H=12"),
    "window_W": (dict(q=torch.randn(1, 16, 12, 12), k=torch.randn(1, 16, 12, 12), v=torch.randn(1, 16, 12, 12),
                      mask=None, shift_size=0), ValueError, "must divide the grid width W=12"),
    "shift_too_big": (dict(shift_size=8), ValueError, "shift_size must satisfy 0 <= shift_size < window_size=8"),
    "shift_negative": (dict(shift_size=-1), ValueError, "shift_size must satisfy"),
    "mask_shape": (dict(mask=torch.ones(1, 16, 16, 2)), ValueError, "mask must have shape (B, H, W, 1)"),
    "mask_tokens": (dict(mask=torch.ones(1, 256, 1)), ValueError, "mask must have shape"),
    "mask_batch": (dict(mask=torch.ones(2, 16, 16, 1)), ValueError, "mask must have shape"),
    "mask_dtype": (dict(mask=torch.ones(1, 16, 16, 1, dtype=torch.int64)), TypeError, "mask must be bool or floating"),
    "mask_device": (dict(mask=torch.ones(1, 16, 16, 1, device="meta")), ValueError, "mask must be on the same device"),
    "k_device": (dict(k=torch.randn(1, 16, 16, 12, device="meta")), ValueError, "k must be on the same device"),
    "scale_type": (dict(scale="x"), TypeError, "scale must be a float"),
    # issue #16: zero-size grids and channels are refused by name (a zero batch is allowed)
    "q_zero_H": (dict(q=torch.randn(1, 0, 16, 12), k=torch.randn(1, 0, 16, 12), v=torch.randn(1, 0, 16, 12),
                      mask=None), ValueError, "q must have non-zero H, W and C"),
    "q_zero_W": (dict(q=torch.randn(1, 16, 0, 12), k=torch.randn(1, 16, 0, 12), v=torch.randn(1, 16, 0, 12),
                      mask=None), ValueError, "q must have non-zero H, W and C"),
    "q_zero_C": (dict(q=torch.randn(1, 16, 16, 0), k=torch.randn(1, 16, 16, 0), v=torch.randn(1, 16, 16, 0)),
                 ValueError, "q must have non-zero H, W and C"),
    # int-like numbers are accepted (tests/test_ops_semantics.py), bools and floats are not
    "window_bool": (dict(window_size=True), ValueError, "window_size must be an int, got True"),
    "window_float": (dict(window_size=8.0), ValueError, "window_size must be an int, got 8.0"),
    "heads_np_bool": (dict(num_heads=np.True_), ValueError, "num_heads must be an int"),
    "shift_bool_tensor": (dict(shift_size=torch.tensor(False)), ValueError, "shift_size must be an int"),
    "scale_bool": (dict(scale=True), TypeError, "scale must be a float or None, got True"),
    "scale_vector": (dict(scale=torch.ones(2)), TypeError, "scale must be a float"),
}


@pytest.mark.parametrize("entry", ATTENTION_FNS)
@pytest.mark.parametrize("case", BAD_ATTENTION)
def test_window_attention_bad_input(entry, case):
    over, exc, msg = BAD_ATTENTION[case]
    with pytest.raises(exc, match=_escape(msg)):
        _call(ATTENTION_FNS[entry], _good(**over))


@pytest.mark.parametrize("fn", [reference.window_mask_update, mat_kernels.window_mask_update])
def test_window_mask_update_bad_input(fn):
    with pytest.raises(ValueError, match="mask must be a"):
        fn(torch.ones(16, 16), window_size=8)
    with pytest.raises(ValueError, match="must divide the grid height H=12"):
        fn(torch.ones(1, 12, 16, 1), window_size=8)
    with pytest.raises(ValueError, match="shift_size must satisfy"):
        fn(torch.ones(1, 16, 16, 1), window_size=8, shift_size=9)
    with pytest.raises(TypeError, match="mask must be bool or floating"):
        fn(torch.ones(1, 16, 16, 1, dtype=torch.int32), window_size=8)


@pytest.mark.parametrize("fn", [reference.partial_conv_mask_update, mat_kernels.partial_conv_mask_update])
def test_partial_conv_mask_update_bad_input(fn):
    with pytest.raises(ValueError, match=_escape("mask must have shape (B, 1, H, W)")):
        fn(torch.ones(1, 2, 8, 8), kernel_size=3)
    with pytest.raises(ValueError, match="kernel_size must be"):
        fn(torch.ones(1, 1, 8, 8), kernel_size=0)
    with pytest.raises(ValueError, match="stride must be a positive int"):
        fn(torch.ones(1, 1, 8, 8), kernel_size=3, stride=0)
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        fn(None, kernel_size=3)


@pytest.mark.parametrize("fn", [reference.window_mask_update, mat_kernels.window_mask_update])
def test_window_mask_update_zero_size_and_bool_args(fn):
    with pytest.raises(ValueError, match="mask must have non-zero H and W"):
        fn(torch.ones(1, 0, 16, 1), window_size=8)
    with pytest.raises(ValueError, match="mask must have non-zero H and W"):
        fn(torch.ones(1, 16, 0), window_size=8)
    with pytest.raises(ValueError, match="window_size must be an int"):
        fn(torch.ones(1, 16, 16, 1), window_size=np.float64(8))
    with pytest.raises(ValueError, match="shift_size must be an int"):
        fn(torch.ones(1, 16, 16, 1), window_size=8, shift_size=False)


@pytest.mark.parametrize("fn", [reference.partial_conv_mask_update, mat_kernels.partial_conv_mask_update])
def test_partial_conv_zero_size_and_bool_args(fn):
    with pytest.raises(ValueError, match="mask must have non-zero H and W"):
        fn(torch.ones(1, 1, 0, 8), kernel_size=3)
    with pytest.raises(ValueError, match="mask must have non-zero H and W"):
        fn(torch.ones(2, 1, 8, 0), kernel_size=3)
    with pytest.raises(ValueError, match="kernel_size must be an int"):
        fn(torch.ones(1, 1, 8, 8), kernel_size=True)
    with pytest.raises(ValueError, match="stride must be an int"):
        fn(torch.ones(1, 1, 8, 8), kernel_size=3, stride=2.0)


@pytest.mark.parametrize("fn", [reference.bias_act, mat_kernels.bias_act])
def test_bias_act_bool_and_non_number_args(fn):
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="dim must be an int"):
        fn(x, None, True)
    for name in ("alpha", "gain", "clamp"):
        with pytest.raises(TypeError, match=f"{name} must be a float or None"):
            fn(x, None, 1, "lrelu", **{name: True})
        with pytest.raises(TypeError, match=f"{name} must be a float or None"):
            fn(x, None, 1, "lrelu", **{name: "1"})


@pytest.mark.parametrize("fn", [reference.partial_conv_mask_update, mat_kernels.partial_conv_mask_update])
def test_partial_conv_rejects_even_kernel(fn):
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        fn(torch.ones(1, 1, 8, 8), kernel_size=4)


def _escape(s):
    import re
    return re.escape(s)
