"""The case list is MAT's attention layers, and the byte and FLOP counts follow their formulas."""
import pytest
import torch

from mat_kernels.bench import cases as C


def test_shapes_are_mats_first_stage_layers():
    shapes = C.mat_attention_shapes(512)
    got = {(s.grid, s.window, s.shift, s.masked) for s in shapes}
    # the official 512 network: tran.0/4 64x64 w8 shifts 0,4; tran.1/3 32x32 w16 shifts 0,8; tran.2 16x16 w16 no shift.
    # Encoder layers (tran.0, tran.1) carry the dynamic mask, the others do not.
    want = {(64, 8, 0, True), (64, 8, 4, True), (64, 8, 0, False), (64, 8, 4, False),
            (32, 16, 0, True), (32, 16, 8, True), (32, 16, 0, False), (32, 16, 8, False),
            (16, 16, 0, False)}
    assert got == want and len(shapes) == 9
    assert C.CHANNELS == 180 and C.HEADS == 6 and C.HEAD_DIM == 30
    layers = {s.layers for s in shapes}
    assert layers == {"tran.0", "tran.1", "tran.2", "tran.3", "tran.4"}


def test_reduced_shapes_are_a_subset_and_resolution_scales_grids():
    assert set(C.reduced_shapes(512)) <= set(C.mat_attention_shapes(512))
    assert C.grids_for_resolution(256) == (64, 32, 16)  # the 256 network also reaches 64x64
    assert C.grids_for_resolution(1024) == (128, 64, 32)
    g = {(s.grid, s.window, s.shift) for s in C.mat_attention_shapes(1024)}
    assert (128, 8, 4) in g and (32, 16, 0) in g
    for bad in (0, 300, 768):
        with pytest.raises(ValueError, match="resolution"):
            C.grids_for_resolution(bad)


def test_case_cross_product_and_validation():
    cs = C.attention_cases(C.mat_attention_shapes(), [1, 8], ["fp32", "bf16"], ["fwd", "fwdbwd"])
    assert len(cs) == 9 * 2 * 2 * 2 and len({c.id for c in cs}) == len(cs)
    with pytest.raises(ValueError, match="dtype"):
        C.attention_cases(C.reduced_shapes(), [1], ["fp8"], ["fwd"])
    with pytest.raises(ValueError, match="mode"):
        C.attention_cases(C.reduced_shapes(), [1], ["fp32"], ["bwd"])
    with pytest.raises(ValueError, match="batch"):
        C.attention_cases(C.reduced_shapes(), [0], ["fp32"], ["fwd"])


def test_ideal_bytes_formula():
    masked = C.Shape("tran.0", 64, 8, 4, True)
    T, Cc = 2 * 64 * 64, 180
    fwd = C.AttentionCase(masked, 2, "bf16", "fwd")
    # q, k, v read + out written (2 bytes each) + mask read + new mask written (2 bytes each)
    assert C.ideal_bytes(fwd) == 4 * T * Cc * 2 + 2 * T * 2
    both = C.AttentionCase(masked, 2, "bf16", "fwdbwd")
    # backward: q, k, v, dout read, dq, dk, dv written, mask read again
    assert C.ideal_bytes(both) == C.ideal_bytes(fwd) + 7 * T * Cc * 2 + T * 2
    assert C.ideal_bytes(fwd, mask_itemsize=1) == 4 * T * Cc * 2 + 2 * T
    unmasked = C.AttentionCase(C.Shape("tran.2", 16, 16, 0, False), 1, "fp32", "fwd")
    assert C.ideal_bytes(unmasked) == 4 * 256 * 180 * 4


def test_flop_count():
    case = C.AttentionCase(C.Shape("tran.1", 32, 16, 8, True), 1, "fp32", "fwd")
    # per window and head: q k^T and p v are each N x N x d multiply-adds
    n_windows, N, d = 4, 256, 30
    assert C.flop_count(case) == n_windows * 6 * 2 * (2 * N * N * d)
    assert C.flop_count(C.AttentionCase(case.shape, 1, "fp32", "fwdbwd")) == 3 * C.flop_count(case)


def test_inputs_have_a_fully_masked_window_in_the_shifted_frame():
    case = C.AttentionCase(C.Shape("t", 16, 8, 4, True), 2, "bf16", "fwd")
    q, k, v, m = C.make_inputs(case, "cpu")
    assert q.shape == (2, 16, 16, 180) and q.dtype == torch.bfloat16 and m.shape == (2, 16, 16, 1)
    rolled = torch.roll(m, shifts=(-4, -4), dims=(1, 2))
    assert (rolled[:, :8, :8] == 0).all() and m.sum() > 0
    q2 = C.make_inputs(case, "cpu")[0]
    assert torch.equal(q, q2)  # seeded: every peer sees identical tensors
