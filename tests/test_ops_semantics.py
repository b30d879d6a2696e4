"""One semantics for every backend: the mask rule on the mask's own values, NaN propagation, empty
batches, no mask gradient and numpy scalars. Every test runs each backend (on CPU: Triton in the
interpreter under TRITON_INTERPRET=1 and the CUDA kernels built as host C++,
tests/backends/running.py; on a GPU the real kernels)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mat_kernels import backends, ops, reference
from mat_kernels.reference import from_windows
from mat_kernels.testing import assert_close, assert_mask_equal, check_window_attention
from tests.backends.running import DEVICE, use_backend



@pytest.fixture(scope="module", params=tuple(backends.BACKENDS))
def backend(request):
    with use_backend(request.param, request):
        yield request.param

pytestmark = pytest.mark.filterwarnings("ignore::mat_kernels.cuda.UnverifiedBackendWarning")

# Small geometry: 8x8 grid, window 4, shift 2 (4 shifted windows of 16 tokens), 2 heads of 8.
B, H, W, WS, SHIFT, HEADS, HEAD_DIM = 1, 8, 8, 4, 2, 2, 8


def _require(backend: str, op: str, **facts) -> None:
    facts.setdefault("device", DEVICE)
    why = backends.not_supported_reasons(backend, op, facts)
    if why:
        pytest.skip(f"{backend} cannot run {op} here: {'; '.join(why)}")


def _require_attention(backend, dtype=torch.float32, mask_dtype=torch.float32):
    _require(backend, "window_attention", dtype=dtype, head_dim=HEAD_DIM, window_size=WS, mask_dtype=mask_dtype)


def fractional_mask(value: float, dtype: torch.dtype) -> torch.Tensor:
    """(1, 8, 8, 1) mask built window by window in the shifted frame, so that every new-mask value
    is exact whatever order a backend sums in: window 0 holds ``value`` on 14 keys and two ones
    (new mask 1), window 1 one ``value`` among holes (new mask clamp(value, 0, 1)), window 2 only
    holes, window 3 only ones."""
    N = WS * WS
    mw = torch.zeros(4, N, 1, dtype=torch.float64)
    mw[0] = value
    mw[0, :2] = 1
    mw[1, 5] = value
    mw[3] = 1
    return from_windows(mw, WS, SHIFT, H, W).to(dtype)


# (q dtype, mask dtype, value): values that rounding to q's dtype (or to float32) would move onto
# the rule's 0 or 1: 1e-8 and -1e-9 are 0 in float16, 0.9999 is 1 in float16 and bfloat16, 1.001
# is 1 in bfloat16, 1e-50 is 0 in float32; 0.1 in a float64 mask is not a float32 number
# (finding 2: the new mask).
RULE_CASES = [
    (torch.float16, torch.float32, 1e-8),
    (torch.float16, torch.float32, 0.9999),
    (torch.float16, torch.float32, 1.0001),
    (torch.bfloat16, torch.float32, 0.9999),
    (torch.float16, torch.float32, -1e-9),
    (torch.bfloat16, torch.float32, 1.001),
    (torch.float32, torch.float64, 1e-50),
    (torch.float32, torch.float64, 0.1),
]


@pytest.mark.parametrize("dtype,mask_dtype,value", RULE_CASES, ids=[f"{str(a)[6:]}-{str(b)[6:]}-{v:g}"
                                                                   for a, b, v in RULE_CASES])
def test_mask_rule_uses_the_masks_own_values(backend, dtype, mask_dtype, value):
    """The rule 0 -> -100, 1 -> 0, else the value itself compares the mask as given, never rounded
    to q's dtype, in the output, the gradients and the new mask. The expected values come from the
    reference run in float32/float64 on the same (exactly upcast) q, k, v: there no rounding of
    the mask can happen, so a backend that rounds differs by far more than the tolerance."""
    _require_attention(backend, dtype, mask_dtype)
    mask = fractional_mask(value, mask_dtype)
    _, new_mask, _ = check_window_attention(backend, B, H, W, HEADS, HEAD_DIM, WS, SHIFT, mask, dtype=dtype,
                                            device=DEVICE)
    assert new_mask.dtype == mask_dtype


def test_fractional_mask_changes_the_output():
    """The cases above can fail: rounding the mask to q's dtype first gives a different output."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, W, HEADS * HEAD_DIM, generator=g, dtype=torch.float64) for _ in range(3))
    kw = dict(window_size=WS, shift_size=SHIFT, num_heads=HEADS)
    for dtype, mask_dtype, value in RULE_CASES[:-1]:
        mask = fractional_mask(value, mask_dtype)
        exact, _ = reference.window_attention(q, k, v, mask, **kw)
        rounded, _ = reference.window_attention(q, k, v, mask.to(dtype).double(), **kw)
        assert (exact - rounded).abs().max() > 0.1, (dtype, mask_dtype, value)


