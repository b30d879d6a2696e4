"""The reference attention against an independent, deliberately naive loop in float64."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from mat_kernels import reference
from mat_kernels.testing import assert_close, assert_mask_equal

from mat_kernels.testing import MASK_PATTERNS, make_mask


def naive_window_attention(q, k, v, mask, window_size, shift_size, num_heads, scale=None):
    """Per-window, per-head loops over explicit image coordinates; written from the paper's
    description, sharing no code with the package."""
    B, H, W, C = q.shape
    d = C // num_heads
    scale = d ** -0.5 if scale is None else scale
    ws, s = window_size, shift_size
    out = torch.zeros_like(q)
    new_mask = None if mask is None else torch.zeros_like(mask)

    def region(coord, n):  # region of a coordinate of the rolled frame
        if s == 0:
            return 0
        return 0 if coord < n - ws else (1 if coord < n - s else 2)

    for b in range(B):
        for wy in range(H // ws):
            for wx in range(W // ws):
                # tokens of this window in the rolled frame, mapped back to image positions
                pos = [((wy * ws + ty + s) % H, (wx * ws + tx + s) % W) for ty in range(ws) for tx in range(ws)]
                rid = [3 * region(wy * ws + ty, H) + region(wx * ws + tx, W) for ty in range(ws) for tx in range(ws)]
                ys = torch.tensor([p[0] for p in pos])
                xs = torch.tensor([p[1] for p in pos])
                rid = torch.tensor(rid)
                bias = torch.where(rid[:, None] != rid[None, :], -100.0, 0.0).to(q.dtype)
                if mask is not None:
                    mv = mask[b, ys, xs].reshape(-1).to(q.dtype)
                    keyb = torch.where(mv == 0, torch.full_like(mv, -100.0),
                                       torch.where(mv == 1, torch.zeros_like(mv), mv))
                    bias = bias + keyb[None, :]
                    upd = min(max(mv.sum().item(), 0.0), 1.0)
                    val = (upd > 0) if mask.dtype == torch.bool else upd
                    new_mask[b, ys, xs] = val
                for h in range(num_heads):
                    ch = slice(h * d, (h + 1) * d)
                    qh, kh, vh = q[b, ys, xs, ch], k[b, ys, xs, ch], v[b, ys, xs, ch]
                    logits = (qh @ kh.T) * scale + bias
                    p = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
                    p = p / p.sum(dim=1, keepdim=True)
                    out[b, ys, xs, ch] = p @ vh
    return out, new_mask


WINDOWS = (8, 16)
SHIFTS = ("zero", "half")
GRIDS = ((16, 16), (32, 32), (16, 32))
HEADS = (1, 6)
HEAD_DIMS = (30, 32)
BATCHES = (1, 3)


def _cases(full: bool):
    base = list(itertools.product(WINDOWS, SHIFTS, GRIDS, MASK_PATTERNS))
    if full:
        return [c + extra for c in base for extra in itertools.product(HEADS, HEAD_DIMS, BATCHES)]
    # Default run: every (window, shift, grid, mask) combination, with heads, head_dim and
    # batch cycled so that each pair of their values meets several times.
    combos = list(itertools.product(HEADS, HEAD_DIMS, BATCHES))
    return [c + combos[i % len(combos)] for i, c in enumerate(base)]


def _run_case(window, shift, grid, pattern, heads, head_dim, batch):
    H, W = grid
    shift = 0 if shift == "zero" else window // 2
    C = heads * head_dim
    g = torch.Generator().manual_seed(hash((window, shift, grid, pattern, heads, head_dim, batch)) % 2**31)
    q, k, v = (torch.randn(batch, H, W, C, generator=g, dtype=torch.float64) for _ in range(3))
    mask = make_mask(pattern, batch, H, W, window, generator=g)
    out, new = reference.window_attention(q, k, v, mask, window_size=window, shift_size=shift, num_heads=heads)
    exp_out, exp_new = naive_window_attention(q, k, v, mask, window, shift, heads)
    assert_close(out, exp_out, "window_attention", "fwd")
    assert_mask_equal(new, exp_new)


@pytest.mark.parametrize("window,shift,grid,pattern,heads,head_dim,batch", _cases(full=False))
def test_reference_matches_naive_loop(window, shift, grid, pattern, heads, head_dim, batch):
    _run_case(window, shift, grid, pattern, heads, head_dim, batch)


@pytest.mark.extended
@pytest.mark.parametrize("window,shift,grid,pattern,heads,head_dim,batch", _cases(full=True))
def test_reference_matches_naive_loop_full(window, shift, grid, pattern, heads, head_dim, batch):
    _run_case(window, shift, grid, pattern, heads, head_dim, batch)


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("mask_kind", ["none", "float", "bool", "bool_3d"])
def test_gradcheck_float64(shift, mask_kind):
    B, H, W, heads, d = 1, 8, 4, 2, 2  # two windows of 4x4: small, so the full Jacobian is cheap
    q, k, v = (torch.randn(B, H, W, heads * d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = None
    if mask_kind != "none":
        mask = torch.rand(B, H, W, 1) > 0.4
        mask = {"float": mask.double(), "bool": mask, "bool_3d": mask[..., 0]}[mask_kind]
    fn = lambda q, k, v: reference.window_attention(q, k, v, mask, window_size=4, shift_size=shift,
                                                    num_heads=heads)[0]
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-7)


def test_default_scale_is_head_dim_power():
    q, k, v = (torch.randn(1, 8, 8, 12, dtype=torch.float64) for _ in range(3))
    a, _ = reference.window_attention(q, k, v, window_size=8, num_heads=2)
    b, _ = reference.window_attention(q, k, v, window_size=8, num_heads=2, scale=6 ** -0.5)
    c, _ = reference.window_attention(q, k, v, window_size=8, num_heads=2, scale=1.0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
