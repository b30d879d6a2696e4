"""What is specific to the Triton window attention: mask forms, strides, tilings, the launchers,
autocast and torch.compile. The case list every backend runs is in tests/test_ops.py; all checks
go through mat_kernels.testing.check_window_attention.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET=1 before any kernel module is imported); with one, the same tests run on CUDA.
The full cartesian product of the case parameters is ``@pytest.mark.extended``.
"""
from __future__ import annotations

import itertools
import os
import types

import pytest
import torch

from mat_kernels import ops, reference
from mat_kernels.testing import MASK_PATTERNS, assert_close, assert_mask_equal, check_window_attention, make_mask

pytest.importorskip("triton")
from mat_kernels.triton import window_attention as kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1", allow_module_level=True)

OP = "window_attention"


def _inputs(B, H, W, C, dtype, fused=False, seed=0):
    """q, k, v (B, H, W, C) and the leaves to differentiate. ``fused``: q, k, v are chunks of one
    (B, H, W, 3C) projection (non-contiguous views, as a fused qkv linear produces)."""
    g = torch.Generator().manual_seed(seed)
    if fused:
        qkv = torch.randn(B, H, W, 3 * C, generator=g).to(DEVICE, dtype).requires_grad_()
        q, k, v = qkv.chunk(3, dim=-1)
        return (q, k, v), (qkv,)
    q, k, v = (torch.randn(B, H, W, C, generator=g).to(DEVICE, dtype).requires_grad_() for _ in range(3))
    return (q, k, v), (q, k, v)


def check_against_reference(*args, **kw):
    return check_window_attention("triton", *args, device=DEVICE, **kw)


def _triton(q, k, v, mask, **kw):
    return ops.window_attention(q, k, v, mask, backend="triton", **kw)


@pytest.mark.parametrize("mask_form", ["bool", "bool_3d", "float_3d", "float16"])
def test_mask_dtypes_and_shapes(mask_form):
    """bool (any-rule update, bool result) and (B, H, W) masks keep their dtype and shape."""
    B, H, W, ws = 1, 16, 16, 8
    g = torch.Generator().manual_seed(3)
    m = torch.rand(B, H, W, 1, generator=g) > 0.7
    m[0, :8, :8] = False  # an all-hole window
    if mask_form == "bool":
        mask = m
    elif mask_form == "bool_3d":
        mask = m[..., 0]
    elif mask_form == "float_3d":
        mask = m[..., 0].float()
    else:
        mask = m.half()
    check_against_reference(B, H, W, 2, 30, ws, 3, mask)


def test_fractional_float_mask():
    """Values other than 0/1 are added to the scores as they are; the update clamps the sum."""
    B, H, W, ws = 1, 16, 16, 8
    g = torch.Generator().manual_seed(4)
    values = torch.tensor([0.0, 1.0, 0.5, 0.25, -0.75])
    mask = values[torch.randint(len(values), (B, H, W, 1), generator=g)]
    mask[0, :8, :8] = 0
    mask[0, 2, 3] = 0.25  # window sum 0.25: update keeps the fraction
    mask[0, 8:, :8] = 0
    mask[0, 9, 1], mask[0, 12, 5] = 0.5, -0.75  # window sum -0.25: update clamps to 0
    check_against_reference(B, H, W, 2, 30, ws, 0, mask)
    # and shifted: the windows move, the rule does not
    check_against_reference(B, H, W, 2, 30, ws, 4, mask)


def test_non_contiguous_inputs():
    """q, k, v as chunks of one (B, H, W, 3C) tensor, and a mask that is a strided view."""
    B, H, W, ws = 2, 16, 16, 8
    g = torch.Generator().manual_seed(5)
    big = (torch.rand(B, H, 2 * W, 2, generator=g) > 0.4).float()
    mask = big[:, :, ::2, 1:]  # (B, H, W, 1) with strides (4HW, 4W, 4, 1)
    assert not mask.is_contiguous()
    check_against_reference(B, H, W, 2, 30, ws, 4, mask, fused=True)
    check_against_reference(1, H, W, 2, 30, 16, 0, None, fused=True)


