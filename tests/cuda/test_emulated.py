"""The kernels of csrc/*.cu, unchanged, run on the CPU and compared with the reference.

The kernel files are compiled as host C++ with csrc/tests/host_cuda_shim.h force-included: a
launch runs each block as real threads with real barriers and warp-shuffle exchanges (see the
shim). That executes the kernels' index arithmetic, tiling, padding of head_dim, online softmax,
bias application, the mask update in the forward launch, the recomputing backward and the mask
kernels, on small problems. It does not replace the GPU run (test_gpu.py): device code
generation, the memory model and performance are not exercised.
"""
from __future__ import annotations

import pytest
import torch

from mat_kernels import reference
from mat_kernels.testing import assert_close, assert_mask_equal, reference_attention

from ._attention_math import reference_lse
from ._emulation import DT, emu_bwd, emu_fwd
from ._emulation import check as _check
from ._emulation import ptr as _ptr
from ._emulation import strides as _strides

OP = "window_attention"


@pytest.fixture(scope="module")
def emu(cuda_emulation):
    """The kernels built as host C++ (tests/cuda/_emulation.py; one build per session)."""
    return cuda_emulation


def _mask(kind, B, H, W, ws, g):
    if kind is None:
        return None
    m = (torch.rand(B, H, W, 1, generator=g) > 0.5).float()
    m[0, :ws, :ws] = 0  # a window with no valid token before the shift
    if kind == "bool3d":
        return m[..., 0].bool()
    if kind == "fractional":
        vals = torch.tensor([0.0, 1.0, 0.5, -0.75])
        return vals[torch.randint(4, (B, H, W, 1), generator=g)]
    if kind == "strided":
        return torch.cat([m, 1 - m], dim=-1)[..., :1]  # (B, H, W, 1) view with last-dim stride 2
    return m


# (B, H, W, heads, head_dim, ws, shift, mask kind, dtype, qkv layout):
# head_dim 30 / 64 / 100 pad to 32 / 64 / 128 (1, 2, 4 lanes per row); N = 16, 36 (a partial key
# tile), 64 (two tiles), 100 and 144 (query rows over several blocks).
CASES = [
    (2, 8, 8, 2, 30, 4, 2, "float", torch.float32, "contiguous"),
    (1, 8, 12, 1, 64, 4, 1, "bool3d", torch.float32, "fused"),
    (1, 8, 8, 2, 16, 8, 3, None, torch.float16, "contiguous"),
    (1, 12, 12, 1, 100, 6, 3, "fractional", torch.bfloat16, "permuted"),
    (1, 12, 12, 1, 40, 12, 5, "strided", torch.float32, "contiguous"),
    (2, 16, 16, 2, 64, 8, 4, "float", torch.float16, "fused"),
    (1, 10, 10, 1, 128, 10, 3, "bool3d", torch.bfloat16, "contiguous"),
]


def _make_qkv(B, H, W, C, dtype, layout, g):
    if layout == "fused":
        return torch.randn(B, H, W, 3 * C, generator=g).to(dtype).chunk(3, dim=-1)
    if layout == "permuted":
        return tuple(torch.randn(B, C, H, W, generator=g).to(dtype).permute(0, 2, 3, 1) for _ in range(3))
    return tuple(torch.randn(B, H, W, C, generator=g).to(dtype) for _ in range(3))


# fp16/bf16 forwards run on the tensor-core kernel by default; "simt" forces the fp32 SIMT one.
IMPL_CASES = [c + ("default",) for c in CASES] + [c + ("simt",) for c in CASES if c[8] != torch.float32]


@pytest.mark.parametrize("B,H,W,heads,hd,ws,s,mask_kind,dtype,layout,impl", IMPL_CASES,
                         ids=[f"{c[1]}x{c[2]}-h{c[3]}-d{c[4]}-ws{c[5]}s{c[6]}-{c[7]}-{str(c[8])[6:]}-{c[9]}-{c[10]}"
                              for c in IMPL_CASES])
def test_attention_forward_and_backward(emu, B, H, W, heads, hd, ws, s, mask_kind, dtype, layout, impl):
    g = torch.Generator().manual_seed(0)
    q, k, v = _make_qkv(B, H, W, heads * hd, dtype, layout, g)
    mask = _mask(mask_kind, B, H, W, ws, g)
    scale = hd ** -0.5
    out, lse = _check_against_reference(emu, q, k, v, mask, ws, s, heads, scale, impl, g)
    exp_lse = reference_lse(q.double(), k.double(), mask, ws, s, heads, scale)
    assert_close(lse, exp_lse, OP, "fwd", dtype=torch.float32, name="lse")


