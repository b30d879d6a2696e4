"""The CUDA kernels against the reference, on a GPU (all tests are ``@pytest.mark.gpu``).

Ready to run where the extension was built (``pip install --no-build-isolation .`` with a CUDA
torch and nvcc): ``python -m pytest tests/cuda -m gpu`` (add MAT_KERNELS_EXTENDED_TESTS=1 for the
full product). On a GPU machine a missing extension fails these tests, unless the install opted
out with MAT_KERNELS_BUILD_CUDA=0.

Reference: float64 for fp32 inputs, float32 for fp16/bf16 (on the same rounded inputs); outputs
and gradients use the tolerance table of mat_kernels.testing, masks must match exactly.
"""
from __future__ import annotations

import itertools
import os

import pytest
import torch

from mat_kernels import ops, reference
from mat_kernels.cuda import library as _ext
from mat_kernels.testing import (ATTENTION_CASES, MASK_PATTERNS, assert_close, assert_mask_equal,
                                 check_window_attention, make_mask)

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore::mat_kernels.cuda.UnverifiedBackendWarning")]

OP = "window_attention"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DEV = "cuda"


@pytest.fixture(autouse=True)
def _extension():
    if _ext.LOAD_ERROR is not None:
        if os.environ.get("MAT_KERNELS_BUILD_CUDA", "").lower() in ("0", "false", "no", "off"):
            pytest.skip(f"installed with MAT_KERNELS_BUILD_CUDA=0: {_ext.LOAD_ERROR}")
        pytest.fail(f"a GPU is present but the CUDA extension is unavailable: {_ext.LOAD_ERROR}")