def test_channels_last_like_strides():
    """q with a permuted memory layout (strides not in (B, H, W, C) order)."""
    B, H, W, heads, d, ws = 1, 16, 16, 2, 30, 8
    x = torch.randn(B, heads * d, H, W, dtype=torch.float32, device=DEVICE)
    q = x.permute(0, 2, 3, 1)  # stride of C is H*W
    k, v = torch.randn_like(q), torch.randn_like(q)
    out, _ = _triton(q, k, v, None, window_size=ws, shift_size=3, num_heads=heads)
    ref, _ = reference.window_attention(q.double(), k.double(), v.double(), None, window_size=ws,
                                        shift_size=3, num_heads=heads)
    assert_close(out, ref, OP, "fwd")


def test_all_holes_equals_plain_attention():
    """A window with no valid token degrades to ordinary attention (softmax shift invariance)."""
    B, H, W, heads, d, ws = 1, 16, 16, 2, 30, 8
    (q, k, v), _ = _inputs(B, H, W, heads * d, torch.float32)
    holes = torch.zeros(B, H, W, 1, device=DEVICE)
    out, new_mask = _triton(q, k, v, holes, window_size=ws, shift_size=0, num_heads=heads)
    plain, none_mask = _triton(q, k, v, None, window_size=ws, shift_size=0, num_heads=heads)
    assert none_mask is None
    assert torch.equal(new_mask, holes)
    assert_close(out, plain, OP, "fwd")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype):
    """fp16/bf16 inputs against the reference in float32, with the table's tolerances."""
    g = torch.Generator().manual_seed(6)
    mask = make_mask("random", 1, 16, 16, 8, generator=g, dtype=torch.float32)
    check_against_reference(1, 16, 16, 2, 30, 8, 4, mask, dtype=dtype)


def test_bf16_new_mask_rounds_fractional_sums_to_nearest():
    """Issue #16, finding 4: the interpreter's fp32 -> bf16 cast truncates; the kernels round to
    nearest even as the GPU (and torch.sum) do, so bf16 new masks with fractional window sums
    are bit-exact. Masks of multiples of 1/1024 (exact in bf16) sum exactly in fp32; their sums
    have up to 10 significant bits, more than bf16's 8, so the sums must be rounded."""
    B, H, W, ws = 1, 16, 16, 8
    rounded = truncated_differs = 0
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        frac = torch.randint(1, 256, (B, H, W, 1), generator=g) / 1024.0
        mask = (frac * (torch.rand(B, H, W, 1, generator=g) < 0.05)).to(torch.bfloat16)
        sums = mask.float().view(B, H // ws, ws, W // ws, ws).sum(dim=(2, 4)).flatten()
        bits = sums.view(torch.int32)
        truncated_differs += int((((bits & 0xFFFF) > 0x8000) & (sums < 1)).sum())  # rn != truncation
        rounded += int(((bits & 0xFFFF) != 0).sum())
        check_against_reference(B, H, W, 1, 16, ws, 0, mask, dtype=torch.bfloat16, seed=seed, backward=False)
    assert truncated_differs > 0 and rounded > 0, "no window sum needed rounding up: the test cannot fail"


def test_bf16_one_valid_token_scale_2_5():
    """Issue #16, findings 4 and 8: bf16, window 13, one valid token per window, scale 2.5. The
    output is a valid token's v up to rounding; with the interpreter's truncating bf16 casts it
    was 1 ulp off (8500 x the reference's own bf16 error), and dq / dk 25000 x. Checked by the
    rule relative to the reference's own error in bf16."""
    mask = make_mask("one_valid_per_window", 2, 13, 26, 13, generator=torch.Generator().manual_seed(1),
                     dtype=torch.float32)
    check_against_reference(2, 13, 26, 1, 30, 13, 0, mask, dtype=torch.bfloat16, scale=2.5)


def test_saturated_softmax_backward():
    """Issue #16, finding 7: logits ~1e6 (|q|, |k| ~ 1e3) make the softmax one-hot; the output is
    exact and the true dq, dk are 0. The Triton backward's delta and dP are summed in different
    orders (see the module docstring of mat_kernels.triton.window_attention), so dq, dk are their
    rounding noise: checked against the documented bound scale * 2 gamma_D |dO| |v| times |k|
    (dq) or the sum of |q| over the queries (dk). dv (the same as the reference's) is checked on
    a GPU only: in the interpreter numpy's matmul is not transpose-consistent (documented)."""
    B, H, W, D, ws = 1, 8, 8, 32, 8
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, W, D, generator=g, dtype=torch.float64) * a for a in (1e3, 1e3, 1.0))
    leaves = [t.float().to(DEVICE).requires_grad_() for t in (q, k, v)]
    out, _ = _triton(*leaves, None, window_size=ws, num_heads=1)
    dout = torch.randn(out.shape, generator=g)
    dq, dk, dv = (t.double().cpu() for t in torch.autograd.grad(out, leaves, dout.to(DEVICE)))
    rq, rk, rv = (t.detach().double().cpu().requires_grad_() for t in leaves)
    ref, _ = reference.window_attention(rq, rk, rv, None, window_size=ws, num_heads=1)
    exp_dq, exp_dk, exp_dv = torch.autograd.grad(ref, (rq, rk, rv), dout.double())
    assert exp_dq.abs().max() < 1e-300 and exp_dk.abs().max() < 1e-300, "the case is not saturated"
    assert_close(out, ref, OP, "fwd", name="out")
    u = 2.0 ** -24
    gamma = D * u / (1 - D * u)
    scale = D ** -0.5
    noise = scale * 2 * gamma * dout.double().norm(dim=-1).max() * rv.detach().norm(dim=-1).max()
    assert (dq - exp_dq).abs().max() <= noise * rk.detach().abs().max()
    assert (dk - exp_dk).abs().max() <= noise * rq.detach().abs().sum(dim=(1, 2)).max()
    if DEVICE == "cuda":
        assert_close(dv, exp_dv, OP, "bwd", dtype=torch.float32, name="dv")