def _check_against_reference(emu, q, k, v, mask, ws, s, heads, scale, impl, g):
    """The emulated forward (``impl``: "default" or "simt") and backward by the accuracy rule:
    out, dq, dk, dv against the reference in float64, with the reference run in q's dtype as the
    in-dtype reference; the new mask exactly. Returns the kernel's (out, lse)."""
    dtype = q.dtype
    out, lse, new_mask = emu_fwd(emu, q, k, v, mask, ws, s, heads, scale, force_simt=impl == "simt")
    dout = torch.randn(out.shape, generator=g).to(dtype)
    geometry = dict(window_size=ws, shift_size=s, num_heads=heads, scale=scale)
    exact, exact_mask = reference_attention((q, k, v), tuple, mask, dout, torch.float64, geometry)
    in_dtype, _ = reference_attention((q, k, v), tuple, mask, dout, dtype, geometry)
    assert_close(out, exact[0], OP, "fwd", dtype, "out", reference=in_dtype[0])
    assert_mask_equal(new_mask, exact_mask)
    grads = emu_bwd(emu, dout, q, k, v, mask, out, lse, ws, s, heads, scale)
    for name, got, exp, ref in zip(("dq", "dk", "dv"), grads, exact[1:], in_dtype[1:]):
        assert_close(got, exp, OP, "bwd", dtype, name, reference=ref)
    return out, lse


def test_all_holes_window_is_plain_attention(emu):
    g = torch.Generator().manual_seed(1)
    q, k, v = _make_qkv(1, 8, 8, 16, torch.float32, "contiguous", g)
    holes = torch.zeros(1, 8, 8, 1)
    out, _, new_mask = emu_fwd(emu, q, k, v, holes, 8, 0, 1, 0.25)
    plain, _, _ = emu_fwd(emu, q, k, v, None, 8, 0, 1, 0.25)
    assert torch.isfinite(out).all() and torch.equal(new_mask, holes)
    assert_close(out, plain, OP, "fwd")


