"""Fused Triton bias_act (ops.bias_act(backend="triton")) vs the reference mat_kernels.reference.bias_act.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET=1 first); with one, the same tests run on CUDA. The kernel follows the
reference op by op, so besides the table's tolerances (against the reference in a wider dtype)
it is also checked to be bit-identical to the reference run in the same dtype on CPU.
"""
from __future__ import annotations

import os

import pytest
import torch

from mat_kernels import backends, ops
from mat_kernels.reference import bias_act
from mat_kernels.testing import assert_close

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1", allow_module_level=True)

def bias_act_triton(x, b=None, dim=1, act="linear", **kw):
    return ops.bias_act(x, b, dim, act, backend="triton", **kw)


# (shape, dim): NCHW conv output (bias along channels), FC output (bias along the last dim),
# a 1-D tensor, and a size that is not a multiple of the kernel's block.
LAYOUTS = [((2, 5, 6, 7), 1), ((3, 4, 9), -1), ((11,), 0), ((2, 1100), 1)]
ACTS = [("linear", {}), ("relu", {}), ("lrelu", {}), ("lrelu", dict(clamp=1.5)),
        ("lrelu", dict(alpha=0.1, gain=0.5)), ("linear", dict(gain=2.0, clamp=0.7))]
WIDER = {torch.float32: torch.float64, torch.float16: torch.float32, torch.bfloat16: torch.float32,
         torch.float64: torch.float64}


