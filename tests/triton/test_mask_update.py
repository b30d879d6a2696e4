"""Triton mask-update kernels vs the reference: bit-identical masks and ratios.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET=1 before any kernel module is imported); with one, the same tests run on CUDA.
Each case stacks every mask pattern along the batch, so one launch covers them all.
"""
from __future__ import annotations

import os

import pytest
import torch

from mat_kernels import ops, reference
from mat_kernels.testing import assert_mask_equal

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1", allow_module_level=True)

def window_mask_update(mask, **kw):
    return ops.window_mask_update(mask, backend="triton", **kw)


def partial_conv_mask_update(mask, **kw):
    return ops.partial_conv_mask_update(mask, backend="triton", **kw)


PATTERNS = ("none_valid", "all_valid", "random", "sparse", "one_token", "big_hole", "fractional")


def _pattern(name: str, H: int, W: int, g: torch.Generator) -> torch.Tensor:
    """One (H, W) float32 mask, 1 valid / 0 hole."""
    if name == "none_valid":
        return torch.zeros(H, W)
    if name == "all_valid":
        return torch.ones(H, W)
    if name == "random":
        return (torch.rand(H, W, generator=g) < 0.5).float()
    if name == "sparse":  # most windows have no valid token, some have one or two
        return (torch.rand(H, W, generator=g) < 0.01).float()
    if name == "one_token":  # in the last row/column: only a shifted window wraps it
        m = torch.zeros(H, W)
        m[H - 1, W - 2] = 1
        return m
    if name == "big_hole":  # a hole crossing window and shift-region borders, with a valid island
        m = torch.ones(H, W)
        m[H // 4: H - 2, 3: W - 1] = 0
        m[H // 2, W // 2] = 1
        return m
    if name == "fractional":
        # Multiples of 1/256 (like an anti-aliased 8-bit PNG), mostly zero so that many window
        # sums stay below 1. Few mantissa bits: every summation order is exact, so the reference
        # and the kernel must agree bit for bit.
        vals = torch.randint(0, 256, (H, W), generator=g).float() / 256
        return vals * (torch.rand(H, W, generator=g) < 0.05)
    raise ValueError(name)


def _masks(H: int, W: int, patterns=PATTERNS, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([_pattern(p, H, W, g) for p in patterns])  # (len(patterns), H, W)


# ----------------------------------------------------------------------------------------------
# window_mask_update
# ----------------------------------------------------------------------------------------------
WINDOW_CASES = [(H, W, ws, s) for H, W in ((16, 16), (32, 32), (16, 48)) for ws in (8, 16)
                for s in sorted({0, ws // 2, 3})]


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
@pytest.mark.parametrize("H,W,ws,shift", WINDOW_CASES)
def test_window_mask_update_matches_reference(H, W, ws, shift, dtype):
    patterns = PATTERNS if dtype != torch.bool else PATTERNS[:-1]
    m = _masks(H, W, patterns).unsqueeze(-1)
    m = (m > 0) if dtype == torch.bool else m.to(dtype)
    m = m.to(DEVICE)
    got = window_mask_update(m, window_size=ws, shift_size=shift)
    want = reference.window_mask_update(m.cpu(), window_size=ws, shift_size=shift)
    assert_mask_equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_window_mask_update_other_dtypes(dtype):
    m = _masks(16, 32).to(dtype).unsqueeze(-1).to(DEVICE)
    for ws, shift in ((8, 4), (16, 3)):
        got = window_mask_update(m, window_size=ws, shift_size=shift)
        assert_mask_equal(got, reference.window_mask_update(m.cpu(), window_size=ws, shift_size=shift))


def test_window_mask_update_layouts():
    """(B, H, W) masks, batch 1, a non-contiguous input and the window equal to the grid."""
    full = _masks(16, 32, ("random", "sparse"), seed=1)
    cases = [
        (full[:1].to(DEVICE), 8, 4),                                   # (B, H, W), batch 1
        ((full > 0).to(DEVICE), 8, 3),                                 # (B, H, W) bool
        (full.transpose(1, 2).unsqueeze(-1).to(DEVICE), 8, 4),         # non-contiguous (B, 32, 16, 1)
        (full[:, :, :16].unsqueeze(-1).to(DEVICE), 16, 0),             # a single window
    ]
    for m, ws, shift in cases:
        got = window_mask_update(m, window_size=ws, shift_size=shift)
        assert got.is_contiguous()
        assert_mask_equal(got, reference.window_mask_update(m.cpu(), window_size=ws, shift_size=shift))


def test_window_mask_update_rule_by_hand():
    """Independent of the reference: shift 4 on a 16x16 grid with one valid token at (15, 15).

    In the rolled frame that token sits at (11, 11), in the window covering rows/cols 8..15 of the
    rolled grid, i.e. un-shifted rows/cols 12..15 and 0..3 (wrapping). Exactly those 64 tokens
    become valid."""
    m = torch.zeros(1, 16, 16, 1)
    m[0, 15, 15] = 1
    got = window_mask_update(m.to(DEVICE), window_size=8, shift_size=4).cpu()[0, :, :, 0]
    idx = torch.tensor([12, 13, 14, 15, 0, 1, 2, 3])
    want = torch.zeros(16, 16)
    want[idx[:, None], idx[None, :]] = 1
    assert torch.equal(got, want)


# ----------------------------------------------------------------------------------------------
# partial_conv_mask_update
# ----------------------------------------------------------------------------------------------
# Odd and even sizes; kernel 3 with both strides everywhere, 5 and 7 on fewer sizes.
PCONV_CASES = [(16, 16, 3, 1), (16, 16, 3, 2), (16, 16, 5, 1), (16, 16, 7, 2),
               (17, 23, 3, 1), (17, 23, 3, 2), (15, 8, 3, 2), (15, 8, 5, 1), (15, 8, 7, 1)]


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
@pytest.mark.parametrize("H,W,k,stride", PCONV_CASES)
def test_partial_conv_mask_update_matches_reference(H, W, k, stride, dtype):
    patterns = PATTERNS if dtype != torch.bool else PATTERNS[:-1]
    m = _masks(H, W, patterns).unsqueeze(1)
    m = (m > 0) if dtype == torch.bool else m.to(dtype)
    new, ratio = partial_conv_mask_update(m.to(DEVICE), kernel_size=k, stride=stride)
    want_new, want_ratio = reference.partial_conv_mask_update(m, kernel_size=k, stride=stride)
    assert new.dtype == torch.float32 or dtype != torch.bool
    assert_mask_equal(new, want_new, "new_mask")
    assert_mask_equal(ratio, want_ratio, "ratio")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_partial_conv_mask_update_other_dtypes(dtype):
    """Binary and dyadic-fractional masks. fp16/bf16 are computed in float32 and rounded once
    (no NaN at holes, although 1e-8 underflows in fp16): the float32 result rounded to the dtype."""
    m = _masks(17, 12).unsqueeze(1).to(dtype)
    for k, stride in ((3, 1), (5, 2)):
        new, ratio = partial_conv_mask_update(m.to(DEVICE), kernel_size=k, stride=stride)
        want_new, want_ratio = reference.partial_conv_mask_update(m, kernel_size=k, stride=stride)
        assert new.dtype == dtype and ratio.dtype == dtype
        assert torch.isfinite(ratio).all() and (want_new == 0).any()
        assert_mask_equal(new, want_new, "new_mask")
        assert_mask_equal(ratio, want_ratio, "ratio")
        if dtype != torch.float64:
            new32, ratio32 = reference.partial_conv_mask_update(m.float(), kernel_size=k, stride=stride)
            assert_mask_equal(new, new32.to(dtype), "new_mask vs float32")
            assert_mask_equal(ratio, ratio32.to(dtype), "ratio vs float32")


def test_partial_conv_mask_update_by_hand():
    """Independent of the reference: all-valid 4x4 mask, k=3 -> corner 9/4, edge 9/6, inside 1."""
    new, ratio = partial_conv_mask_update(torch.ones(1, 1, 4, 4, device=DEVICE), kernel_size=3)
    counts = torch.tensor([[4., 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]])
    assert torch.equal(new.cpu()[0, 0], torch.ones(4, 4))
    assert torch.equal(ratio.cpu()[0, 0], (1 / counts) * 9)


def test_partial_conv_mask_update_non_contiguous():
    m = _masks(12, 20, ("random", "big_hole")).transpose(1, 2).unsqueeze(1)  # (2, 1, 20, 12) strided
    assert not m.is_contiguous()
    new, ratio = partial_conv_mask_update(m.to(DEVICE), kernel_size=3, stride=2)
    want_new, want_ratio = reference.partial_conv_mask_update(m, kernel_size=3, stride=2)
    assert_mask_equal(new, want_new, "new_mask")
    assert_mask_equal(ratio, want_ratio, "ratio")


# ----------------------------------------------------------------------------------------------
# The public ops with backend="triton", the torch.library registration and torch.compile
# ----------------------------------------------------------------------------------------------
def test_ops_dispatch_to_triton():
    m = _masks(16, 16, ("random", "sparse")).to(DEVICE)
    assert_mask_equal(ops.window_mask_update(m, window_size=8, shift_size=4, backend="triton"),
                      reference.window_mask_update(m.cpu(), window_size=8, shift_size=4))
    new, ratio = ops.partial_conv_mask_update(m.unsqueeze(1), kernel_size=3, stride=2, backend="triton")
    want_new, want_ratio = reference.partial_conv_mask_update(m.cpu().unsqueeze(1), kernel_size=3, stride=2)
    assert_mask_equal(new, want_new, "new_mask")
    assert_mask_equal(ratio, want_ratio, "ratio")


@pytest.mark.parametrize("call,exc,words", [
    (lambda d: ops.window_mask_update(torch.ones(16, 16, device=d), window_size=8, backend="triton"),
     ValueError, "mask"),
    (lambda d: ops.window_mask_update(torch.ones(1, 16, 16, 2, device=d), window_size=8, backend="triton"),
     ValueError, "mask must have shape"),
    (lambda d: ops.window_mask_update(torch.ones(1, 16, 16, device=d, dtype=torch.int32), window_size=8,
                                      backend="triton"), TypeError, "mask must be bool or floating"),
    (lambda d: ops.window_mask_update(torch.ones(1, 16, 24, device=d), window_size=16, backend="triton"),
     ValueError, "window_size=16 must divide"),
    (lambda d: ops.window_mask_update(torch.ones(1, 16, 16, device=d), window_size=8, shift_size=8,
                                      backend="triton"), ValueError, "shift_size"),
    (lambda d: ops.window_mask_update(torch.ones(1, 16, 16, device=d), window_size=0, backend="triton"),
     ValueError, "window_size must be a positive int"),
    (lambda d: ops.partial_conv_mask_update(torch.ones(1, 2, 8, 8, device=d), kernel_size=3, backend="triton"),
     ValueError, "mask must have shape (B, 1, H, W)"),
    (lambda d: ops.partial_conv_mask_update(torch.ones(1, 1, 8, 8, device=d), kernel_size=4, backend="triton"),
     ValueError, "kernel_size must be odd"),
    (lambda d: ops.partial_conv_mask_update(torch.ones(1, 1, 8, 8, device=d), kernel_size=3, stride=0,
                                            backend="triton"), ValueError, "stride must be a positive int"),
    (lambda d: ops.partial_conv_mask_update([[1.0]], kernel_size=3, backend="triton"),
     TypeError, "mask must be a torch.Tensor"),
])
def test_bad_inputs_raise_clear_errors(call, exc, words):
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
        call(DEVICE)


@pytest.mark.skipif(DEVICE != "cpu", reason="the CPU refusal is only reachable without a GPU")
def test_cpu_tensor_without_interpreter_is_refused(monkeypatch):
    from mat_kernels.triton import _common
    monkeypatch.setattr(_common, "interpreting", lambda: False)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        window_mask_update(torch.ones(1, 16, 16), window_size=8)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        partial_conv_mask_update(torch.ones(1, 1, 8, 8), kernel_size=3)


def test_opcheck():
    m = _masks(16, 16, ("random", "sparse")).to(DEVICE)
    for mask in (m.unsqueeze(-1), m > 0):
        torch.library.opcheck(torch.ops.mat_kernels.window_mask_update_triton.default, (mask, 8, 4))
    for mask in (m.unsqueeze(1), m.unsqueeze(1) > 0):
        torch.library.opcheck(torch.ops.mat_kernels.partial_conv_mask_update_triton.default, (mask, 3, 2))


def test_torch_compile_fullgraph():
    def step(token_mask, image_mask):
        new_tokens = window_mask_update(token_mask, window_size=8, shift_size=4)
        new_image, ratio = partial_conv_mask_update(image_mask, kernel_size=3, stride=2)
        return new_tokens, new_image, ratio

    m = _masks(16, 16, ("random", "sparse")).to(DEVICE)
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(m.unsqueeze(-1), m.unsqueeze(1)), step(m.unsqueeze(-1), m.unsqueeze(1))):
        assert_mask_equal(got, want)


# ----------------------------------------------------------------------------------------------
# MAT-sized shapes on a GPU
# ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("B,H,W,ws,shift", [(4, 64, 64, 8, 4), (4, 32, 32, 16, 8), (2, 16, 16, 16, 0),
                                            (2, 128, 96, 8, 4)])
def test_window_mask_update_mat_shapes_gpu(B, H, W, ws, shift):
    m = (torch.rand(B, H, W, 1, device="cuda") < 0.3).float()
    m[:, : H // 2] = 0
    for mask in (m, m > 0, m.half(), m.bfloat16()):
        assert_mask_equal(window_mask_update(mask, window_size=ws, shift_size=shift),
                          reference.window_mask_update(mask.cpu(), window_size=ws, shift_size=shift))


@pytest.mark.gpu
@pytest.mark.parametrize("B,H,W,k,stride", [(4, 512, 512, 3, 1), (4, 512, 512, 3, 2), (2, 256, 256, 3, 2),
                                            (2, 129, 77, 5, 1), (2, 64, 64, 7, 2)])
def test_partial_conv_mask_update_mat_shapes_gpu(B, H, W, k, stride):
    m = (torch.rand(B, 1, H, W, device="cuda") < 0.7).float()
    m[:, :, H // 3: H // 2] = 0
    frac = torch.randint(0, 256, m.shape, device="cuda").float() / 256 * (torch.rand(m.shape, device="cuda") < 0.05)
    for mask in (m, m > 0, frac, m.half(), m.bfloat16(), frac.half(), m.double()):
        new, ratio = partial_conv_mask_update(mask, kernel_size=k, stride=stride)
        # The reference runs on CPU: cuDNN may pick a Winograd/FFT algorithm whose count is not exact.
        want_new, want_ratio = reference.partial_conv_mask_update(mask.cpu(), kernel_size=k, stride=stride)
        assert_mask_equal(new, want_new, "new_mask")
        assert_mask_equal(ratio, want_ratio, "ratio")