@pytest.mark.parametrize("dtype", [torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_window_mask_update(emu, dtype):
    g = torch.Generator().manual_seed(2)
    B, H, W = 3, 8, 16
    m = (torch.rand(B, H, W, generator=g) > 0.9).float()
    m[1] = 0
    m[2, :, :] = torch.tensor([0.0, 0.25, 0.5])[torch.randint(3, (H, W), generator=g)] * (torch.rand(H, W, generator=g) < 0.1)
    mask = m > 0 if dtype == torch.bool else m.to(dtype)
    for ws, s in ((4, 0), (4, 3), (8, 4)):
        new = torch.empty_like(mask)
        _check(emu.emu_window_mask_update(_ptr(mask), DT[dtype], _strides(mask, 3), _ptr(new), B, H, W, ws, s))
        assert_mask_equal(new, reference.window_mask_update(mask, window_size=ws, shift_size=s))


@pytest.mark.parametrize("dtype", [torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_partial_conv_mask_update(emu, dtype):
    g = torch.Generator().manual_seed(3)
    m = (torch.rand(2, 1, 9, 11, generator=g) > 0.6).float()
    m[1] = 0
    mask = m > 0 if dtype == torch.bool else m.to(dtype)
    out_dtype = torch.float32 if dtype == torch.bool else dtype
    for ksize, stride in ((3, 1), (3, 2), (5, 2), (7, 1)):
        exp_mask, exp_ratio = reference.partial_conv_mask_update(mask, kernel_size=ksize, stride=stride)
        new, ratio = torch.empty_like(exp_mask), torch.empty_like(exp_ratio)
        _check(emu.emu_partial_conv_mask_update(_ptr(mask), DT[dtype], _strides(mask, 4), _ptr(new), _ptr(ratio),
                                                DT[out_dtype], 2, 9, 11, exp_mask.shape[2], exp_mask.shape[3], ksize,
                                                stride))
        # Exact, and finite: fp16/bf16 are computed in float and rounded once (in fp16 itself
        # S + 1e-8 would round to 0 at a hole and the ratio would be NaN).
        assert torch.isfinite(ratio).all() and (exp_mask == 0).any()
        for name, got, exp in (("new_mask", new, exp_mask), ("ratio", ratio, exp_ratio)):
            torch.testing.assert_close(got, exp, rtol=0, atol=0, msg=lambda s: f"{name} k={ksize}: {s}")
        if dtype in (torch.float16, torch.bfloat16):
            exp_mask32, exp_ratio32 = reference.partial_conv_mask_update(mask.float(), kernel_size=ksize, stride=stride)
            assert torch.equal(new, exp_mask32.to(dtype)) and torch.equal(ratio, exp_ratio32.to(dtype))


def test_views_spanning_more_than_2_31_elements(emu):
    """Issue #16, finding 3: a mask view whose rows are 73.8M elements apart (the last one past
    2**31, over a 2.3 GB bool base) is indexed with 64-bit offsets by every kernel: the mask
    updates and the attention's key bias, mask update and backward match the reference."""
    SH = 73_800_000
    base = torch.zeros(31 * SH + 64, dtype=torch.bool)
    vals = torch.rand(32, 16, generator=torch.Generator().manual_seed(5)) > 0.6
    vals[:16, :16] = False  # an all-hole window
    for y in range(32):
        base[y * SH: y * SH + 16] = vals[y]
    m3 = base.as_strided((1, 32, 16), (0, SH, 1))
    new = torch.empty(1, 32, 16, dtype=torch.bool)
    _check(emu.emu_window_mask_update(_ptr(m3), DT[torch.bool], _strides(m3, 3), _ptr(new), 1, 32, 16, 16, 8))
    assert_mask_equal(new, reference.window_mask_update(vals[None], window_size=16, shift_size=8))

    m4 = base.as_strided((1, 1, 32, 16), (0, 0, SH, 1))
    exp_mask, exp_ratio = reference.partial_conv_mask_update(vals[None, None], kernel_size=3, stride=1)
    new4, ratio = torch.empty_like(exp_mask), torch.empty_like(exp_ratio)
    _check(emu.emu_partial_conv_mask_update(_ptr(m4), DT[torch.bool], _strides(m4, 4), _ptr(new4), _ptr(ratio),
                                            DT[torch.float32], 1, 32, 16, 32, 16, 3, 1))
    assert_mask_equal(new4, exp_mask)
    assert_mask_equal(ratio, exp_ratio)

    g = torch.Generator().manual_seed(6)
    q, k, v = _make_qkv(1, 32, 16, 32, torch.float32, "contiguous", g)
    mask = base.as_strided((1, 32, 16, 1), (0, SH, 1, 1))
    out, lse, new_mask = emu_fwd(emu, q, k, v, mask, 16, 8, 2, 0.25)
    rq, rk, rv = (t.double().requires_grad_() for t in (q, k, v))
    ref, ref_mask = reference.window_attention(rq, rk, rv, vals[None, :, :, None], window_size=16, shift_size=8,
                                               num_heads=2, scale=0.25)
    assert_close(out, ref, OP, "fwd", name="out")
    assert_mask_equal(new_mask, ref_mask)
    dout = torch.randn(out.shape, generator=g)
    grads = emu_bwd(emu, dout, q, k, v, mask, out, lse, 16, 8, 2, 0.25)
    for name, got, exp in zip(("dq", "dk", "dv"), grads, torch.autograd.grad(ref, (rq, rk, rv), dout.double())):
        assert_close(got, exp, OP, "bwd", dtype=torch.float32, name=name)


def test_saturated_softmax_backward_is_exact(emu):
    """Issue #16, finding 7: logits ~1e6 make the softmax one-hot and the true dq, dk exactly 0.
    The CUDA backward sums delta = dO . O and dP = dO . v in the same fma order, so dS and with it
    dq and dk come out as exact zeros (the Triton backward's bound is documented in its module)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 8, 8, 32, generator=g) * a for a in (1e3, 1e3, 1.0))
    out, lse, _ = emu_fwd(emu, q, k, v, None, 8, 0, 1, 32 ** -0.5)
    dq, dk, dv = emu_bwd(emu, torch.randn(out.shape, generator=g), q, k, v, None, out, lse, 8, 0, 1, 32 ** -0.5)
    assert torch.count_nonzero(dq) == 0 and torch.count_nonzero(dk) == 0
    assert torch.isfinite(dv).all() and dv.abs().max() > 0


# ---- issue #16: one semantics with the reference and Triton (tests/test_ops_semantics.py) ----
from ..test_ops_semantics import RULE_CASES, fractional_mask  # noqa: E402

RULE_IMPL_CASES = [c + (impl,) for c in RULE_CASES for impl in ("default", "simt") if impl == "default" or
                   c[0] != torch.float32]


@pytest.mark.parametrize("dtype,mask_dtype,value,impl", RULE_IMPL_CASES,
                         ids=[f"{str(c[0])[6:]}-{str(c[1])[6:]}-{c[2]:g}-{c[3]}" for c in RULE_IMPL_CASES])
def test_mask_rule_uses_the_masks_own_values(emu, dtype, mask_dtype, value, impl):
    """The kernels apply the rule to the mask's own value (a float32 1e-8 next to half q/k/v is
    not 0), in the forward (both implementations), the backward and the new mask."""
    g = torch.Generator().manual_seed(5)
    ws, s, heads, hd = 4, 2, 2, 8
    q, k, v = _make_qkv(1, 8, 8, heads * hd, dtype, "contiguous", g)
    mask = fractional_mask(value, mask_dtype)
    scale = hd ** -0.5
    _check_against_reference(emu, q, k, v, mask, ws, s, heads, scale, impl, g)


@pytest.mark.parametrize("dtype,impl", [(torch.float32, "default"), (torch.float16, "default"),
                                        (torch.float16, "simt")], ids=str)
def test_nan_in_the_mask_propagates_to_its_window(emu, dtype, impl):
    """As in the official op sequence: the NaN's (shifted) window gets NaN output rows and a NaN
    new mask; every other window equals the run without the NaN there."""
    g = torch.Generator().manual_seed(6)
    ws, s, heads = 4, 2, 2
    q, k, v = _make_qkv(2, 8, 8, 16, dtype, "contiguous", g)
    mask = (torch.rand(2, 8, 8, 1, generator=g) > 0.3).float()
    mask[1, 7, 0] = float("nan")
    hit = reference.window_mask_update(mask.isnan(), window_size=ws, shift_size=s)
    out, _, new_mask = emu_fwd(emu, q, k, v, mask, ws, s, heads, 0.25, force_simt=impl == "simt")
    assert hit.sum() == ws * ws
    assert out.isnan().all(-1, keepdim=True).eq(hit).all() and not out[~hit.expand_as(out)].isnan().any()
    assert torch.equal(new_mask.isnan(), hit)
    clean, _, clean_mask = emu_fwd(emu, q, k, v, mask.nan_to_num(1.0), ws, s, heads, 0.25,
                                   force_simt=impl == "simt")
    keep = ~hit.expand_as(out)
    assert torch.equal(out[keep], clean[keep]) and torch.equal(new_mask[~hit], clean_mask[~hit])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
def test_nan_propagates_in_the_mask_kernels(emu, dtype):
    mask = (torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(7)) > 0.3).to(dtype)
    mask[1, 7, 0] = float("nan")
    new = torch.empty_like(mask)
    _check(emu.emu_window_mask_update(_ptr(mask), DT[dtype], _strides(mask, 3), _ptr(new), 2, 8, 8, 4, 2))
    exp = reference.window_mask_update(mask, window_size=4, shift_size=2)
    assert exp.isnan().sum() == 16
    assert_mask_equal(new, exp)
    img = mask.unsqueeze(1)
    exp_new, exp_ratio = reference.partial_conv_mask_update(img, kernel_size=3, stride=1)
    new, ratio = torch.empty_like(exp_new), torch.empty_like(exp_ratio)
    _check(emu.emu_partial_conv_mask_update(_ptr(img), DT[dtype], _strides(img, 4), _ptr(new), _ptr(ratio),
                                            DT[dtype], 2, 8, 8, 8, 8, 3, 1))
    assert exp_new.isnan().sum() == 4
    assert_mask_equal(new, exp_new, name="new_mask")
    assert_mask_equal(ratio, exp_ratio, name="ratio")


def test_empty_batch_launches_nothing(emu):
    """B = 0: every launcher returns without an error (a CUDA grid of 0 blocks is one)."""
    q, k, v = _make_qkv(0, 8, 8, 16, torch.float16, "contiguous", torch.Generator())
    mask = torch.ones(0, 8, 8, 1)
    for simt in (False, True):
        out, lse, _ = emu_fwd(emu, q, k, v, mask, 4, 2, 2, 0.25, force_simt=simt)
    assert out.shape == q.shape
    emu_bwd(emu, torch.zeros_like(q), q, k, v, mask, out, lse, 4, 2, 2, 0.25)
    _check(emu.emu_window_mask_update(_ptr(mask), DT[mask.dtype], _strides(mask, 3), _ptr(mask), 0, 8, 8, 4, 2))
    img = mask.view(0, 1, 8, 8)
    _check(emu.emu_partial_conv_mask_update(_ptr(img), 0, _strides(img, 4), _ptr(img), _ptr(img), 0, 0, 8, 8, 4, 4,
                                            3, 2))
