"""The sdpa backend (mat_kernels/sdpa): what tests/test_ops.py and the property suite do not
reach (windows up to 32, head_dim 1 and 128, the bias it builds), torch.compile of it, and how
``auto`` ranks it (tests/test_ops.py and tests/test_ops_properties.py run it on every case)."""
from __future__ import annotations

import pytest
import torch

from mat_kernels import backends, reference
from mat_kernels.reference.attention import key_validity_bias
from mat_kernels.sdpa import window_bias
from mat_kernels.testing import assert_close, check_window_attention, make_mask

CPU = torch.device("cpu")


@pytest.mark.parametrize("B,G,heads,head_dim,ws,shift,pattern", [
    (1, 32, 1, 8, 32, 0, "random"),          # the largest window: 1024 tokens
    (1, 32, 2, 4, 32, 16, "large_hole"),
    (2, 4, 2, 128, 1, 0, "random"),          # window 1, the widest head
    (1, 8, 3, 1, 4, 2, "one_valid_per_window"),  # head_dim 1
])
def test_sdpa_windows_and_head_dims_at_the_limits(B, G, heads, head_dim, ws, shift, pattern):
    mask = make_mask(pattern, B, G, G, ws, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    check_window_attention("sdpa", B, G, G, heads, head_dim, ws, shift, mask)


def test_bias_is_one_tensor_per_window_shared_by_the_heads():
    B, H, W, ws, s = 2, 16, 8, 4, 2
    N, nW = ws * ws, (H // ws) * (W // ws)
    m = make_mask("random", B, H, W, ws, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    mw = reference.to_windows(m, ws, s)
    both = window_bias(B, H, W, ws, s, mw, CPU, torch.float32)
    assert both.shape == (B * nW, 1, N, N)
    shift = reference.shift_attention_bias(H, W, ws, s).repeat(B, 1, 1).unsqueeze(1)
    torch.testing.assert_close(both, shift + key_validity_bias(mw), rtol=0, atol=0)
    key = window_bias(B, H, W, ws, 0, reference.to_windows(m, ws, 0), CPU, torch.float32)
    assert key.shape == (B * nW, 1, 1, N)  # broadcast over heads and queries
    assert window_bias(B, H, W, ws, 0, None, CPU, torch.float32) is None
    assert window_bias(B, H, W, ws, s, None, CPU, torch.float32).shape == (B * nW, 1, N, N)


def test_compiled_swin_block_on_sdpa_matches_eager():
    from mat_kernels.nn import SwinTransformerBlock
    torch.manual_seed(0)
    blk = SwinTransformerBlock(dim=24, input_resolution=(8, 8), num_heads=2, window_size=4, shift_size=2)
    blk.backend = "sdpa"
    x = torch.randn(2, 64, 24, requires_grad=True)
    mask = (torch.rand(2, 64, 1) > 0.4).float()
    out, new_mask = blk(x, (8, 8), mask)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    compiled = torch.compile(blk, fullgraph=True)
    c_out, c_mask = compiled(x, (8, 8), mask)
    (c_g,) = torch.autograd.grad(c_out.square().sum(), x)
    assert_close(c_out, out, "compiled", "fwd", torch.float32)
    assert_close(c_g, g, "compiled", "bwd", torch.float32)
    assert torch.equal(c_mask, new_mask)


def test_sdpa_mask_rules_and_bias_act_are_the_reference_functions():
    """The sdpa backend has no SDPA form of these: they are the reference's own (tested there)."""
    from mat_kernels import reference as ref_backend, sdpa as sdpa_backend
    for op in ("window_mask_update", "partial_conv_mask_update", "bias_act"):
        assert sdpa_backend.ENTRY_POINTS[op] is ref_backend.ENTRY_POINTS[op], op
