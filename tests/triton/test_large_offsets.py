"""Views whose per-image span exceeds 2**31 elements (issue #16, finding 3): one huge image, or a
slice of a much larger tensor. The Triton kernels must index them with 64-bit offsets.

Each op runs in a subprocess on a bool mask view with a row stride of 73.8M elements over a
2.3 GB base (the largest offset, 31 rows down, is past 2**31), compared with the reference in
the subprocess: with 32-bit offsets the interpreter segfaults there (and a GPU would read out
of bounds), which a subprocess turns into a failed test instead of a crashed session. Only one
such subprocess runs at a time.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mat_kernels.triton import _common

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]

# A (1, 32, 16) bool mask view, row stride SH: the last row starts at 31 * SH > 2**31.
_PRELUDE = """
import torch
from mat_kernels import ops, reference
from mat_kernels.testing import assert_close, assert_mask_equal
SH = 73_800_000
assert 31 * SH > 2 ** 31 > SH
DEVICE = {device!r}
base = torch.zeros(31 * SH + 64, dtype=torch.bool, device=DEVICE)
vals = torch.rand(32, 16, generator=torch.Generator().manual_seed(0)) > 0.6
vals[:16, :16] = False  # an all-hole window
for y in range(32):
    base[y * SH: y * SH + 16] = vals[y].to(DEVICE)
"""

SCRIPTS = {
    "window_mask_update": """
m = base.as_strided((1, 32, 16), (0, SH, 1))
for shift in (0, 8):
    got = ops.window_mask_update(m, window_size=16, shift_size=shift, backend="triton")
    assert_mask_equal(got.cpu(), reference.window_mask_update(vals[None], window_size=16, shift_size=shift))
""",
    "partial_conv_mask_update": """
m = base.as_strided((1, 1, 32, 16), (0, 0, SH, 1))
for k, s in ((3, 1), (5, 2)):
    new, ratio = ops.partial_conv_mask_update(m, kernel_size=k, stride=s, backend="triton")
    exp_new, exp_ratio = reference.partial_conv_mask_update(vals[None, None], kernel_size=k, stride=s)
    assert_mask_equal(new.cpu(), exp_new)
    assert_mask_equal(ratio.cpu(), exp_ratio)
""",
    "window_attention": """
m = base.as_strided((1, 32, 16, 1), (0, SH, 1, 1))
g = torch.Generator().manual_seed(1)
leaves = [torch.randn(1, 32, 16, 32, generator=g, dtype=torch.float64) for _ in range(3)]
q, k, v = (t.float().to(DEVICE).requires_grad_() for t in leaves)
rq, rk, rv = (t.requires_grad_() for t in leaves)
out, new_mask = ops.window_attention(q, k, v, m, window_size=16, shift_size=8, num_heads=2, backend="triton")
ref, ref_mask = reference.window_attention(rq, rk, rv, vals[None, :, :, None], window_size=16, shift_size=8,
                                           num_heads=2)
assert_close(out, ref, "window_attention", "fwd", name="out")
assert_mask_equal(new_mask.cpu(), ref_mask)
dout = torch.randn(out.shape, generator=g, dtype=torch.float64)
for name, got, exp in zip(("dq", "dk", "dv"), torch.autograd.grad(out, (q, k, v), dout.float().to(DEVICE)),
                          torch.autograd.grad(ref, (rq, rk, rv), dout)):
    assert_close(got, exp, "window_attention", "bwd", name=name)
""",
}


@pytest.mark.parametrize("op", sorted(SCRIPTS))
def test_view_with_a_span_over_2_31_elements(op):
    code = textwrap.dedent(_PRELUDE.format(device=DEVICE)) + textwrap.dedent(SCRIPTS[op]) + "\nprint('OK')\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), (
        f"{op} on a view spanning more than 2**31 elements: exit code {proc.returncode} "
        f"(-11 is a segfault)\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}")


def _meta(shape, stride):
    return torch.empty(0, device="meta").as_strided(shape, stride)


def test_int64_offsets_are_chosen_from_the_span_without_the_batch():
    """The host picks 64-bit offsets exactly when an image's span (every dim but the batch,
    whose offset is always 64-bit) or a flat size reaches 2**31."""
    small = _meta((4, 32, 16), (2 ** 40, 16, 1))  # huge batch stride: the batch offset is int64 anyway
    assert not _common.needs_int64_offsets(small)
    assert _common.needs_int64_offsets(_meta((1, 32, 16), (0, 73_800_000, 1)))
    assert not _common.needs_int64_offsets(_meta((1, 32, 16), (0, 69_000_000, 1)))  # 31 * 69M < 2**31
    assert _common.needs_int64_offsets(small, numel=2 ** 31)
    assert not _common.needs_int64_offsets(small, None, numel=2 ** 31 - 1)
