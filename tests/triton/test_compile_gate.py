"""Ahead-of-time compile gate: every Triton kernel config builds for sm_80 and sm_90 without a
GPU, and no MAT-shape config spills registers (STACK or LOCAL bytes in ``cuobjdump -res-usage``).

The CI tier compiles the MAT-shape configs in fp32 and with bool masks for both targets (about a
minute on two cores); the extended test compiles every config in every dtype. Both print the
table. Compilation runs in worker processes without TRITON_INTERPRET (see mat_kernels.triton.aot).
"""
from __future__ import annotations

import types

import pytest

pytest.importorskip("triton")

from mat_kernels.triton import aot  # noqa: E402

RES_USAGE = """\
Resource usage:
 Common:
  GLOBAL:0
 Function _other_kernel:
  REG:200 STACK:16 SHARED:0 LOCAL:8 CONSTANT[0]:900 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _fwd_kernel:
  REG:96 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:912 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def _row(**kw):
    row = dict(module="m", name="k", dtype="fp32", arch="sm_90", mat_shape=True, num_warps=4, REG=32,
               STACK=0, SHARED=0, LOCAL=0, dyn_smem=0, seconds=0.1, error=None)
    row.update(kw)
    return row


def test_parse_res_usage_picks_the_named_kernel():
    assert aot.parse_res_usage(RES_USAGE, "_fwd_kernel") == dict(REG=96, STACK=0, SHARED=1024, LOCAL=0)
    assert aot.parse_res_usage(RES_USAGE, "_other_kernel") == dict(REG=200, STACK=16, SHARED=0, LOCAL=8)
    with pytest.raises(ValueError, match="no resource usage for '_missing'"):
        aot.parse_res_usage(RES_USAGE, "_missing")


def test_failures_flag_spills_in_mat_shapes_and_compile_errors():
    assert aot.failures([_row(), _row(STACK=8, mat_shape=False)], []) == []
    bad = aot.failures([_row(LOCAL=4), _row(STACK=16), _row(error="CompilationError: boom")], ["x: broken"])
    assert bad[0] == "x: broken"
    assert "spills: STACK=0 LOCAL=4" in bad[1] and "spills: STACK=16 LOCAL=0" in bad[2]
    assert "does not compile: CompilationError: boom" in bad[3]


def test_collect_requires_a_table_per_kernel_module():
    """A window_attention module without a compile table fails the gate (it is not skipped); so do
    a raising table and a config with missing keys. A module without kernels needs no table."""
    tables = {"fine": lambda: [dict(name="a", fn=None, signature={}, constexprs={}, mat_shape=True)],
              "raising": lambda: 1 / 0,
              "partial": lambda: [dict(name="b", fn=None)]}
    modules = {"window_attention": types.ModuleType("window_attention"), "helpers": types.ModuleType("h")}
    found, errors = aot.collect(tables, modules)
    assert [(m, i) for m, i, _ in found] == [("fine", 0)]
    assert any(e.startswith("window_attention: has no compile table") for e in errors)
    assert any(e.startswith("raising: its compile table raised ZeroDivisionError") for e in errors)
    assert any(e.startswith("partial: config 0 lacks") for e in errors)
    assert len(errors) == 3


def test_every_kernel_module_is_collected():
    names = aot.kernel_modules()
    assert {"mask_update", "bias_act"} <= set(names)
    assert not {"aot", "aot_table", "library"} & set(names)


def _gate(tier: str, capsys) -> None:
    rows, errors = aot.run_gate(aot.ARCHS, workers=2, tier=tier)
    with capsys.disabled():
        print("\n" + aot.format_table(rows))
    bad = aot.failures(rows, errors)
    assert not bad, "compile gate failed:\n" + "\n".join(bad)
    modules = {r["module"] for r in rows}
    assert {"mask_update", "bias_act"} <= modules, f"no configs compiled from {modules}"
    assert {r["arch"] for r in rows} == {f"sm_{c}" for c in aot.ARCHS}
    assert all(r["REG"] and r["REG"] > 0 for r in rows)


def test_compile_gate_ci(capsys):
    _gate("ci", capsys)


@pytest.mark.extended
def test_compile_gate_all(capsys):
    _gate("all", capsys)