def _inputs(B, H, W, C, dtype, fused=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if fused:  # q, k, v as non-contiguous chunks of one (B, H, W, 3C) projection
        qkv = torch.randn(B, H, W, 3 * C, generator=g).to(DEV, dtype).requires_grad_()
        return qkv.chunk(3, dim=-1), (qkv,)
    q, k, v = (torch.randn(B, H, W, C, generator=g).to(DEV, dtype).requires_grad_() for _ in range(3))
    return (q, k, v), (q, k, v)


def check_against_reference(*args, **kw):
    return check_window_attention("cuda", *args, device=DEV, **kw)


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=str)
@pytest.mark.parametrize("B,H,W,heads,head_dim,ws,shift,pattern", ATTENTION_CASES[::3], ids=["-".join(map(str, c)) for c in ATTENTION_CASES[::3]])
def test_simt_forward_for_low_precision(monkeypatch, B, H, W, heads, head_dim, ws, shift, pattern, dtype):
    """fp16/bf16 normally run the tensor-core forward; the SIMT one stays correct too."""
    monkeypatch.setenv("MAT_KERNELS_CUDA_SIMT", "1")
    mask = make_mask(pattern, B, H, W, ws, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    check_against_reference(B, H, W, heads, head_dim, ws, shift, mask, dtype=dtype)


FULL = list(itertools.product((1, 2), ((16, 16), (32, 32), (16, 48)), (1, 6), (30, 32, 64),
                              ((8, 0), (8, 4), (8, 3), (16, 0), (16, 8), (16, 3)), MASK_PATTERNS, DTYPES))


@pytest.mark.extended
@pytest.mark.parametrize("B,grid,heads,head_dim,ws_shift,pattern,dtype", FULL,
                         ids=[f"B{c[0]}-{c[1][0]}x{c[1][1]}-h{c[2]}-d{c[3]}-ws{c[4][0]}s{c[4][1]}-{c[5]}-{c[6]}"
                              for c in FULL])
def test_full_product(B, grid, heads, head_dim, ws_shift, pattern, dtype):
    (H, W), (ws, shift) = grid, ws_shift
    mask = make_mask(pattern, B, H, W, ws, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    check_against_reference(B, H, W, heads, head_dim, ws, shift, mask, dtype=dtype)


@pytest.mark.parametrize("mask_form", ["bool", "bool_3d", "float_3d", "float16", "bfloat16", "float64"])
def test_mask_dtypes_and_shapes(mask_form):
    """The new mask keeps the mask's dtype and shape; bool follows the any-rule."""
    B, H, W = 2, 16, 16
    m = torch.rand(B, H, W, 1, generator=torch.Generator().manual_seed(3)) > 0.7
    m[0, :8, :8] = False  # an all-hole window
    mask = {"bool": m, "bool_3d": m[..., 0], "float_3d": m[..., 0].float(), "float16": m.half(),
            "bfloat16": m.bfloat16(), "float64": m.double()}[mask_form]
    check_against_reference(B, H, W, 2, 30, 8, 3, mask)


@pytest.mark.parametrize("shift", [0, 4])
def test_fractional_float_mask(shift):
    """Values other than 0/1 are added to the scores as they are; the update clamps the window sum."""
    B, H, W = 1, 16, 16
    g = torch.Generator().manual_seed(4)
    values = torch.tensor([0.0, 1.0, 0.5, 0.25, -0.75])
    mask = values[torch.randint(len(values), (B, H, W, 1), generator=g)]
    mask[0, :8, :8] = 0
    mask[0, 2, 3] = 0.25  # window sum 0.25 is kept
    mask[0, 8:, :8] = 0
    mask[0, 9, 1], mask[0, 12, 5] = 0.5, -0.75  # window sum -0.25 clamps to 0
    check_against_reference(B, H, W, 2, 30, 8, shift, mask)


def test_non_contiguous_inputs():
    B, H, W = 2, 16, 16
    big = (torch.rand(B, H, 2 * W, 2, generator=torch.Generator().manual_seed(5)) > 0.4).float()
    mask = big[:, :, ::2, 1:]
    assert not mask.is_contiguous()
    check_against_reference(B, H, W, 6, 30, 8, 4, mask, fused=True)
    check_against_reference(B, H, W, 6, 30, 16, 0, None, fused=True, dtype=torch.float16)


def test_permuted_layout():
    """q, k, v whose channel stride is H*W (a permuted NCHW tensor)."""
    B, H, W, heads, d = 1, 16, 16, 2, 30
    q, k, v = (torch.randn(B, heads * d, H, W, device=DEV).permute(0, 2, 3, 1) for _ in range(3))
    out, _ = ops.window_attention(q, k, v, None, window_size=8, shift_size=3, num_heads=heads, backend="cuda")
    ref, _ = reference.window_attention(q.double(), k.double(), v.double(), None, window_size=8, shift_size=3,
                                        num_heads=heads)
    assert_close(out, ref, OP, "fwd")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_holes_equals_plain_attention(dtype):
    """No valid key in a window: the common -100 cancels in the softmax (no NaN, no zeros)."""
    (q, k, v), _ = _inputs(1, 16, 16, 60, dtype)
    holes = torch.zeros(1, 16, 16, 1, device=DEV)
    out, new_mask = ops.window_attention(q, k, v, holes, window_size=8, num_heads=2, backend="cuda")
    plain, none_mask = ops.window_attention(q, k, v, None, window_size=8, num_heads=2, backend="cuda")
    assert none_mask is None and torch.equal(new_mask, holes)
    assert_close(out, plain, OP, "fwd")


@pytest.mark.parametrize("head_dim,ws,shift,dtype", [(128, 7, 2, torch.float32), (96, 8, 4, torch.bfloat16),
                                                     (128, 32, 16, torch.float16), (1, 4, 1, torch.float32),
                                                     (33, 5, 0, torch.float32)])
def test_head_dim_padding_and_window_sizes(head_dim, ws, shift, dtype):
    """head_dim padded to 32/64/128 inside the kernel; windows of 1024 tokens and odd windows
    whose token count is not a multiple of the tile."""
    H = W = 2 * ws
    mask = make_mask("random", 1, H, W, ws, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    check_against_reference(1, H, W, 2, head_dim, ws, shift, mask, dtype=dtype, scale=0.05)


def test_mask_gets_no_gradient_and_lse_is_finite():
    (q, k, v), _ = _inputs(1, 8, 8, 16, torch.float32)
    mask = torch.rand(1, 8, 8, 1, device=DEV).round().requires_grad_()
    out, nm = ops.window_attention(q, k, v, mask, window_size=8, num_heads=1, backend="cuda")
    assert not nm.requires_grad
    out.sum().backward()
    assert mask.grad is None and q.grad is not None
    _, lse, _ = torch.ops.mat_kernels.window_attention_fwd_cuda(q, k, v, mask, 8, 0, 1, 0.25)
    assert lse.shape == (1, 1, 8, 8) and lse.dtype == torch.float32 and torch.isfinite(lse).all()


def test_side_stream():
    """Kernels launch on the current stream, so work queued on a side stream stays ordered."""
    s = torch.cuda.Stream()
    (q, k, v), _ = _inputs(2, 32, 32, 60, torch.float16)
    ref, _ = ops.window_attention(q, k, v, None, window_size=8, shift_size=4, num_heads=2, backend="cuda")
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        out, _ = ops.window_attention(q * 1, k, v, None, window_size=8, shift_size=4, num_heads=2, backend="cuda")
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(out, ref)


# ---------------------------------------------------------------------------------------------
# Mask updates: exactly the reference's values, dtypes and shapes.
# ---------------------------------------------------------------------------------------------
MASK_DTYPES = (torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64)


@pytest.mark.parametrize("dtype", MASK_DTYPES, ids=str)
@pytest.mark.parametrize("ws,shift", [(8, 0), (8, 4), (8, 3), (16, 8), (4, 1)])
@pytest.mark.parametrize("three_d", [False, True])
def test_window_mask_update(dtype, ws, shift, three_d):
    B, H, W = len(MASK_PATTERNS) - 1, 32, 48
    g = torch.Generator().manual_seed(8)
    m = torch.cat([make_mask(p, 1, H, W, ws, generator=g, dtype=torch.float32) for p in MASK_PATTERNS if p != "none"])
    mask = (m > 0 if dtype == torch.bool else m.to(dtype)).to(DEV)
    mask = mask[..., 0] if three_d else mask
    got = ops.window_mask_update(mask, window_size=ws, shift_size=shift, backend="cuda")
    assert_mask_equal(got, reference.window_mask_update(mask, window_size=ws, shift_size=shift))


def test_window_mask_update_fractional_and_strided():
    g = torch.Generator().manual_seed(9)
    vals = (torch.randint(0, 256, (2, 16, 32, 1), generator=g).float() / 256) * (torch.rand(2, 16, 32, 1, generator=g) < 0.05)
    mask = vals.to(DEV)[:, :, ::2]  # strided view
    got = ops.window_mask_update(mask, window_size=8, shift_size=3, backend="cuda")
    assert_mask_equal(got, reference.window_mask_update(mask, window_size=8, shift_size=3))


def _assert_identical(actual, expected, name):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
    # rtol = atol = 0 and no NaN: fp16/bf16 ratios are computed in float32 (1e-8 underflows in fp16).
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=0, atol=0, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", MASK_DTYPES, ids=str)
@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (3, 2), (5, 1), (7, 2), (1, 1)])
def test_partial_conv_mask_update(dtype, kernel_size, stride):
    g = torch.Generator().manual_seed(10)
    m = torch.cat([make_mask(p, 1, 18, 22, 2, generator=g, dtype=torch.float32) for p in MASK_PATTERNS if p != "none"])
    mask = (m > 0 if dtype == torch.bool else m.to(dtype)).permute(0, 3, 1, 2).to(DEV)
    got = ops.partial_conv_mask_update(mask, kernel_size=kernel_size, stride=stride, backend="cuda")
    # The reference runs on CPU: cuDNN may pick a Winograd/FFT algorithm whose count is not exact.
    exp = reference.partial_conv_mask_update(mask.cpu(), kernel_size=kernel_size, stride=stride)
    _assert_identical(got[0], exp[0], "new_mask")
    _assert_identical(got[1], exp[1], "ratio")


# ---------------------------------------------------------------------------------------------
# opcheck on the compiled ops, and agreement with the Triton backend.
# ---------------------------------------------------------------------------------------------
def test_opcheck_compiled_ops():
    (q, k, v), _ = _inputs(1, 16, 16, 60, torch.float32)
    mask = make_mask("random", 1, 16, 16, 8, generator=torch.Generator().manual_seed(11), dtype=torch.float32).to(DEV)
    cops = torch.ops.mat_kernels
    for m in (None, mask):
        torch.library.opcheck(cops.window_attention_fwd_cuda, (q, k, v, m, 8, 4, 2, 0.2))
    out, lse, _ = cops.window_attention_fwd_cuda(q, k, v, mask, 8, 4, 2, 0.2)
    torch.library.opcheck(cops.window_attention_bwd_cuda, (torch.randn_like(out), q.detach(), k.detach(),
                                                          v.detach(), mask, out.detach(), lse, 8, 4, 2, 0.2))
    torch.library.opcheck(cops.window_mask_update_cuda, (mask, 8, 4))
    torch.library.opcheck(cops.partial_conv_mask_update_cuda, (mask.permute(0, 3, 1, 2).contiguous(), 3, 2))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_agrees_with_triton(dtype):
    pytest.importorskip("triton")
    B, H, W, heads, d, ws, shift = 2, 32, 32, 6, 30, 8, 4
    mask = make_mask("large_hole", B, H, W, ws, generator=torch.Generator().manual_seed(12), dtype=torch.float32).to(DEV)
    (q, k, v), leaves = _inputs(B, H, W, heads * d, dtype)
    res = {}
    for backend in ("cuda", "triton"):
        out, nm = ops.window_attention(q, k, v, mask, window_size=ws, shift_size=shift, num_heads=heads, backend=backend)
        dout = torch.ones_like(out)
        res[backend] = (out, nm, torch.autograd.grad(out, leaves, dout))
    assert_close(res["cuda"][0], res["triton"][0], OP, "fwd", name="out cuda vs triton")
    assert_mask_equal(res["cuda"][1], res["triton"][1])
    for name, a, b in zip(("dq", "dk", "dv"), res["cuda"][2], res["triton"][2]):
        assert_close(a, b, OP, "bwd", dtype=dtype, name=f"{name} cuda vs triton")
    assert_mask_equal(ops.window_mask_update(mask, window_size=ws, shift_size=shift, backend="cuda"),
                      ops.window_mask_update(mask, window_size=ws, shift_size=shift, backend="triton"))


def test_torch_compile_fullgraph():
    (q, k, v), _ = _inputs(1, 16, 16, 60, torch.float16)
    mask = make_mask("random", 1, 16, 16, 8, generator=torch.Generator().manual_seed(13), dtype=torch.float32).to(DEV)


    def f(q, k, v):  # the backend entry (ops.window_attention's dispatch is plain Python around it)
        return ops.window_attention(q, k, v, mask, window_size=8, shift_size=4, num_heads=2, backend="cuda")

    out, nm = torch.compile(f, fullgraph=True)(q, k, v)
    eo, en = f(q, k, v)
    assert torch.equal(nm, en)
    assert_close(out, eo, OP, "fwd")
    for a, b in zip(torch.autograd.grad(out.sum(), (q, k, v)), torch.autograd.grad(eo.sum(), (q, k, v))):
        assert_close(a, b, OP, "bwd", dtype=torch.float16)