def test_custom_scale_and_small_window():
    """scale argument, a window of 49 tokens (padded to a 64-token tile) and head_dim 128."""
    B, H, W, heads, d, ws = 1, 14, 14, 1, 128, 7
    (q, k, v), leaves = _inputs(B, H, W, heads * d, torch.float32)
    mask = (torch.rand(B, H, W, 1) > 0.5).float().to(DEVICE)
    out, nm = _triton(q, k, v, mask, window_size=ws, shift_size=2, num_heads=heads, scale=0.05)
    rq, rk, rv = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, rm = reference.window_attention(rq, rk, rv, mask, window_size=ws, shift_size=2, num_heads=heads, scale=0.05)
    assert_close(out, ref, OP, "fwd")
    assert_mask_equal(nm, rm)
    dout = torch.randn_like(out)
    for got, exp, name in zip(torch.autograd.grad(out, (q, k, v), dout),
                              torch.autograd.grad(ref, (rq, rk, rv), dout.double()), ("dq", "dk", "dv")):
        assert_close(got, exp, OP, "bwd", name=name)


def test_device_tiles(monkeypatch):
    """The GPU tiling (several query and key tiles per 256-token window, mask update by the
    first query tile only) in the interpreter: fp16's 64-token tiles with fp32 inputs."""
    monkeypatch.setattr(kernels, "kernel_config",
                        lambda ws, hd, dt: kernels.device_config(ws, hd, torch.float16))
    assert kernels.kernel_config(16, 30, torch.float32)["BLOCK_M"] == 64
    g = torch.Generator().manual_seed(9)
    mask = make_mask("large_hole", 1, 16, 16, 16, generator=g, dtype=torch.float32)
    check_against_reference(1, 16, 16, 2, 30, 16, 5, mask)


def test_device_tiles_fp32(monkeypatch):
    """fp32's GPU tiling in the interpreter: unequal query and key tiles, different per kernel
    (forward 16 x 32, dk/dv and dq their own overrides, so grids and loops differ), with a shift
    on a 3 x 2 window grid (last-row and last-column shift regions, rectangular image) and a
    mask."""
    monkeypatch.setattr(kernels, "kernel_config",
                        lambda ws, hd, dt: kernels.device_config(ws, hd, torch.float32))
    cfg = kernels.kernel_config(8, 30, torch.float32)
    assert (cfg["BLOCK_M"], cfg["BLOCK_N"]) == (16, 32)
    assert kernels.kernel_tiles(cfg, "dkdv")["BLOCK_N"] != kernels.kernel_tiles(cfg, "dq")["BLOCK_M"] or \
        kernels.kernel_tiles(cfg, "dkdv")["BLOCK_M"] != cfg["BLOCK_M"]
    g = torch.Generator().manual_seed(11)
    mask = make_mask("random", 1, 24, 16, 8, generator=g, dtype=torch.float32)
    check_against_reference(1, 24, 16, 1, 30, 8, 4, mask)


