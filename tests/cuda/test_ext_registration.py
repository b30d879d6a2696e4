"""The Python half of the extension, tested without a GPU.

The schemas of csrc/ops.cpp are declared again, verbatim, in a private namespace whose CPU
kernels are the reference (plus an explicit logsumexp). ``mat_kernels.cuda.library.register`` then adds
its fake kernels and autograd formula to that namespace exactly as it does for the compiled ops,
and the CUDA backend is pointed at it. This checks, on CPU: that the schemas parse, that the
fake kernels agree with real outputs (torch.library.opcheck), that the autograd formula is wired
to the backward op correctly (gradcheck in float64), the backend wrapper's argument handling and
its one-time warning. The kernels themselves are tested in test_gpu.py.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from mat_kernels import reference
from mat_kernels import cuda
from mat_kernels.cuda import library as _ext

from ._attention_math import reference_lse as _reference_lse
from ._attention_math import unwindow as _unwindow
from ._attention_math import windowed as _windowed
from ._build import schemas_from_ops_cpp

NS = "mat_kernels_cudamock"
_lib = torch.library.Library(NS, "DEF")
for _schema in schemas_from_ops_cpp():
    _lib.define(_schema)


def _fwd_cpu(q, k, v, mask, window_size, shift_size, num_heads, scale):
    out, new_mask = reference.window_attention(q, k, v, mask, window_size=window_size, shift_size=shift_size,
                                               num_heads=num_heads, scale=scale)
    lse = _reference_lse(q, k, mask, window_size, shift_size, num_heads, scale)
    return out.contiguous(), lse, (new_mask.contiguous() if mask is not None else q.new_empty((0,)))


def _bwd_cpu(grad_out, q, k, v, mask, out, lse, window_size, shift_size, num_heads, scale):
    # Kernels registered below the autograd key cannot record a graph, so the mock's backward is the
    # closed form of softmax attention; gradcheck below compares it with numerical derivatives.
    H, W = q.shape[1:3]
    qw, kw, vw, bias = _windowed(q, k, v, mask, window_size, shift_size, num_heads, scale)
    dow = _windowed(grad_out, grad_out, grad_out, None, window_size, shift_size, num_heads, scale)[0]
    P = torch.softmax((qw @ kw.transpose(-1, -2)) * scale + bias, dim=-1)
    dP = dow @ vw.transpose(-1, -2)
    dS = P * (dP - (dP * P).sum(-1, keepdim=True))
    grads = (dS @ kw * scale, dS.transpose(-1, -2) @ qw * scale, P.transpose(-1, -2) @ dow)
    return tuple(_unwindow(g, window_size, shift_size, H, W).contiguous() for g in grads)


def _wmu_cpu(mask, window_size, shift_size):
    return reference.window_mask_update(mask, window_size=window_size, shift_size=shift_size).contiguous()


def _pcmu_cpu(mask, kernel_size, stride):
    return reference.partial_conv_mask_update(mask, kernel_size=kernel_size, stride=stride)


_lib.impl("window_attention_fwd_cuda", _fwd_cpu, "CPU")
_lib.impl("window_attention_bwd_cuda", _bwd_cpu, "CPU")
_lib.impl("window_mask_update_cuda", _wmu_cpu, "CPU")
_lib.impl("partial_conv_mask_update_cuda", _pcmu_cpu, "CPU")
_ext.register(NS)


def _attention(q, k, v, mask, window_size, shift_size, num_heads):
    """The backend's entry point, with the default scale ops would pass; (out, new_mask) as ops returns."""
    out, _lse, new_mask = cuda.ENTRY_POINTS["window_attention"](q, k, v, mask, window_size, shift_size, num_heads,
                                                                (q.shape[-1] // num_heads) ** -0.5)
    return out, (new_mask if mask is not None else None)


@pytest.fixture
def mock_backend(monkeypatch):
    monkeypatch.setattr(_ext, "ops", lambda: getattr(torch.ops, NS))
    monkeypatch.setattr(cuda, "_warned", True)
    return getattr(torch.ops, NS)


def _qkv(B=1, H=8, W=8, C=8, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, W, C, generator=g, dtype=dtype).requires_grad_(requires_grad) for _ in range(3)]


def _mask(B=1, H=8, W=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    m = (torch.rand(B, H, W, 1, generator=g) > 0.5).to(dtype)
    m[:, :4, :4] = 0  # one window without a valid key
    return m


def test_mock_lse_is_the_softmax_normaliser():
    """Sanity of the test's own lse: exp(scores - lse) sums to one over the keys."""
    q, k, _ = _qkv()
    lse = _reference_lse(q, k, _mask(), 4, 2, 2, 0.5)
    assert lse.shape == (1, 2, 8, 8) and torch.isfinite(lse).all()
    lse0 = _reference_lse(q, k, None, 4, 0, 1, 1.0)  # one head, one window per 4x4 block, no bias
    scores = torch.einsum("c,yxc->yx", q[0, 0, 0], k[0, :4, :4])
    assert torch.allclose(lse0[0, 0, 0, 0].double(), torch.logsumexp(scores.flatten(), 0), atol=1e-6)


@pytest.mark.parametrize("shift,with_mask", [(0, False), (2, True), (1, True)])
def test_opcheck_attention_ops(mock_backend, shift, with_mask):
    q, k, v = _qkv(requires_grad=True)
    mask = _mask() if with_mask else None
    torch.library.opcheck(mock_backend.window_attention_fwd_cuda, (q, k, v, mask, 4, shift, 2, 0.5))
    out, lse, _ = mock_backend.window_attention_fwd_cuda(q, k, v, mask, 4, shift, 2, 0.5)
    grad = torch.randn_like(out)
    torch.library.opcheck(mock_backend.window_attention_bwd_cuda,
                          (grad, q.detach(), k.detach(), v.detach(), mask, out.detach(), lse, 4, shift, 2, 0.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_opcheck_mask_ops(mock_backend, dtype):
    m = _mask(dtype=torch.float32).to(dtype)
    torch.library.opcheck(mock_backend.window_mask_update_cuda, (m, 4, 2))
    torch.library.opcheck(mock_backend.window_mask_update_cuda, (m[..., 0], 4, 0))
    img = m.permute(0, 3, 1, 2).contiguous()
    torch.library.opcheck(mock_backend.partial_conv_mask_update_cuda, (img, 3, 1))
    torch.library.opcheck(mock_backend.partial_conv_mask_update_cuda, (img, 3, 2))


def test_fake_partial_conv_shape_for_odd_sizes(mock_backend):
    from torch._subclasses.fake_tensor import FakeTensorMode
    real = _pcmu_cpu(torch.ones(2, 1, 9, 7), 5, 2)
    with FakeTensorMode():
        fake = mock_backend.partial_conv_mask_update_cuda(torch.ones(2, 1, 9, 7), 5, 2)
    assert [tuple(t.shape) for t in fake] == [tuple(t.shape) for t in real]
    assert [t.dtype for t in fake] == [t.dtype for t in real]


@pytest.mark.parametrize("shift,mask_kind", [(0, None), (2, "4d"), (3, "3d")])
def test_autograd_formula_gradcheck(mock_backend, shift, mask_kind):
    q, k, v = _qkv(H=8, W=8, C=4, requires_grad=True)
    mask = None if mask_kind is None else (_mask() if mask_kind == "4d" else _mask()[..., 0])

    def fn(q, k, v):
        return _attention(q, k, v, mask, 4, shift, 2)[0]

    # fast_mode checks random projections of the Jacobian: a wrong or swapped gradient still fails.
    assert torch.autograd.gradcheck(fn, (q, k, v), fast_mode=True)


def test_wrapper_matches_reference_and_keeps_mask_form(mock_backend):
    q, k, v = _qkv()
    for mask in (None, _mask(), _mask()[..., 0], _mask(dtype=torch.float32).bool()):
        out, new_mask = _attention(q, k, v, mask, 4, 2, 2)
        ref, ref_mask = reference.window_attention(q, k, v, mask, window_size=4, shift_size=2, num_heads=2)
        assert torch.equal(out, ref)
        if mask is None:
            assert new_mask is None
        else:
            assert new_mask.shape == mask.shape and new_mask.dtype == mask.dtype and torch.equal(new_mask, ref_mask)
    new_mask, ratio = cuda.partial_conv_mask_update(torch.ones(1, 1, 6, 6), 3, 1)
    assert ratio[0, 0, 0, 0] == 2.25 and torch.equal(new_mask, torch.ones(1, 1, 6, 6))


def test_warns_once_that_the_backend_is_unverified(monkeypatch):
    monkeypatch.setattr(_ext, "ops", lambda: getattr(torch.ops, NS))
    monkeypatch.setattr(cuda, "_warned", False)
    m = _mask()
    with pytest.warns(cuda.UnverifiedBackendWarning, match="has not been verified on a GPU yet"):
        cuda.window_mask_update(m, 4, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cuda.window_mask_update(m, 4, 0)


def test_torch_compile_fullgraph_through_the_ops(mock_backend):
    """The fake kernels and autograd formula let torch.compile trace the backend without a graph
    break (aot_eager runs the traced graph on the mock's CPU kernels)."""
    q, k, v = _qkv(C=4, requires_grad=True)
    mask = _mask()

    def f(q, k, v):
        return _attention(q, k, v, mask, 4, 2, 2)

    out, nm = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v)
    ref, ref_mask = reference.window_attention(q, k, v, mask, window_size=4, shift_size=2, num_heads=2)
    assert torch.allclose(out, ref) and torch.equal(nm, ref_mask)
    g = torch.autograd.grad(out.sum(), (q, k, v))
    rg = torch.autograd.grad(ref.sum(), (q, k, v))
    assert all(torch.allclose(a, b) for a, b in zip(g, rg))


def test_mask_gets_no_gradient(mock_backend):
    """Issue #16: a fractional mask with requires_grad ends with grad None, as in every backend
    (the autograd formula returns None for it); q, k and v get theirs."""
    q, k, v = _qkv(C=4, requires_grad=True)
    mask = (_mask() * 0.5).requires_grad_()
    out, new_mask = _attention(q, k, v, mask, 4, 2, 2)
    assert not new_mask.requires_grad
    out.sum().backward()
    assert mask.grad is None and all(t.grad is not None for t in (q, k, v))
