"""The drop-in modules: official outputs, official state-dict names, official behaviours."""
from __future__ import annotations

import re

import pytest
import torch

from mat_kernels.nn import SwinTransformerBlock, WindowAttention
from mat_kernels.reference import shift_attention_bias, window_partition
from mat_kernels.testing import assert_close


def _block_cases(cases):
    return [c for c in cases["cases"] if c["kind"] == "swin_block"]


def _block_case(cases, index):
    """The Swin block case at ``index`` of the full recorded file (the shipped subset keeps each
    case's position there as ``full_index``)."""
    for position, case in enumerate(cases["cases"]):
        if case.get("full_index", position) == index:
            return case
    pytest.skip(f"block case {index} is only in the full official_cases.pt (see the README's Tests section)")


def _block(case):
    r = case["resolution"]
    blk = SwinTransformerBlock(case["dim"], (r, r), case["num_heads"], window_size=case["window_size"],
                               shift_size=case["shift_size"], mlp_ratio=case["mlp_ratio"])
    blk.load_state_dict(case["state_dict"], strict=True)
    return blk.eval()


@pytest.mark.parametrize("index", range(6))
def test_block_reproduces_official_outputs(official_cases, index):
    case = _block_case(official_cases, index)
    blk = _block(case)
    r = case["resolution"]
    with torch.no_grad():
        out, new_mask = blk(case["x"], (r, r), case["mask"])
    assert_close(out, case["out"], "swin_block", "fwd")
    if case["mask"] is None:
        assert new_mask is None
    else:
        assert torch.equal(new_mask, case["new_mask"])
    if case["out_float64"] is not None:
        # In float64 the reference path reproduces the official float64 run to rounding.
        blk64 = blk.double()
        with torch.no_grad():
            out64, _ = blk64(case["x"].double(), (r, r), None if case["mask"] is None else case["mask"].double())
        assert_close(out64, case["out_float64"], "window_attention", "fwd")


def test_stored_attn_mask_equals_recomputed(official_cases):
    for case in _block_cases(official_cases):
        if case["shift_size"]:
            r = case["resolution"]
            torch.testing.assert_close(case["state_dict"]["attn_mask"],
                                       shift_attention_bias(r, r, case["window_size"], case["shift_size"]),
                                       atol=0, rtol=0)


def test_window_attention_module_matches_block_path(official_cases):
    """The windowed module (official interface) and the block's image-layout path agree."""
    case = _block_cases(official_cases)[0]
    blk = _block(case)
    r, ws, s, C = case["resolution"], case["window_size"], case["shift_size"], case["dim"]
    x = case["x"].view(-1, r, r, C)
    m = case["mask"].view(-1, r, r, 1)
    xw = window_partition(torch.roll(x, (-s, -s), (1, 2)), ws).view(-1, ws * ws, C)
    mw = window_partition(torch.roll(m, (-s, -s), (1, 2)), ws).view(-1, ws * ws, 1)
    with torch.no_grad():
        out_w, mw_new = blk.attn(xw, mw, mask=shift_attention_bias(r, r, ws, s))
        q, k, v = blk.attn.project_qkv(x)
        from mat_kernels import reference
        out_img, m_new = reference.window_attention(q, k, v, m, window_size=ws, shift_size=s,
                                                    num_heads=case["num_heads"])
        out_img = blk.attn.proj(out_img)
    back = window_partition(torch.roll(out_img, (-s, -s), (1, 2)), ws).view(-1, ws * ws, C)
    assert_close(out_w, back, "swin_block", "fwd")
    assert torch.equal(mw_new, window_partition(torch.roll(m_new, (-s, -s), (1, 2)), ws).view(-1, ws * ws, 1))


def test_window_larger_than_grid_uses_one_window_and_no_shift():
    blk = SwinTransformerBlock(24, (8, 8), 2, window_size=16, shift_size=8, mlp_ratio=2.0)
    assert blk.window_size == 8 and blk.shift_size == 0
    assert blk.attn_mask is None and "attn_mask" not in blk.state_dict()
    x = torch.randn(2, 64, 24)
    mask = torch.zeros(2, 64, 1)
    mask[0, 5] = 1
    out, new = blk(x, (8, 8), mask)
    assert out.shape == x.shape
    assert torch.equal(new[0], torch.ones(64, 1)) and torch.equal(new[1], torch.zeros(64, 1))


def test_block_rejects_bad_shapes():
    blk = SwinTransformerBlock(24, (16, 16), 2, window_size=8, shift_size=4)
    with pytest.raises(ValueError, match="x must have H\\*W = 256 tokens"):
        blk(torch.randn(1, 200, 24), (16, 16))
    with pytest.raises(ValueError, match="mask must have shape"):
        blk(torch.randn(1, 256, 24), (16, 16), torch.ones(1, 256))
    with pytest.raises(ValueError, match="shift_size must satisfy"):
        SwinTransformerBlock(24, (32, 32), 2, window_size=8, shift_size=8)


def _manifest_blocks(manifest):
    """Group the manifest's transformer-block entries by block prefix."""
    blocks = {}
    for name, meta in manifest["generator"]["entries"].items():
        m = re.match(r"(synthesis\.first_stage\.tran\.(\d)\.blocks\.(\d))\.(.*)", name)
        if m:
            blocks.setdefault(m.group(1), {})[m.group(4)] = meta
    return blocks


# The official constructor arguments of MAT's five BasicLayers (spec 1.9).
LAYERS = {0: (64, 8), 1: (32, 16), 2: (16, 16), 3: (32, 16), 4: (64, 8)}


def test_blocks_load_manifest_state_dicts_strict(manifest512):
    blocks = _manifest_blocks(manifest512)
    assert len(blocks) == 14
    for prefix, entries in blocks.items():
        layer, i = int(prefix.split(".")[3]), int(prefix.split(".")[5])
        res, ws = LAYERS[layer]
        blk = SwinTransformerBlock(180, (res, res), 6, window_size=ws, shift_size=0 if i % 2 == 0 else ws // 2,
                                   mlp_ratio=2.0)
        sd = {k: torch.randn(v["shape"]) for k, v in entries.items()}
        blk.load_state_dict(sd, strict=True)
        ours = blk.state_dict()
        assert list(ours) == list(entries), prefix  # same names in the same order
        assert all(list(ours[k].shape) == entries[k]["shape"] for k in entries)
