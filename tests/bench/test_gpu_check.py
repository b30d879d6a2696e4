"""benchmarks/gpu_check.sh and benchmarks/gpu_summary.py on CPU: the script parses, --dry-run
lists every stage, every mat-bench command it would run is accepted by mat-bench's own parser,
the info stage really runs here, and the summary copes with a synthetic OUTDIR (missing files
included)."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
STAGES = ("install", "info", "test", "sanitize", "bench-ops", "bench-compiled", "bench-model",
          "bench-model-compiled", "tune")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_summary  # noqa: E402


def _run(*args, **env):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_script_parses():
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0


def test_dry_run_lists_every_stage_and_its_commands_parse(tmp_path):
    proc = _run("--dry-run", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    listed = re.findall(r"^== stage (\S+)", proc.stdout, flags=re.M)
    assert tuple(listed) == STAGES
    assert not (tmp_path / "out" / "status.tsv").exists()  # a dry run runs nothing
    from mat_kernels.bench.__main__ import parser
    bench_cmds = [l.split("] ", 1)[1] for l in proc.stdout.splitlines() if "-m mat_kernels.bench " in l]
    assert len(bench_cmds) == 4
    for cmd in bench_cmds:
        argv = shlex.split(cmd)
        parser().parse_args(argv[argv.index("mat_kernels.bench") + 1:])  # SystemExit on an unknown flag
    from mat_kernels import info
    for l in proc.stdout.splitlines():
        if "-m mat_kernels.info" in l:
            argv = shlex.split(l.split("] ", 1)[1])
            with pytest.raises(SystemExit) as e:  # --help after the real flags: they parsed
                info.main(argv[argv.index("mat_kernels.info") + 1:] + ["--help"])
            assert e.value.code == 0


def test_unknown_stage_and_missing_outdir_name_the_problem(tmp_path):
    proc = _run(str(tmp_path), "bench-everything")
    assert proc.returncode == 2 and "unknown stage 'bench-everything'" in proc.stderr
    proc = _run("--dry-run")
    assert proc.returncode == 2 and "OUTDIR" in proc.stderr


def test_info_stage_runs_on_cpu(tmp_path):
    proc = _run(str(tmp_path), "info")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads((tmp_path / "info.json").read_text())
    assert rep["schema"] == "mat_kernels.info/1"
    assert "info" in proc.stdout and (tmp_path / "summary.md").exists()
    assert (tmp_path / "status.tsv").read_text().splitlines()[1].startswith("info\t0\t")


def test_summary_of_a_synthetic_outdir(tmp_path, capsys):
    (tmp_path / "status.tsv").write_text("stage\trc\tseconds\tnote\ninfo\t0\t3\t\ntest\t1\t200\t\n"
                                         "sanitize\t0\t0\tskipped: compute-sanitizer not found\n")
    (tmp_path / "junit-gpu.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.cuda.test_gpu" name="test_a"/>'
        '<testcase classname="tests.cuda.test_gpu" name="test_b"><failure message="x"/></testcase>'
        '<testcase classname="t" name="c"><skipped/></testcase></testsuite></testsuites>')
    (tmp_path / "info.json").write_text(json.dumps({"checks": [
        {"op": "window_attention", "backend": "triton", "dtype": "bf16", "passed": True, "max_abs_err": 3e-3,
         "max_abs_err_grad": 9e-3, "message": None, "seconds": 0.2}]}))

    def row(peer, ms, sp, dt="bf16"):
        return {"case_id": f"g64-{dt}", "case": {"dtype": dt, "shape": {"name": "64x64 w8 s4 mask"}}, "peer": peer,
                "status": "ok", "median_ms": ms, "speedup_vs_reference": sp, "max_abs_err": 1e-3,
                "max_abs_err_grad": None, "within_tolerance": peer != "cuda"}
    (tmp_path / "bench-ops.json").write_text(json.dumps({"attention": [row("reference", 4.0, 1.0),
                                                                       row("triton", 1.0, 4.0),
                                                                       row("cuda", 0.5, 8.0)], "model": []}))
    (tmp_path / "bench-model.json").write_text(json.dumps({"attention": [], "model": [
        {"what": "generator_forward", "path": "auto", "dtype": "bf16", "batch": 8, "status": "ok",
         "images_per_s": 41.5, "speedup_vs_reference": 1.9, "reason": None}]}))
    assert gpu_summary.main([str(tmp_path)]) == 1  # a failed stage and a failed test
    out = capsys.readouterr().out
    assert "test                  FAILED (rc 1" in out and "skipped: compute-sanitizer not found" in out
    assert "1 passed, 1 failed, 1 skipped" in out and "FAIL tests.cuda.test_gpu::test_b" in out
    assert re.search(r"triton\s+bf16\s+9\.00e-03\s+all within tolerance", out)
    assert re.search(r"cuda\s+bf16\s+1\.00e-03\s+OFF TOLERANCE", out)
    assert re.search(r"64x64 w8 s4 mask\s+x4\.00\s+x8\.00", out)
    assert "41.50 (x1.90)" in out and "tune: not run" in out
    assert (tmp_path / "summary.md").read_text().startswith("# GPU check summary")


def test_summary_of_an_empty_outdir(tmp_path, capsys):
    assert gpu_summary.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no status.tsv" in out and "no JUnit XML" in out and "no op benchmark result" in out