def _nan_mask(dtype=torch.float32):
    m = (torch.rand(2, H, W, 1, generator=torch.Generator().manual_seed(3)) > 0.3).to(dtype)
    m[1, 7, 0] = float("nan")  # rolled position (5, 6): shifted window 3 of image 1
    return m


def _windows_holding(mask_nan: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 1) bool: tokens whose shifted window holds a NaN of the mask."""
    return reference.window_mask_update(mask_nan.isnan(), window_size=WS, shift_size=SHIFT)


def test_nan_in_the_mask_propagates_to_its_window(backend):
    """A NaN mask value is a NaN key bias: as in the official op sequence, every query of that
    window gets a NaN output row (all heads) and the window's new mask is NaN; other windows are
    untouched (equal to the run with the NaN replaced by 1 there)."""
    _require_attention(backend)
    mask = _nan_mask()
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, H, W, HEADS * HEAD_DIM, generator=g).to(DEVICE) for _ in range(3))
    out, new_mask = ops.window_attention(q, k, v, mask.to(DEVICE), window_size=WS, shift_size=SHIFT,
                                         num_heads=HEADS, backend=backend)
    hit = _windows_holding(mask)
    assert hit.sum() == WS * WS  # one window
    out, new_mask = out.cpu(), new_mask.cpu()
    assert out.isnan().all(-1, keepdim=True).eq(hit).all() and not out[~hit.expand_as(out)].isnan().any()
    assert torch.equal(new_mask.isnan(), hit)
    clean = mask.nan_to_num(1.0)
    ref, ref_mask = reference.window_attention(q.cpu().double(), k.cpu().double(), v.cpu().double(), clean,
                                               window_size=WS, shift_size=SHIFT, num_heads=HEADS)
    keep = ~hit.expand_as(out)
    assert_close(out[keep], ref[keep], "window_attention", "fwd", name="out outside the NaN window")
    assert torch.equal(new_mask[~hit], ref_mask[~hit])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_nan_propagates_in_the_mask_rules(backend, dtype):
    mask = _nan_mask(dtype)
    _require(backend, "window_mask_update", dtype=dtype, window_size=WS)
    got = ops.window_mask_update(mask.to(DEVICE), window_size=WS, shift_size=SHIFT, backend=backend)
    assert torch.equal(got.cpu().isnan(), _windows_holding(mask))
    assert_mask_equal(got, reference.window_mask_update(mask, window_size=WS, shift_size=SHIFT))

    img = mask.permute(0, 3, 1, 2).contiguous()
    _require(backend, "partial_conv_mask_update", dtype=dtype, kernel_size=3, stride=1)
    new, ratio = ops.partial_conv_mask_update(img.to(DEVICE), kernel_size=3, stride=1, backend=backend)
    exp_new, exp_ratio = reference.partial_conv_mask_update(img, kernel_size=3, stride=1)
    touched = torch.zeros_like(img, dtype=torch.bool)
    touched[1, 0, 6:8, 0:2] = True  # the 3x3 boxes around (7, 0) inside the 8x8 image
    for name, got, exp in (("new_mask", new, exp_new), ("ratio", ratio, exp_ratio)):
        assert torch.equal(got.cpu().isnan(), touched), name
        assert_mask_equal(got, exp, name=name)


@pytest.mark.parametrize("mask_kind", [None, "4d", "3d-bool"])
def test_empty_batch_attention(backend, mask_kind):
    """B = 0 gives empty results of the right shapes and dtypes, forward and backward."""
    _require_attention(backend, mask_dtype=None if mask_kind is None else torch.float32)
    q, k, v = (torch.randn(0, H, W, HEADS * HEAD_DIM, device=DEVICE, requires_grad=True) for _ in range(3))
    mask = {None: None, "4d": torch.ones(0, H, W, 1, device=DEVICE),
            "3d-bool": torch.ones(0, H, W, dtype=torch.bool, device=DEVICE)}[mask_kind]
    out, new_mask = ops.window_attention(q, k, v, mask, window_size=WS, shift_size=SHIFT, num_heads=HEADS,
                                         backend=backend)
    assert out.shape == q.shape and out.dtype == q.dtype
    if mask is None:
        assert new_mask is None
    else:
        assert new_mask.shape == mask.shape and new_mask.dtype == mask.dtype
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(g_.shape == q.shape and g_.dtype == q.dtype for g_ in grads)


def test_empty_batch_mask_rules(backend):
    for dtype in (torch.float32, torch.bool):
        mask = torch.ones(0, H, W, 1, dtype=dtype, device=DEVICE)
        _require(backend, "window_mask_update", dtype=dtype, window_size=WS)
        new = ops.window_mask_update(mask, window_size=WS, shift_size=SHIFT, backend=backend)
        assert new.shape == mask.shape and new.dtype == dtype
        _require(backend, "partial_conv_mask_update", dtype=dtype, kernel_size=3, stride=2)
        new, ratio = ops.partial_conv_mask_update(mask.view(0, 1, H, W), kernel_size=3, stride=2, backend=backend)
        out_dtype = torch.float32 if dtype == torch.bool else dtype
        assert new.shape == ratio.shape == (0, 1, 4, 4) and new.dtype == ratio.dtype == out_dtype


def test_mask_gets_no_gradient(backend):
    """Fractional mask values enter the scores, yet the mask is not differentiated in any backend."""
    _require_attention(backend)
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(B, H, W, HEADS * HEAD_DIM, generator=g).to(DEVICE).requires_grad_() for _ in range(3))
    mask = fractional_mask(0.5, torch.float32).to(DEVICE).requires_grad_()
    out, new_mask = ops.window_attention(q, k, v, mask, window_size=WS, shift_size=SHIFT, num_heads=HEADS,
                                         backend=backend)
    assert not new_mask.requires_grad
    out.sum().backward()
    assert mask.grad is None
    assert all(t.grad is not None for t in (q, k, v))


def test_numpy_scalars_are_accepted(backend):
    """numpy integers (and 0-d integer tensors) where ints are expected, numpy floats for scale:
    the same results as Python numbers."""
    _require_attention(backend)
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(B, H, W, HEADS * HEAD_DIM, generator=g).to(DEVICE) for _ in range(3))
    mask = fractional_mask(0.5, torch.float32).to(DEVICE)
    py = ops.window_attention(q, k, v, mask, window_size=WS, shift_size=SHIFT, num_heads=HEADS, scale=0.25,
                              backend=backend)
    npy = ops.window_attention(q, k, v, mask, window_size=np.int64(WS), shift_size=np.int32(SHIFT),
                               num_heads=torch.tensor(HEADS), scale=np.float32(0.25), backend=backend)
    assert torch.equal(py[0], npy[0]) and torch.equal(py[1], npy[1])
    new = ops.window_mask_update(mask, window_size=np.int64(WS), shift_size=np.int64(SHIFT), backend=backend)
    assert torch.equal(new, py[1])
    img = mask.permute(0, 3, 1, 2)
    _require(backend, "partial_conv_mask_update", dtype=torch.float32, kernel_size=3, stride=2)
    got = ops.partial_conv_mask_update(img, kernel_size=np.int64(3), stride=np.uint8(2), backend=backend)
    exp = ops.partial_conv_mask_update(img, kernel_size=3, stride=2, backend=backend)
    assert all(torch.equal(a, b) for a, b in zip(got, exp))


def test_numpy_scalars_in_bias_act(backend):
    _require(backend, "bias_act", dtype=torch.float32, act="lrelu", bias_dtype=torch.float32)
    g = torch.Generator().manual_seed(7)
    x, b = torch.randn(2, 5, 3, 3, generator=g).to(DEVICE), torch.randn(5, generator=g).to(DEVICE)
    exp = ops.bias_act(x, b, 1, "lrelu", alpha=0.125, gain=1.5, clamp=0.5, backend=backend)
    got = ops.bias_act(x, b, np.int64(1), "lrelu", alpha=np.float32(0.125), gain=np.float64(1.5),
                       clamp=np.float16(0.5), backend=backend)
    assert torch.equal(got, exp)