def test_ops_dispatches_to_triton(monkeypatch):
    """ops.window_attention(backend="triton") reaches the fused forward and backward launchers."""
    calls = []
    fwd, bwd = kernels.window_attention_fwd, kernels.window_attention_bwd
    monkeypatch.setattr(kernels, "window_attention_fwd", lambda *a, **kw: (calls.append("fwd"), fwd(*a, **kw))[1])
    monkeypatch.setattr(kernels, "window_attention_bwd", lambda *a, **kw: (calls.append("bwd"), bwd(*a, **kw))[1])
    B, H, W, heads, d, ws = 1, 16, 16, 2, 30, 8
    (q, k, v), leaves = _inputs(B, H, W, heads * d, torch.float32)
    mask = (torch.rand(B, H, W, 1) > 0.5).float().to(DEVICE)
    out, nm = ops.window_attention(q, k, v, mask, window_size=ws, shift_size=4, num_heads=heads, backend="triton")
    out.sum().backward()
    assert calls == ["fwd", "bwd"]
    rq, rk, rv = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, rm = reference.window_attention(rq, rk, rv, mask, window_size=ws, shift_size=4, num_heads=heads)
    ref.sum().backward()
    assert_close(out, ref, OP, "fwd")
    assert_mask_equal(nm, rm)
    for t, r, name in zip((q, k, v), (rq, rk, rv), ("dq", "dk", "dv")):
        assert_close(t.grad, r.grad, OP, "bwd", name=name)


def test_backend_entry_is_the_op_not_the_kernel_module():
    """The registry's Triton entry is the ``torch.library`` op (mat_kernels.triton.ENTRY_POINTS),
    which the kernel submodule of the same name cannot shadow; without a mask its new mask is empty."""
    import mat_kernels.triton.window_attention  # noqa: F401  (the submodule, imported first)
    from mat_kernels import backends
    fn = backends.choose("window_attention", "triton", dict(device=torch.device(DEVICE), dtype=torch.float32,
                                                            head_dim=16, window_size=8))
    assert callable(fn) and not isinstance(fn, types.ModuleType)
    (q, k, v), _ = _inputs(1, 8, 8, 16, torch.float32)
    out, lse, nm = fn(q, k, v, None, 8, 0, 1, 16 ** -0.5)
    assert nm.numel() == 0 and out.shape == q.shape and lse.dtype == torch.float32


def test_rejects_unsupported_dtype():
    """The backend refuses float64 with a reason naming the dtype (the reference handles it)."""
    q = torch.randn(1, 8, 8, 16, dtype=torch.float64, device=DEVICE)
    with pytest.raises(RuntimeError, match="dtype"):
        ops.window_attention(q, q, q, None, window_size=8, num_heads=1, backend="triton")


def test_mask_gets_no_gradient():
    B, H, W, ws = 1, 8, 8, 8
    (q, k, v), _ = _inputs(B, H, W, 16, torch.float32)
    mask = torch.rand(B, H, W, 1, device=DEVICE).round().requires_grad_()
    out, nm = _triton(q, k, v, mask, window_size=ws, num_heads=1)
    assert not nm.requires_grad
    out.sum().backward()
    assert mask.grad is None
    assert q.grad is not None


def test_compile_fullgraph_cpu():
    """torch.compile(fullgraph=True) traces through the triton_op (aot_eager keeps the kernels
    on the interpreter on CPU); forward and backward equal eager."""
    B, H, W, heads, d, ws = 1, 16, 16, 2, 16, 8
    (q, k, v), _ = _inputs(B, H, W, heads * d, torch.float32)
    mask = (torch.rand(B, H, W, 1) > 0.5).float().to(DEVICE)

    def f(q, k, v, mask):
        out, nm = _triton(q, k, v, mask, window_size=ws, shift_size=4, num_heads=heads)
        return out, nm

    backend = "inductor" if DEVICE == "cuda" else "aot_eager"
    cf = torch.compile(f, fullgraph=True, backend=backend)
    out, nm = cf(q, k, v, mask)
    eo, en = f(q, k, v, mask)
    assert torch.equal(nm, en)
    assert_close(out, eo, OP, "fwd")
    g1 = torch.autograd.grad(out.sum(), (q, k, v))
    g2 = torch.autograd.grad(eo.sum(), (q, k, v))
    for a, b in zip(g1, g2):
        assert_close(a, b, OP, "bwd")


