"""One semantics for every backend (issue #16): the mask rule on the mask's own values, NaN
propagation, empty batches, no mask gradient and numpy scalars. Every test runs each backend that
can run here (reference and, under TRITON_INTERPRET=1, Triton on CPU; Triton and CUDA on a GPU);
the CUDA kernels are also run on CPU in tests/cuda/test_emulated.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mat_kernels import backends, ops, reference
from mat_kernels.reference import from_windows
from mat_kernels.testing import assert_close, assert_mask_equal, check_window_attention

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = tuple(backends.BACKENDS)
pytestmark = pytest.mark.filterwarnings("ignore::mat_kernels.backends.cuda.UnverifiedBackendWarning")

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


@pytest.mark.parametrize("mask_kind", [None, "4d", "3d-bool"])
@pytest.mark.parametrize("backend", BACKENDS)
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


@pytest.mark.parametrize("backend", BACKENDS)
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


@pytest.mark.parametrize("backend", BACKENDS)
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_numpy_scalars_in_bias_act(backend):
    _require(backend, "bias_act", dtype=torch.float32, act="lrelu", bias_dtype=torch.float32)
    g = torch.Generator().manual_seed(7)
    x, b = torch.randn(2, 5, 3, 3, generator=g).to(DEVICE), torch.randn(5, generator=g).to(DEVICE)
    exp = ops.bias_act(x, b, 1, "lrelu", alpha=0.125, gain=1.5, clamp=0.5, backend=backend)
    got = ops.bias_act(x, b, np.int64(1), "lrelu", alpha=np.float32(0.125), gain=np.float64(1.5),
                       clamp=np.float16(0.5), backend=backend)
    assert torch.equal(got, exp)

