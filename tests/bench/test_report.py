"""JSON schema, markdown and PNG writing, and the end-to-end CLI on CPU."""
import json

import pytest

from mat_kernels.bench import report
from mat_kernels.bench.__main__ import main


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    path = out / "cpu-reduced-test.json"
    with pytest.MonkeyPatch.context() as mp:
        # tests/conftest.py turns the Triton interpreter on; a CPU benchmark run has it off.
        from mat_kernels.triton import _common
        mp.setattr(_common, "interpreting", lambda: False)
        rc = main(["--ops", "--shapes", "16x16", "--no-progress", "--repeats", "1", "--warmup", "0",
                   "--json", str(path), "--plot", str(out / "speedups.png")])
    assert rc == 0
    return out, path


def test_cli_writes_json_markdown_and_png(cli_run):
    out, path = cli_run
    result = json.loads(path.read_text())
    report.validate(result)
    assert result["suite"] == "cpu-reduced" and result["environment"]["device_type"] == "cpu"
    assert any("need a CUDA GPU" in n for n in result["notes"])
    rows = result["attention"]
    assert {r["case"]["shape"]["name"] for r in rows} == {"16x16 w16 s0 nomask"}
    assert {r["case"]["mode"] for r in rows} == {"fwd", "fwdbwd"}
    by = {(r["peer"], r["case"]["mode"]): r for r in rows}
    assert by[("reference", "fwd")]["status"] == "ok" and by[("sdpa", "fwdbwd")]["status"] == "ok"
    assert by[("compile", "fwd")]["status"] == "skipped" and "--peers" in by[("compile", "fwd")]["reason"]
    assert by[("cuda", "fwd")]["status"] == "failed" and by[("cuda", "fwd")]["reason"]
    md = path.with_suffix(".md").read_text()
    assert "| case | reference |" in md and "Peers that did not run" in md
    assert (out / "speedups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cpu_run_writes_nothing_without_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--ops", "--shapes", "16x16", "--mode", "fwd", "--peers", "reference", "--no-progress",
                 "--repeats", "1", "--warmup", "0"]) == 0
    assert list(tmp_path.iterdir()) == []
    printed = capsys.readouterr()
    assert "16x16 w16 s0 nomask b1 fp32 fwd" in printed.out and "reference" in printed.out


def test_cli_rejects_bad_arguments():
    for argv in (["--peers", "xformers"], ["--dtype", "fp8"], ["--shapes", "99x99"], ["--repeats", "0"],
                 ["--resolution", "300"]):
        with pytest.raises(SystemExit):
            main(argv + ["--no-progress", "--no-save"])


def test_validate_names_the_missing_field(cli_run):
    result = json.loads(cli_run[1].read_text())
    del result["environment"]["git_commit"]
    with pytest.raises(ValueError, match="git_commit"):
        report.validate(result)
    result = json.loads(cli_run[1].read_text())
    bad = next(r for r in result["attention"] if r["status"] == "failed")
    bad["reason"] = None
    with pytest.raises(ValueError, match="without a reason"):
        report.validate(result)


def test_markdown_and_plot_from_a_synthetic_result(tmp_path):
    case = {"shape": {"name": "64x64 w8 s4 mask"}, "batch": 8, "dtype": "bf16", "mode": "fwd"}
    base = {k: None for k in report.ATTENTION_ROW_KEYS}
    rows = [dict(base, case_id="c", case=case, peer="reference", status="ok", median_ms=2.0,
                 speedup_vs_reference=1.0),
            dict(base, case_id="c", case=case, peer="triton", status="ok", median_ms=0.5, speedup_vs_reference=4.0,
                 bandwidth_fraction=0.5),
            dict(base, case_id="c", case=case, peer="cuda", status="failed", reason="no | pipes")]
    env = {k: None for k in report.ENVIRONMENT_KEYS}
    env.update(device_name="Test GPU", device_type="cuda")
    result = report.make_result("gpu-512", env, {}, [], rows, [], 1.0)
    md = report.markdown(result)
    assert "0.500 ms (x4.00)" in md and "no \\| pipes" in md and "| 50.0 |" in md
    assert report.write_plot(result, str(tmp_path / "p.png")) and (tmp_path / "p.png").stat().st_size > 1000
    only_ref = report.make_result("gpu-512", env, {}, [], rows[:1], [], 1.0)
    only_ref["attention"][0]["speedup_vs_reference"] = None
    assert report.write_plot(only_ref, str(tmp_path / "q.png")) is None


@pytest.mark.gpu
def test_cli_on_gpu(tmp_path):
    path = tmp_path / "gpu.json"
    assert main(["--ops", "--shapes", "16x16", "--batch", "1", "--dtype", "bf16", "--repeats", "2", "--warmup", "1",
                 "--no-progress", "--json", str(path), "--dram-bandwidth", "1.0"]) == 0
    result = json.loads(path.read_text())
    report.validate(result)
    assert result["suite"] == "gpu-512" and result["environment"]["device_type"] == "cuda"
    assert result["environment"]["dram_bandwidth_bytes_per_s"] == 1e12
    ok = [r for r in result["attention"] if r["status"] == "ok"]
    assert {r["peer"] for r in ok} >= {"reference", "compile", "sdpa", "flex"}
    assert all(r["peak_mem_bytes"] > 0 and r["bandwidth_fraction"] > 0 and r["within_tolerance"] for r in ok)
    assert path.with_suffix(".png").exists() and path.with_suffix(".md").exists()
