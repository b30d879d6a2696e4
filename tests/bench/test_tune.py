"""``mat_kernels.bench.tune`` on synthetic result files: the fastest backend that passed is chosen,
one that failed (off tolerance, crashed, or a failing GPU test) never is, and ``--write``
rewrites a copy of the preferences module deterministically, keeping its docstring."""
from __future__ import annotations

import json
import shutil

import pytest

from mat_kernels.backends import OPS, preferences
from mat_kernels.bench import tune


def _row(case_id, dtype, peer, ms, within=True, status="ok", reason=None):
    return {"case_id": case_id, "case": {"dtype": dtype, "id": case_id}, "peer": peer, "status": status,
            "reason": reason, "median_ms": ms if status == "ok" else None,
            "within_tolerance": within if status == "ok" else None, "max_abs_err": 1e-3,
            "max_abs_err_grad": None, "mask_match": True}


def _bench(tmp_path, rows, name="gpu.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"schema": "mat_kernels.bench/1", "attention": rows, "model": []}))
    return str(path)


def _attention_rows(cuda_ms=1.0, cuda_within=True, triton_ms=2.0):
    rows = []
    for dt in ("fp32", "bf16"):
        for cid in (f"a-{dt}-fwd", f"b-{dt}-fwdbwd"):
            rows += [_row(cid, dt, "reference", 10.0), _row(cid, dt, "triton", triton_ms),
                     _row(cid, dt, "flex", 0.1),  # a faster peer that is not a backend: ignored
                     _row(cid, dt, "cuda", cuda_ms, within=cuda_within if dt == "bf16" else True)]
    return rows


def test_fastest_passing_backend_first(tmp_path):
    ev = tune.read([_bench(tmp_path, _attention_rows())])
    prefs, detail = tune.propose(ev, current={})
    assert prefs["window_attention"] == ["cuda", "triton"]
    d = {(r["dtype"], r["backend"]): r for r in detail if r["op"] == "window_attention"}
    assert d[("bf16", "cuda")]["geomean_speedup"] == pytest.approx(10.0)
    assert d[("fp32", "triton")]["cases"] == 2


def test_a_backend_off_tolerance_in_one_dtype_is_never_chosen(tmp_path):
    ev = tune.read([_bench(tmp_path, _attention_rows(cuda_ms=0.5, cuda_within=False))])
    prefs, _ = tune.propose(ev, current={})
    assert prefs["window_attention"] == ["triton"]


def test_a_crash_excludes_but_an_unsupported_case_does_not(tmp_path):
    rows = _attention_rows()
    rows.append(_row("c-fp16-fwd", "fp16", "triton", None, status="failed",
                     reason="RuntimeError: CUDA error: an illegal memory access was encountered"))
    rows.append(_row("c-fp16-fwd", "fp16", "cuda", None, status="failed",
                     reason="the CUDA extension mat_kernels._C is not available: not built"))
    prefs, _ = tune.propose(tune.read([_bench(tmp_path, rows)]), current={})
    assert prefs["window_attention"] == ["cuda"]


def test_slower_than_reference_is_not_listed(tmp_path):
    ev = tune.read([_bench(tmp_path, _attention_rows(cuda_ms=20.0, triton_ms=5.0))])
    assert tune.propose(ev, current={})[0]["window_attention"] == ["triton"]


def test_junit_failures_exclude_and_pytest_benchmark_timings_need_a_pass(tmp_path):
    bench = {"benchmarks": [
        {"name": f"test_window_mask_update[cuda-g64w8s4-b1-{be}]", "group": "window_mask_update-g64w8s4-b1",
         "params": {"backend": be}, "stats": {"median": ms}}
        for be, ms in (("reference", 1e-3), ("triton", 1e-4), ("cuda", 5e-5))]}
    bpath = tmp_path / "masks.json"
    bpath.write_text(json.dumps(bench))
    junit = tmp_path / "junit.xml"
    junit.write_text("""<?xml version="1.0"?><testsuites><testsuite name="pytest">
      <testcase classname="tests.test_ops" name="test_window_mask_update[triton-8-4-False-torch.float32]"/>
      <testcase classname="tests.test_ops" name="test_window_mask_update[cuda-8-4-False-torch.float32]">
        <failure message="new_mask differs"/></testcase>
      <testcase classname="tests.cuda.test_gpu" name="test_full_product[1-64-6-30-8_4-random-fp32]"/>
      <testcase classname="tests.models.test_generator" name="test_forward"><error message="oom"/></testcase>
    </testsuite></testsuites>""")
    ev = tune.read([str(bpath), str(junit)])
    prefs, _ = tune.propose(ev, current={})
    # cuda is fastest but failed its test: only triton; partial_conv was not measured: kept (empty).
    assert prefs["window_mask_update"] == ["triton"]
    assert prefs["partial_conv_mask_update"] == []
    assert ev.unattributed_failures == ["tests.models.test_generator::test_forward"]
    # Timings alone are not a pass: without the JUnit file nothing is eligible.
    assert tune.propose(tune.read([str(bpath)]), current={})[0]["window_mask_update"] == []


def test_unmeasured_ops_keep_their_entry_unless_dropped(tmp_path):
    ev = tune.read([_bench(tmp_path, _attention_rows())])
    current = {"bias_act": ["triton"]}
    assert tune.propose(ev, current=current)[0]["bias_act"] == ["triton"]
    assert tune.propose(ev, current=current, drop_unmeasured=True)[0]["bias_act"] == []


def test_write_round_trip_on_a_copy(tmp_path, capsys):
    copy = tmp_path / "preferences.py"
    shutil.copy(preferences.__file__, copy)
    original = copy.read_text()
    path = _bench(tmp_path, _attention_rows())
    assert tune.main([path, "--write", "--preferences", str(copy)]) == 0
    out = capsys.readouterr().out
    assert '"window_attention": ["cuda", "triton"]' in out and "changes: window_attention" in out
    text = copy.read_text()
    assert text.startswith(original[:original.index("PREFERENCES = {")])  # docstring and imports kept
    written = tune._load_current(str(copy))
    assert written["window_attention"] == ["cuda", "triton"]
    assert list(written) == list(OPS)
    for op in OPS[1:]:
        assert written[op] == preferences.PREFERENCES.get(op, [])
    tune.main([path, "--write", "--preferences", str(copy)])
    assert copy.read_text() == text  # deterministic: the same input writes the same file
    assert preferences.PREFERENCES == tune._load_current(preferences.__file__)  # the package's file untouched


def test_bad_input_names_the_argument(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit):
        tune.main([str(bad)])
    assert "RESULTS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tune.main([str(tmp_path / "missing.json")])
    assert "no such file" in capsys.readouterr().err
