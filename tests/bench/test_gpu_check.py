"""benchmarks/gpu_check.sh rehearsed on CPU (``--rehearse``: every tier end to end with the Triton
interpreter and the CUDA kernels' host emulation, tiny shapes): at most 8 files come back, with the
expected names; summary.md names every tier and results.json holds every tier's results; a run cut
by a 20 s budget, and one stopped by a signal in the middle of a tier, still leave a valid summary
and results.json with what finished.

.ci/run runs the full and the 20 s rehearsals itself and passes their folders in
MAT_KERNELS_REHEARSAL (``full`` and ``budget20`` inside it); without it the tests run them when
MAT_KERNELS_EXTENDED_TESTS=1 (2 minutes). The signal test always runs (about 20 s)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
TIERS = ("env", "prove-triton", "bench-core", "bench-model", "prove-cuda", "sanitize", "wide")
FILES = {"summary.md", "results.json", "status.tsv", "bench.png", "logs.tar.gz"}
ENV = {**os.environ, "PYTHON": sys.executable}


def _run(*args, timeout=300):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV)


def _rehearsal(tmp_path_factory, name, *args):
    given = os.environ.get("MAT_KERNELS_REHEARSAL")
    if given:
        return os.path.join(given, name), None
    if os.environ.get("MAT_KERNELS_EXTENDED_TESTS") != "1":
        pytest.skip("the rehearsals take 2 minutes: .ci/run runs them (MAT_KERNELS_REHEARSAL); "
                    "elsewhere set MAT_KERNELS_EXTENDED_TESTS=1")
    out = str(tmp_path_factory.mktemp(name))
    t0 = time.perf_counter()
    proc = _run(out, "--rehearse", *args)
    return out, (proc, time.perf_counter() - t0)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return _rehearsal(tmp_path_factory, "full")


@pytest.fixture(scope="module")
def budget20(tmp_path_factory):
    return _rehearsal(tmp_path_factory, "budget20", "--budget", "20")


def _files(out):
    got = []
    for base, dirs, files in os.walk(out):
        depth = os.path.relpath(base, out).count(os.sep) + (base != out)
        assert depth <= 2, base
        got += [os.path.relpath(os.path.join(base, f), out) for f in files]
    return got


def _results(out):
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    assert res["schema"] == "mat_kernels.gpu_check/1"
    assert [t["tier"] for t in res["tiers"]] == list(TIERS)
    return res, open(os.path.join(out, "summary.md")).read()


def test_script_parses_and_lints():
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", "-S", "warning", SCRIPT], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_bad_arguments_name_the_problem(tmp_path):
    proc = _run()
    assert proc.returncode == 2 and "OUT is required" in proc.stderr
    proc = _run(str(tmp_path), "--budget", "soon")
    assert proc.returncode == 2 and "--budget must be a whole number" in proc.stderr
    proc = _run(str(tmp_path), "--everything")
    assert proc.returncode == 2 and "unknown option --everything" in proc.stderr
    assert not os.listdir(tmp_path)


def test_rehearsal_brings_back_the_files_and_every_tier(full):
    out, ran = full
    if ran is not None:
        proc, seconds = ran
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert seconds < 150, f"the rehearsal took {seconds:.0f} s (budget 120 s)"
    files = _files(out)
    assert len(files) <= 8 and set(files) == FILES, files
    res, md = _results(out)
    assert res["rehearse"] is True and md.startswith("# GPU check summary (REHEARSAL")
    for t in TIERS:
        assert re.search(rf"^\| {re.escape(t)} \| ok \|", md, flags=re.M), t
    assert all(t["status"] == "ok" for t in res["tiers"]), res["tiers"]
    # Every tier's results are in results.json, and the proofs passed.
    ops = {"window_attention", "window_mask_update", "partial_conv_mask_update"}
    for key, proven in (("prove_triton", ops | {"bias_act"}), ("prove_cuda", ops)):  # the extension has no bias_act
        rows = res[key]["rows"]
        assert res[key]["finished"] and rows and all(r["status"] in ("ok", "skipped") for r in rows)
        assert {r["op"] for r in rows if r["status"] == "ok"} == proven
    assert {r["dtype"] for r in res["prove_triton"]["rows"] if r["op"] == "window_attention"} == {"fp32", "bf16", "fp16"}
    peers = {r["peer"] for r in res["bench_core"]["attention"] if r["status"] == "ok"}
    assert {"reference", "sdpa", "triton"} <= peers
    assert any(r["peer"] == "cuda" and r["status"] == "ok" for r in res["bench_cuda"]["attention"])
    assert {r["what"] for r in res["bench_model"]["model"] if r["status"] == "ok"} == {"generator_forward", "train_step"}
    assert res["wide"]["passed"] > 0 and res["wide"]["failed"] == 0
    assert res["sanitize"] and res["tune"]
    # The device-time estimate: the count of the device's specializations and their compile time.
    assert re.search(r"counted now: \d+ distinct Triton specializations", md)
    assert re.search(r"compile time for sm_90.*\(same list\): \d+ specializations, [\d.]+ s one after another", md)
    with tarfile.open(os.path.join(out, "logs.tar.gz")) as tar:
        names = set(tar.getnames())
    for f in ("logs/status.tsv", "logs/env/info.json", "logs/prove-triton/prove-triton.json",
              "logs/prove-triton/junit-prove-triton.xml", "logs/prove-triton/specs.json",
              "logs/bench-core/bench-core.json", "logs/bench-model/bench-model.json",
              "logs/prove-cuda/prove-cuda.json", "logs/wide/junit-ops.xml", "logs/tune.txt"):
        assert f in names, f


def test_a_budget_cut_run_keeps_what_finished(budget20):
    out, ran = budget20
    if ran is not None:
        assert ran[1] < 45, f"a 20 s budget took {ran[1]:.0f} s"
    assert set(_files(out)) <= FILES and {"summary.md", "results.json", "status.tsv", "logs.tar.gz"} <= set(_files(out))
    res, md = _results(out)
    status = {t["tier"]: t for t in res["tiers"]}
    assert status["env"]["status"] == "ok" and res["info"]["schema"] == "mat_kernels.info/1"
    for t in TIERS:
        assert f"| {t} |" in md
    cut = [t for t in TIERS if status[t]["status"] in ("skipped", "killed")]
    assert cut and all(status[t]["status"] in ("ok", "skipped", "killed") for t in TIERS)
    for t in cut:
        assert status[t]["note"], t
    assert any("does not fit" in status[t]["note"] for t in cut)
    if status["prove-triton"]["status"] in ("ok", "killed"):  # what it proved is kept
        assert res["prove_triton"]["finished"] == (status["prove-triton"]["status"] == "ok")


def test_a_signal_in_the_middle_of_a_tier_keeps_its_partial_results(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    partial = work / "logs" / "prove-triton" / "prove-triton.json"
    proc = subprocess.Popen(["bash", SCRIPT, str(out), "--rehearse"], cwd=ROOT, env={**ENV, "GPU_CHECK_WORK": str(work)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def proved_some():
        try:
            return len(json.loads(partial.read_text())["rows"]) >= 2
        except (OSError, ValueError, KeyError):
            return False
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None and not proved_some():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # as the lease would: in the middle of prove-triton
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, log[-2000:]
    res, md = _results(str(out))
    status = {t["tier"]: t["status"] for t in res["tiers"]}
    assert status["env"] == "ok" and status["prove-triton"] == "killed", (status, log[-2000:])
    assert all(status[t] == "skipped" for t in TIERS[2:])
    assert res["prove_triton"]["finished"] is False and res["prove_triton"]["rows"]
    assert "| prove-triton | killed |" in md and "PARTIAL" in md
    assert set(_files(str(out))) <= FILES


def test_summary_of_a_synthetic_run(tmp_path):
    """Failures with their worst error, a stopped tier, tiers never reached, and an empty folder."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import gpu_summary
    logs = tmp_path / "logs"
    (logs / "prove-triton").mkdir(parents=True)
    (logs / "status.tsv").write_text("tier\tstatus\trc\tseconds\tnote\nenv\tok\t0\t4\t\n"
                                     "prove-triton\tkilled\t124\t75\ttime limit (budget); partial results kept\n")
    rows = [{"op": "window_attention", "backend": "triton", "case": "tran.0 64x64 w8 s4 mask b2 h6x30", "dtype": "bf16",
             "status": "FAIL", "message": "AssertionError: out: max abs error 3.100e-01 against ...",
             "max_abs_err": 0.31, "seconds": 0.4},
            {"op": "bias_act", "backend": "triton", "case": "2x512 lrelu", "dtype": "fp32", "status": "ok",
             "message": None, "max_abs_err": None, "seconds": 0.1}]
    (logs / "prove-triton" / "prove-triton.json").write_text(json.dumps(
        {"schema": "mat_kernels.gpu_campaign/1", "tier": "prove", "rehearse": False, "finished": False,
         "environment": {"device_name": "NVIDIA H200", "torch_version": "2.11", "triton_version": "3.6.0",
                         "python_version": "3.12", "git_commit": "abc123", "git_dirty": False},
         "notes": [], "rows": rows, "jit": {"specializations_compiled": 129, "compile_s": 3.5, "precompile": None}}))
    out = tmp_path / "out"
    assert gpu_summary.main([str(logs), "--out", str(out), "--budget", "480"]) == 1
    md = (out / "summary.md").read_text()
    assert md.startswith("# GPU check summary\n") and "NVIDIA H200" in md and "budget 480 s" in md
    assert "| prove-triton | killed | 75 | time limit (budget); partial results kept |" in md
    assert "| wide | not run |" in md and "## Skipped or stopped" in md
    assert "prove-triton triton: 1 passed, 1 failed, 0 skipped (PARTIAL" in md
    assert "FAIL triton window_attention bf16 tran.0 64x64 w8 s4 mask b2 h6x30: worst err 3.100e-01;" in md
    assert "129 specializations JIT-compiled in 3.5 s" in md
    res = json.loads((out / "results.json").read_text())
    assert res["prove_triton"]["rows"][0]["max_abs_err"] == 0.31 and res["budget_s"] == 480
    assert sorted(os.listdir(out)) == ["results.json", "summary.md"]  # no bench result: no plot
    empty = tmp_path / "empty"
    empty.mkdir()
    assert gpu_summary.main([str(empty)]) == 0
    assert "| env | not run |" in (empty / "summary.md").read_text()