# ----------------------------------------------------------------------------------------------
# extended: the full cartesian product
# ----------------------------------------------------------------------------------------------
FULL = [c for c in itertools.product((1, 2), ((16, 16), (32, 32), (16, 48)), (1, 6), (30, 32, 64),
                                     ((8, 0), (8, 4), (8, 3), (16, 0), (16, 8), (16, 3)), MASK_PATTERNS)]


@pytest.mark.extended
@pytest.mark.parametrize("B,grid,heads,head_dim,ws_shift,pattern", FULL,
                         ids=[f"B{c[0]}-{c[1][0]}x{c[1][1]}-h{c[2]}-d{c[3]}-ws{c[4][0]}s{c[4][1]}-{c[5]}" for c in FULL])
def test_full_product(B, grid, heads, head_dim, ws_shift, pattern):
    (H, W), (ws, shift) = grid, ws_shift
    g = torch.Generator().manual_seed(2)
    mask = make_mask(pattern, B, H, W, ws, generator=g, dtype=torch.float32)
    check_against_reference(B, H, W, heads, head_dim, ws, shift, mask)


def test_swin_block_triton_backend_matches_reference():
    """The Swin block on the Triton backend (q, k as strided halves of the fused q/k GEMM)
    equals the block on the reference backend, forward, mask and input gradient."""
    from mat_kernels.models import set_backend
    from mat_kernels.nn import SwinTransformerBlock
    torch.manual_seed(0)
    H = W = 16
    blk = SwinTransformerBlock(32, (H, W), 2, window_size=8, shift_size=4, mlp_ratio=2.0).to(DEVICE)
    x = torch.randn(1, H * W, 32, device=DEVICE, requires_grad=True)
    mask = (torch.rand(1, H * W, 1) > 0.5).float().to(DEVICE)
    blk.backend = "reference"
    ref, ref_mask = blk(x, (H, W), mask)
    (rgx,) = torch.autograd.grad(ref.sum(), x)
    blk.backend = "triton"
    y, m = blk(x, (H, W), mask)
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert_mask_equal(m, ref_mask)
    assert_close(y, ref, "swin_block", "fwd")
    assert_close(gx, rgx, "swin_block", "bwd", name="dx")


def test_autocast_casts_qkv_not_mask():
    """Under autocast, q, k, v run in the autocast dtype (the wrapper casts them, like PyTorch's
    own attention ops); the mask and the updated mask keep the mask's dtype."""
    B, H, W, heads, d, ws = 1, 8, 8, 2, 16, 8
    q, k, v = (torch.randn(B, H, W, heads * d, device=DEVICE) for _ in range(3))
    mask = (torch.rand(B, H, W, 1) > 0.5).float().to(DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        out, nm = _triton(q, k, v, mask, window_size=ws, shift_size=3, num_heads=heads)
    assert out.dtype == torch.bfloat16 and nm.dtype == torch.float32
    exp, exp_mask = _triton(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, window_size=ws,
                                        shift_size=3, num_heads=heads)
    assert torch.equal(out, exp)
    assert_mask_equal(nm, exp_mask)


def test_compile_swin_block_fullgraph_cpu():
    """torch.compile(fullgraph=True) of the Swin block on the Triton backend: no graph break."""
    from mat_kernels.models import set_backend
    from mat_kernels.nn import SwinTransformerBlock
    torch.manual_seed(0)
    H = W = 16
    blk = SwinTransformerBlock(32, (H, W), 2, window_size=8, shift_size=4, mlp_ratio=2.0).to(DEVICE)
    x = torch.randn(1, H * W, 32, device=DEVICE)
    mask = (torch.rand(1, H * W, 1) > 0.5).float().to(DEVICE)
    blk.backend = "reference"
    ref, ref_mask = blk(x, (H, W), mask)
    set_backend(blk, "triton")  # imports the backend before tracing (in a fresh process too)
    compiled = torch.compile(blk, fullgraph=True, backend="inductor" if DEVICE == "cuda" else "aot_eager")
    y, m = compiled(x, (H, W), mask)
    assert_mask_equal(m, ref_mask)
    assert_close(y, ref, "swin_block", "fwd")
