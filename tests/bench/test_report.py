"""JSON schema, markdown and PNG writing, and the end-to-end CLI on CPU."""
import json

import pytest

from mat_kernels.bench import report
from mat_kernels.cli.bench import main


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    path = out / "cpu-reduced-test.json"
    with pytest.MonkeyPatch.context() as mp:
        # tests/conftest.py turns the Triton interpreter on; a CPU benchmark run has it off.
        from mat_kernels.triton import _common
        mp.setattr(_common, "interpreting", lambda: False)
        rc = main(["--ops", "--shapes", "16x16", "--no-progress", "--repeats", "2", "--warmup", "0",
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
    # No GPU here: the fused kernels are "not available", which is not a failure.
    assert by[("cuda", "fwd")]["status"] == "unavailable" and by[("cuda", "fwd")]["reason"]
    assert by[("triton", "fwd")]["status"] == "unavailable"
    # Every repeat is kept, with the spread and the noise flag beside the median.
    ok = by[("reference", "fwd")]
    assert len(ok["times_ms"]) == 2 and ok["min_ms"] <= ok["median_ms"] <= ok["max_ms"]
    assert ok["iqr_ms"] is not None and isinstance(ok["noisy"], bool)
    md = path.with_suffix(".md").read_text()
    assert "| case | reference |" in md and "Peers that did not run" in md
    assert "not available (no GPU)" in md and "| failed |" not in md
    assert report.NOISE_RULE in md and f"[{ok['min_ms']:.3g}-{ok['max_ms']:.3g}]" in md
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
    bad = next(r for r in result["attention"] if r["status"] == "unavailable")
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
    assert "| cuda | failed | no \\| pipes |" in md  # a failure on a GPU still reads "failed"
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


def _synthetic(device_type="cuda"):
    """Two dtypes x two directions, three peers, one of them failing and one noisy."""
    base = {k: None for k in report.ATTENTION_ROW_KEYS}
    rows = []
    for dt in ("fp32", "bf16"):
        for mode in ("fwd", "fwdbwd"):
            case = {"shape": {"name": "64x64 w8 s4 mask"}, "batch": 1, "dtype": dt, "mode": mode}
            cid = f"{dt}-{mode}"
            rows += [dict(base, case_id=cid, case=case, peer="reference", status="ok", median_ms=2.0, min_ms=1.9,
                          max_ms=2.1, noisy=False, speedup_vs_reference=1.0),
                     dict(base, case_id=cid, case=case, peer="sdpa", status="ok", median_ms=4.0, min_ms=1.0,
                          max_ms=9.0, noisy=True, speedup_vs_reference=0.5),
                     dict(base, case_id=cid, case=case, peer="triton", status="ok", median_ms=0.25, min_ms=0.24,
                          max_ms=0.26, noisy=False, speedup_vs_reference=8.0)]
            if device_type == "cpu":
                rows[-1].update(status="unavailable", reason="needs CUDA tensors", median_ms=None,
                                speedup_vs_reference=None)
    env = {k: None for k in report.ENVIRONMENT_KEYS}
    env.update(device_name="Test device", device_type=device_type)
    return report.make_result("x", env, {}, [], rows, [], 1.0)


def test_console_shows_the_spread_and_flags_noisy_rows():
    text = report.console(_synthetic())
    assert "2.000 ms [1.9-2.1] " in text and "4.000 ms [1-9] noisy (x0.50)" in text
    assert report.NOISE_RULE in text and "4 of 12 timed rows are noisy" in text


def test_plot_bars_start_at_one_on_a_shared_labelled_axis(tmp_path):
    import matplotlib.pyplot as plt
    fig, axes = report.plot_speedups(_synthetic())
    try:
        assert len(axes) == 4
        shared = axes[0].get_shared_y_axes()
        assert all(shared.joined(axes[0], ax) for ax in axes[1:])
        for ax in axes:
            assert any(set(line.get_ydata()) == {1.0} for line in ax.get_lines())  # the 1.0 reference line
            bars = [p for c in ax.containers for p in c]
            assert len(bars) == 2 and all(b.get_y() == pytest.approx(1.0) for b in bars)
            assert sorted(b.get_y() + b.get_height() for b in bars) == pytest.approx([0.5, 8.0])
            labels = {t.get_text() for t in ax.texts}
            assert {"0.50x*", "8.00x"} <= labels  # value labels, '*' = noisy
        fmt = axes[0].yaxis.get_major_formatter()
        assert fmt(2.0, 0) == "2x" and fmt(0.5, 0) == "0.5x"  # not 2x10^0
        assert 1.0 in axes[0].get_yticks()
    finally:
        plt.close(fig)
    path = report.write_plot(_synthetic(), str(tmp_path / "s.png"))
    assert path and (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cpu_plot_says_the_fused_kernels_were_not_measured():
    import matplotlib.pyplot as plt
    fig, axes = report.plot_speedups(_synthetic("cpu"))
    try:
        words = " ".join(t.get_text() for t in fig.texts) + fig.get_suptitle()
        assert "fused Triton and CUDA kernels were NOT measured" in words
        assert "triton (not available (no GPU))" in words
        assert all(len([p for c in ax.containers for p in c]) == 1 for ax in axes)
    finally:
        plt.close(fig)


def test_usage_names_the_command_that_was_run(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["/usr/local/bin/mat-bench", "--help"])
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: mat-bench ") and "``" not in out and "python -m mat_kernels.cli.bench" in out
    monkeypatch.setattr("sys.argv", ["/x/mat_kernels/cli/bench.py", "--help"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m mat_kernels.cli.bench ")


def test_model_estimate_on_cpu_is_printed_before_the_model_runs(monkeypatch, capsys):
    from mat_kernels.bench import model
    events = []

    def fake_forward(res, batch, device):
        events.append(("probe", res, batch))
        return 3.0

    def fake_run_model(*args, **kwargs):
        events.append(("run",))
        return []
    monkeypatch.setattr(model, "time_forward", fake_forward)
    monkeypatch.setattr(model, "run_model", fake_run_model)
    assert main(["--model", "--device", "cpu", "--no-progress", "--no-save"]) == 0
    assert events == [("probe", 256, 1), ("run",)]
    err = capsys.readouterr().err
    # reference + auto (compile skipped on CPU), batch 1, fp32, 0 warm-up, 1 repeat:
    # 2 rows x 2 calls + 1 fp32 output = 5 forwards, 2 x 2 training steps of 10 forwards: 45 x 3 s.
    assert "the model part on CPU will take about 2 min" in err and "took 3.0 s" in err


def test_estimate_seconds_counts_rows_calls_and_batches():
    from mat_kernels.bench import model
    est = model.estimate_seconds(1.0, 1, [1, 2], ["reference", "auto", "compile"], ["fp32", "bf16-weights"],
                                 warmup=1, repeats=2, skip=["compile"])
    per_row = 1 + 1 + 2
    fp32 = (2 * per_row + 1) + 2 * per_row * model.TRAIN_STEP_FORWARDS
    weights = 2 * per_row + 1  # inference only
    assert est == pytest.approx((fp32 + weights) * (1 + 2))