def _inputs(shape, dim, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 2
    x.view(-1)[:3] = torch.tensor([0.0, -0.0, 0.5])[: x.numel()]  # exact zeros: the slope rule at z = 0
    b = torch.randn(shape[dim], generator=g) if bias else None
    if bias:
        b[0] = 0.0
    return x.to(dtype), None if b is None else b.to(dtype)


def _run(fn, x, b, dy, dim, act, kw, device):
    """Forward and (dx, db) with leaf copies of x and b on ``device``. (The reference takes only
    non-negative dims.)"""
    dim = dim % x.ndim if fn is bias_act else dim
    x = x.detach().to(device).requires_grad_(True)
    b = None if b is None else b.detach().to(device).requires_grad_(True)
    y = fn(x, b, dim=dim, act=act, **kw)
    grads = torch.autograd.grad(y, [t for t in (x, b) if t is not None], dy.to(device))
    return y, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act,kw", ACTS, ids=[f"{a}-{'-'.join(f'{k}{v}' for k, v in kw.items())}" for a, kw in ACTS])
@pytest.mark.parametrize("shape,dim", LAYOUTS, ids=[str(s) for s, _ in LAYOUTS])
def test_bias_act_matches_reference(shape, dim, act, kw, dtype):
    x, b = _inputs(shape, dim, dtype, bias=shape != (11,) or act != "relu")
    dy = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    y, grads = _run(bias_act_triton, x, b, dy, dim, act, kw, DEVICE)
    assert y.dtype == dtype and y.shape == x.shape
    # Against the reference in a wider dtype, with the table's tolerances.
    w = WIDER[dtype]
    y_ref, grads_ref = _run(bias_act, x.to(w), None if b is None else b.to(w), dy.to(w), dim, act, kw, "cpu")
    assert_close(y, y_ref, "bias_act", "fwd", dtype, "y")
    if kw.get("clamp") is not None and dtype in (torch.float16, torch.bfloat16):
        # Where the wide unclamped output lies within one rounding of +-clamp, the low-precision
        # output may round onto the clamp (gradient passes) while the wide one lies beyond it
        # (gradient 0): the gradient is discontinuous there, so those elements are left to the
        # same-dtype check below.
        kw_free = {k: v for k, v in kw.items() if k != "clamp"}
        y_free = bias_act(x.to(w), None if b is None else b.to(w), dim % x.ndim, act, **kw_free)
        edge = ((y_free.abs() - kw["clamp"]).abs() <= kw["clamp"] * torch.finfo(dtype).eps).to(DEVICE)
        checked = [grads[0].masked_fill(edge, 0)] + list(grads[1:])
        grads_ref = [grads_ref[0].masked_fill(edge.cpu(), 0)] + list(grads_ref[1:])
        if edge.any():
            checked, grads_ref = checked[:1], grads_ref[:1]  # db sums the edge elements too
    else:
        checked = grads
    for name, g, g_ref in zip(("dx", "db"), checked, grads_ref):
        assert_close(g, g_ref, "bias_act", "bwd", dtype, name)
    # Same op order as the reference in the same dtype: y and dx are bit-identical.
    y_same, grads_same = _run(bias_act, x, b, dy, dim, act, kw, "cpu")
    assert torch.equal(y.cpu(), y_same), "y differs from the same-dtype reference"
    assert torch.equal(grads[0].cpu(), grads_same[0]), "dx differs from the same-dtype reference"


def test_bias_act_without_bias_and_non_contiguous():
    x = torch.randn(4, 6, 5).transpose(0, 2)  # (5, 6, 4), non-contiguous
    dy = torch.randn(5, 6, 4)
    for b in (None, torch.randn(6)):
        y, grads = _run(bias_act_triton, x, b, dy, 1, "lrelu", {}, DEVICE)
        y_ref, grads_ref = _run(bias_act, x.double(), None if b is None else b.double(), dy.double(), 1,
                                "lrelu", {}, "cpu")
        assert_close(y, y_ref, "bias_act", "fwd", torch.float32, "y")
        for name, g, g_ref in zip(("dx", "db"), grads, grads_ref):
            assert_close(g, g_ref, "bias_act", "bwd", torch.float32, name)


@pytest.mark.parametrize("act,kw", [("linear", {}), ("relu", {}), ("lrelu", {}), ("lrelu", dict(clamp=2.0))])
def test_gradcheck_and_gradgradcheck_fp64(act, kw):
    """First and second order in float64. Inputs stay away from the kinks (z = 0, |y| = clamp)
    where finite differences are meaningless."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    z = x + b[:, None]
    x = x + torch.where(z.abs() < 0.2, 0.5 * torch.sign(z) + (z == 0), torch.zeros_like(z))
    if "clamp" in kw:
        y = bias_act(x, b, 1, act)
        near = ((y.abs() - kw["clamp"]).abs() < 0.2)
        x = torch.where(near, x + 0.5, x)
    x = x.to(DEVICE).requires_grad_(True)
    b = b.to(DEVICE).requires_grad_(True)
    fn = lambda x, b: bias_act_triton(x, b, 1, act, **kw)
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_double_backward_matches_reference_r1_style():
    """R1: penalty = ||d(sum D(x))/dx||^2, differentiated with respect to the weights."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(2, 6, 5, 5, generator=g)
    w0 = torch.randn(6, generator=g)
    b0 = torch.randn(6, generator=g)
    results = []
    for fn, device in ((bias_act_triton, DEVICE), (bias_act, "cpu")):
        x = x0.to(device).requires_grad_(True)
        w = w0.to(device).requires_grad_(True)
        b = b0.to(device).requires_grad_(True)
        h = x * w[None, :, None, None]
        out = (fn(h, b, 1, "lrelu", clamp=3.0) ** 2).sum()
        (gx,) = torch.autograd.grad(out, x, create_graph=True)
        penalty = gx.square().sum()
        results.append([t.cpu() for t in torch.autograd.grad(penalty, (w, b), allow_unused=True)])
    for name, got, want in zip(("dw", "db"), *results):
        assert_close(got, want, "bias_act", "bwd", torch.float32, name)


def test_opcheck_and_compile():
    x = torch.randn(2, 3, 4, device=DEVICE, requires_grad=True)
    b = torch.randn(3, device=DEVICE, requires_grad=True)
    dy = torch.randn(2, 3, 4, device=DEVICE)
    torch.library.opcheck(torch.ops.mat_kernels.bias_act_triton.default, (x, b, 1, "lrelu", 0.2, 2 ** 0.5, -1.0))
    torch.library.opcheck(torch.ops.mat_kernels.bias_act_triton.default, (x, None, 2, "relu", 0.0, 1.0, 0.5))
    torch.library.opcheck(torch.ops.mat_kernels.bias_act_grad_triton.default,
                          (dy, x, b, 1, "lrelu", 0.2, 2 ** 0.5, 1.0))
    compiled = torch.compile(lambda x, b: bias_act_triton(x, b, 1, "lrelu"), backend="aot_eager", fullgraph=True)
    y = compiled(x, b)
    y.sum().backward()
    assert_close(y, bias_act(x.detach().cpu().double(), b.detach().cpu().double(), 1, "lrelu"),
                 "bias_act", "fwd", torch.float32, "y")


def test_limits_and_bad_inputs():
    x = torch.randn(2, 3, device=DEVICE)
    facts = dict(device=x.device, dtype=x.dtype, act="lrelu", bias_dtype=None)
    assert backends.not_supported_reasons("triton", "bias_act", facts) == []
    assert backends.not_supported_reasons("triton", "bias_act", dict(facts, act="tanh"))
    assert backends.not_supported_reasons("triton", "bias_act", dict(facts, bias_dtype=torch.float64))
    with pytest.raises(RuntimeError, match="act must be one of"):
        bias_act_triton(x, act="swish")
    # x and b of different dtypes are promoted to one (what x + b does), then run fused
    b64 = torch.ones(3, dtype=torch.float64, device=DEVICE)
    y = bias_act_triton(x, b64, dim=1, act="lrelu")
    assert y.dtype == torch.float64
    assert torch.equal(y.cpu(), bias_act(x.cpu().double(), b64.cpu(), 1, "lrelu"))
    with pytest.raises(ValueError, match=r"b must have shape \(x.shape\[dim\],\)"):
        bias_act_triton(x, torch.ones(2, device=DEVICE), dim=1)
    with pytest.raises(ValueError, match="dim must be an int"):
        bias_act_triton(x, dim=2)
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        bias_act_triton(x.int())
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        bias_act_triton([1.0])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_bias_act_mat_shapes_gpu(dtype):
    """Conv activations (B, C, H, W) with the bias along C and FC activations (B, N, C)."""
    for shape, dim, kw in [((4, 180, 64, 64), 1, dict(clamp=256.0)), ((4, 4096, 360), 2, {}),
                           ((2, 512, 129, 77), 1, {})]:
        x, b = _inputs(shape, dim, dtype)
        dy = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        y, grads = _run(bias_act_triton, x, b, dy, dim, "lrelu", kw, "cuda")
        w = WIDER[dtype]
        y_ref, grads_ref = _run(bias_act, x.to(w), b.to(w), dy.to(w), dim, "lrelu", kw, "cuda")
        assert_close(y, y_ref, "bias_act", "fwd", dtype, "y")
        for name, g, g_ref in zip(("dx", "db"), grads, grads_ref):
            assert_close(g, g_ref, "bias_act", "bwd", dtype, name)
