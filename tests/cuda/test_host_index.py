"""The window/shift/region/bias index arithmetic of csrc/window_index.cuh, compiled for the host
with g++ and compared exactly with mat_kernels.reference (partition of rolled coordinates,
shift_region_ids, shift_attention_bias, key_validity_bias)."""
from __future__ import annotations

import subprocess
from collections import defaultdict

import pytest
import torch

from mat_kernels.reference import shift_attention_bias, window_partition
from mat_kernels.reference.attention import key_validity_bias
from mat_kernels.reference.windows import shift_region_ids

from ._build import CSRC, require_tool

# (B, H, W, window, shift): square and non-square grids, shift 0 / half / odd, grid == window.
GEOMETRIES = [(2, 16, 16, 8, 0), (1, 16, 16, 8, 4), (1, 16, 16, 8, 3), (1, 32, 32, 16, 8), (2, 16, 48, 8, 3),
              (1, 8, 8, 8, 4), (1, 12, 20, 4, 1), (1, 16, 48, 16, 5)]
MASK_VALUES = [0.0, 1.0, 0.5, -0.25, 2.0, 1e-3, 0.999, -100.0, 1e-8]


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory):
    gxx = require_tool("g++")
    exe = tmp_path_factory.mktemp("host_index") / "host_index_test"
    subprocess.run([gxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{CSRC}",
                    str(CSRC / "tests" / "host_index_test.cpp"), "-o", str(exe)], check=True)
    return exe


def _run(exe, B, H, W, ws, s, values=()):
    out = subprocess.run([str(exe), str(B), str(H), str(W), str(ws), str(s)] + [repr(v) for v in values],
                         check=True, capture_output=True, text=True).stdout
    records = defaultdict(list)
    for line in out.splitlines():
        kind, *fields = line.split()
        records[kind].append(fields)
    return records


@pytest.mark.parametrize("B,H,W,ws,s", GEOMETRIES)
def test_source_coordinates_match_roll_then_partition(host_binary, B, H, W, ws, s):
    rec = _run(host_binary, B, H, W, ws, s)
    N, nW = ws * ws, (H // ws) * (W // ws)
    # Image coordinates carried through the reference's roll and partition.
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    coords = torch.stack([ys, xs], dim=-1)[None].expand(B, H, W, 2).contiguous()
    rolled = torch.roll(coords, shifts=(-s, -s), dims=(1, 2)) if s else coords
    expected = window_partition(rolled, ws).view(B * nW, N, 2)
    got = torch.zeros_like(expected)
    for bw, t, y, x in (map(int, r) for r in rec["src"]):
        got[bw, t, 0], got[bw, t, 1] = y, x
    assert len(rec["src"]) == B * nW * N
    assert torch.equal(got, expected), f"first mismatch at {(got != expected).nonzero()[:3].tolist()}"
    # Window decomposition: batch slowest, then window rows, then window columns.
    for bw, b, wy, wx in (map(int, r) for r in rec["window"]):
        assert (b, wy, wx) == (bw // nW, (bw % nW) // (W // ws), (bw % nW) % (W // ws))


@pytest.mark.parametrize("B,H,W,ws,s", [g for g in GEOMETRIES if g[4] > 0])
def test_region_ids_match_reference(host_binary, B, H, W, ws, s):
    rec = _run(host_binary, B, H, W, ws, s)
    got = torch.full((H, W), -1, dtype=torch.int64)
    for py, px, rid in (map(int, r) for r in rec["region"]):
        got[py, px] = rid
    assert torch.equal(got, shift_region_ids(H, W, ws, s))


@pytest.mark.parametrize("B,H,W,ws,s", GEOMETRIES)
def test_shift_bias_matches_reference(host_binary, B, H, W, ws, s):
    rec = _run(host_binary, B, H, W, ws, s)
    N, nW = ws * ws, (H // ws) * (W // ws)
    got = torch.full((nW, N, N), float("nan"))
    for w, i, *vals in rec["shift_bias"]:
        got[int(w), int(i)] = torch.tensor([float(v) for v in vals])
    expected = shift_attention_bias(H, W, ws, s, dtype=torch.float32)
    assert torch.equal(got, expected), f"{int((got != expected).sum())} entries differ"
    if s > 0:  # a shifted geometry must exercise both values, or the comparison proves little
        assert (expected == -100).any() and (expected == 0).any()


def test_key_bias_matches_reference(host_binary):
    rec = _run(host_binary, 1, 8, 8, 4, 0, MASK_VALUES)
    vals = torch.tensor(MASK_VALUES, dtype=torch.float32)
    expected = key_validity_bias(vals.view(1, -1, 1)).flatten()
    got_m = torch.tensor([float(r[0]) for r in rec["key_bias"]], dtype=torch.float32)
    got = torch.tensor([float(r[1]) for r in rec["key_bias"]], dtype=torch.float32)
    assert torch.equal(got_m, vals)  # the values reached the program unchanged
    assert torch.equal(got, expected), f"got {got.tolist()}, expected {expected.tolist()}"
