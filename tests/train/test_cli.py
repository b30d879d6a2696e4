"""mat-train as a user meets it: plain flags, help for every option, one-line errors (exit status 2,
no traceback) checked before any network is built, resume checks, default batch and memory
warnings, exports, and what the run logs (issue #15)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mat_kernels.train import TrainConfig, build_parser, config_from_args, train
from mat_kernels.train import loop, preflight as pf
from mat_kernels.cli.train import main
from mat_kernels.train.samples import COLUMNS, labelled_grid

REPO = Path(__file__).resolve().parents[2]
TINY = "tests.train.tiny_models:build"


def _args(data, out, *extra):
    return ["--data", str(data), "--out-dir", str(out), "--resolution", "32", "--model", TINY, "--batch", "2",
            "--z-dim", "16", "--w-dim", "16", "--workers", "0", "--G-reg-interval", "2", "--D-reg-interval", "2",
            "--log-every", "1", "--no-progress", "--device", "cpu", "--pcp-ratio", "0", *map(str, extra)]


def _cli_error(capsys, argv) -> str:
    """Run ``mat-train argv`` in-process; it must exit with status 2 and one error line. Returns it."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("mat-train: error: ") and len(lines) == 2, err   # short usage + the error
    return lines[-1][len("mat-train: error: "):]


@pytest.fixture
def no_networks(monkeypatch):
    """Building a network fails the test: the checks must come first."""
    def refuse(cfg):
        raise AssertionError("a network was built before the options were checked")
    monkeypatch.setattr(loop, "build_networks", refuse)


@pytest.fixture
def no_vgg(monkeypatch, tmp_path):
    monkeypatch.delenv("MAT_KERNELS_VGG19", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


# --------------------------------------------------------------------------------------------- parser
def test_every_option_has_help_text():
    for action in build_parser()._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = re.sub(r"\(?default: (%\(default\)s|on|off)\)?", "", action.help or "").strip()
        assert len(text.split()) >= 2, f"{action.option_strings} has no help text: {action.help!r}"


def test_boolean_options_are_plain_flags():
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.type in ("bool", "Optional[bool]")]
    assert set(names) == {"mirror", "compile", "grad_checkpoint", "progress", "tensorboard", "export_weights"}
    for name in names:
        opt = name.replace("_", "-")
        assert getattr(config_from_args(["--data", "x", f"--{opt}"]), name) is True, name
        assert getattr(config_from_args(["--data", "x", f"--no-{opt}"]), name) is False, name
    assert config_from_args(["--data", "x", "--amp"]).amp == "auto"
    assert config_from_args(["--data", "x", "--amp", "bf16", "--compile"]).amp == "bf16"
    assert config_from_args(["--data", "x", "--amp", "--no-amp"]).amp == "off"
    assert config_from_args(["--data", "x", "--keep", "5"]).keep_ckpts == 5
    assert pf.resolve_amp("auto", torch.device("cpu")) == "bf16"


def test_help_says_what_checkpoints_hold_and_how_to_export():
    text = " ".join(build_parser().format_help().split())
    assert "--keep N" in text and "both Adam states, which --resume needs" in text
    assert "--export-weights" in text and "mat-inpaint --checkpoint" in text and "mat-train export" in text


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("case", ["no_data", "missing_data", "empty_data", "missing_val", "stop", "steps", "amp",
                                  "model", "resume_missing", "resume_latest", "resume_not_ckpt", "tensorboard",
                                  "export_custom", "device"])
def test_option_errors_are_one_line_before_any_network(case, image_dirs, tmp_path, capsys, no_networks,
                                                       monkeypatch):
    train_dir, _ = image_dirs
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(pf, "has_tensorboard", lambda: False)
    base = _args(train_dir, tmp_path / "run")
    argv, expected = {
        "no_data": (["--resolution", "32"], "the following arguments are required: --data"),
        "missing_data": (base + ["--data", str(tmp_path / "nope")], "--data: folder"),
        "empty_data": (base + ["--data", str(tmp_path / "empty")], "--data: no image files"),
        "missing_val": (base + ["--val-data", str(tmp_path / "nope")], "--val-data: folder"),
        "stop": (base + ["--total-steps", "3", "--stop-at-step", "5"], "--stop-at-step: expected 1..--total-steps"),
        "steps": (base + ["--total-steps", "0"], "--total-steps: expected a positive value"),
        "amp": (base + ["--amp", "fp8"], "argument --amp: expected bf16 or fp16"),
        "model": (base + ["--model", "tests.train.tiny_models:nothing"], "--model: cannot load"),
        "resume_missing": (base + ["--resume", str(tmp_path / "nope.pt")], "--resume: checkpoint"),
        "resume_latest": (base + ["--resume", "latest"], "--resume latest: no checkpoint-*.pt in --out-dir"),
        "resume_not_ckpt": (base + ["--resume", str(tmp_path / "junk.pt")], "is not a mat-train training checkpoint"),
        "tensorboard": (base + ["--tensorboard"], "--tensorboard: the tensorboard package is not installed"),
        "export_custom": (base + ["--export-weights"], "--export-weights: only --model mat"),
        "device": (base + ["--device", "cuda"], "--device: cuda requested but CUDA is not available"),
    }[case]
    if case == "device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    msg = _cli_error(capsys, argv)
    assert expected in msg, msg


def test_missing_vgg19_names_the_flag_env_var_and_pcp_ratio_0(image_dirs, tmp_path, capsys, no_networks, no_vgg):
    train_dir, _ = image_dirs
    argv = _args(train_dir, tmp_path / "run")
    argv = argv[:argv.index("--pcp-ratio")]   # the default perceptual loss
    msg = _cli_error(capsys, argv)
    assert msg.startswith("--vgg-path: VGG19 weights for the perceptual loss not found")
    assert "MAT_KERNELS_VGG19" in msg and "--pcp-ratio 0" in msg and "vgg_path" not in msg
    msg = _cli_error(capsys, argv + ["--vgg-path", str(tmp_path / "nope.pth")])
    assert msg.startswith("--vgg-path: ") and "does not exist" in msg and "--pcp-ratio 0" in msg


def test_a_file_that_is_not_vgg19_is_a_one_line_error(image_dirs, tmp_path, capsys):
    train_dir, _ = image_dirs
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pth")
    argv = _args(train_dir, tmp_path / "run", "--total-steps", "1")
    argv = argv[:argv.index("--pcp-ratio")] + ["--vgg-path", str(tmp_path / "other.pth")]
    assert _cli_error(capsys, argv).startswith("--vgg-path: cannot load the VGG19 weights")


def test_bad_checkpoint_modules_is_a_one_line_error(image_dirs, tmp_path, capsys):
    train_dir, _ = image_dirs
    argv = _args(train_dir, tmp_path / "run", "--grad-checkpoint", "--checkpoint-modules", "NoSuchBlock")
    assert _cli_error(capsys, argv).startswith("--checkpoint-modules: no submodule of class ['NoSuchBlock']")


def test_cli_error_from_a_real_process_has_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "mat_kernels.cli.train", "--data", str(tmp_path / "nope")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"mat-train: error: --data: folder {str(tmp_path / 'nope')!r} does not exist"


# --------------------------------------------------------------------------------------------- resume
def test_resume_checks_resolution_and_warns_about_batch(image_dirs, tmp_path, capsys):
    train_dir, _ = image_dirs
    out = tmp_path / "run"
    assert main(_args(train_dir, out, "--total-steps", "2", "--stop-at-step", "1")) == 0
    capsys.readouterr()
    msg = _cli_error(capsys, _args(train_dir, out, "--total-steps", "2", "--resume", "latest") + ["--resolution", "64"])
    assert msg.startswith("--resolution: the checkpoint") and "was trained with --resolution 32, got 64" in msg
    assert len(msg) < 400

    # without --batch the checkpoint's is used; another --batch is accepted with a warning
    argv = _args(train_dir, out, "--total-steps", "2", "--resume", "latest")
    no_batch = argv[:argv.index("--batch")] + argv[argv.index("--batch") + 2:]
    checked = pf.preflight(config_from_args(no_batch), torch.device("cpu"), 1)
    assert checked.cfg.batch == 2 and checked.notes == []
    assert main(argv + ["--batch", "4"]) == 0
    err = capsys.readouterr().err
    assert "mat-train: warning: --batch 4 differs from the checkpoint's (2)" in err and "not exactly" in err


# --------------------------------------------------------------------------------------------- batch / memory
def test_cpu_default_batch_fits_the_memory_estimate_and_big_runs_warn(monkeypatch):
    gib = 2 ** 30
    monkeypatch.setattr(pf, "available_memory", lambda device: 24 * gib)
    cfg = TrainConfig(data="x", resolution=128)
    monkeypatch.setattr(pf, "_check_folder", lambda *a: None)
    checked = pf.preflight(dataclasses.replace(cfg, pcp_ratio=0), torch.device("cpu"), 1)
    b = checked.cfg.batch
    assert b < 32 and b & (b - 1) == 0
    assert pf.estimate_memory(128, b) <= pf.MEM_HEADROOM * 24 * gib < pf.estimate_memory(128, 2 * b)
    assert any("CPU default" in n for n in checked.notes)
    assert not any(n.startswith("warning") for n in checked.notes)
    # the run: --batch 32 at 128 px on a 24 GiB machine is warned about, with a batch that fits
    checked = pf.preflight(dataclasses.replace(cfg, pcp_ratio=0, batch=32), torch.device("cpu"), 1)
    warn = [n for n in checked.notes if n.startswith("warning")]
    assert len(warn) == 1 and "--batch 32 at --resolution 128 needs about" in warn[0]
    fits = max(x for x in range(1, 32) if pf.estimate_memory(128, x) <= pf.MEM_HEADROOM * 24 * gib)
    assert f"--batch {fits} fits" in warn[0] and fits >= b
    # CUDA keeps the README's 32
    assert pf._default_batch(cfg, torch.device("cuda"), 1, 80 * gib, []) == 32


def test_available_memory_reads_the_host():
    avail = pf.available_memory(torch.device("cpu"))
    assert avail is not None and 0 < avail <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# --------------------------------------------------------------------------------------------- logging
def test_log_separates_training_and_evaluation_time(image_dirs, tmp_path, monkeypatch):
    import time
    train_dir, val_dir = image_dirs
    monkeypatch.setattr(loop._Trainer, "evaluate", lambda self: time.sleep(1.5) or {"val/psnr": 1.0})
    res = train(config_from_args(_args(train_dir, tmp_path / "run", "--total-steps", "2", "--val-data", val_dir,
                                       "--eval-every", "1", "--sample-images", "1")))
    recs = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and res["stats"] == recs[-1]
    for rec in recs:
        assert rec["eval_sec"] >= 1.5 and rec["sec_per_step"] < 1.0, rec


def test_samples_without_val_data_come_from_training_images_with_labels(image_dirs, tmp_path, capsys):
    train_dir, _ = image_dirs
    out = tmp_path / "run"
    train(config_from_args(_args(train_dir, out, "--total-steps", "1", "--sample-images", "3")))
    grid = np.asarray(Image.open(out / "samples" / "step-00000001.png"))
    header = grid.shape[0] - 3 * 32
    assert grid.shape[1] == 3 * 32 and 0 < header < 32
    for col in range(3):  # every column has a label: dark pixels in its header cell
        assert (grid[:header, col * 32:(col + 1) * 32] < 128).any(), col
    assert "sample grids (input | output | ground truth) from the first 3 training images" in capsys.readouterr().out


def test_labelled_grid_names_the_columns():
    rows = np.full((2, 64, 3 * 256, 3), 128, np.uint8)
    grid = labelled_grid(rows)
    header = grid.shape[0] - 2 * 64
    assert 8 < header < 40 and np.array_equal(grid[header:], rows.reshape(-1, 3 * 256, 3))
    assert COLUMNS == ("input", "output", "ground truth")
    for col in range(3):
        assert (grid[:header, col * 256:(col + 1) * 256] < 128).any(), col
    with pytest.raises(ValueError, match="rows"):
        labelled_grid(rows[:, :, :100])


@pytest.mark.parametrize("installed", [False, True])
def test_log_says_whether_tensorboard_is_used(image_dirs, tmp_path, capsys, monkeypatch, installed):
    train_dir, _ = image_dirs
    monkeypatch.setattr(pf, "has_tensorboard", lambda: installed)
    monkeypatch.setattr(loop, "has_tensorboard", lambda: installed)
    events = []
    if installed:  # a stand-in writer: the tensorboard package is not needed for the wiring
        import types
        fake = types.ModuleType("torch.utils.tensorboard")
        fake.SummaryWriter = lambda d: types.SimpleNamespace(
            add_scalar=lambda k, v, global_step: events.append(k), flush=lambda: None, close=lambda: None)
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    train(config_from_args(_args(train_dir, tmp_path / "run", "--total-steps", "1")))
    out = capsys.readouterr().out
    jsonl = os.path.join(str(tmp_path / "run"), "stats.jsonl")
    if installed:
        assert f"logging to {jsonl} (JSON lines) and TensorBoard events" in out and "G/loss" in events
    else:
        assert f"logging to {jsonl} (JSON lines; TensorBoard not installed: pip install tensorboard" in out


def test_no_progress_bar_redraws_in_a_log_file(image_dirs, tmp_path, capsys):
    train_dir, _ = image_dirs
    argv = [a for a in _args(train_dir, tmp_path / "run", "--total-steps", "2") if a != "--no-progress"]
    train(config_from_args(argv))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "\r" not in text and "it/s" not in text
    assert text.count("step 2/2 |") == 1


def test_final_progress_bar_line_is_drawn_once_on_a_terminal(image_dirs, tmp_path):
    import fcntl
    import pty
    import struct
    import termios
    train_dir, _ = image_dirs
    argv = [a for a in _args(train_dir, tmp_path / "run", "--total-steps", "3") if a != "--no-progress"]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "mat_kernels.cli.train", *argv], cwd=REPO, env=env,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert text.count("3/3 [") == 1, text   # tqdm's "3/3 [elapsed<remaining]" counter
    assert text.index("3/3 [") < text.index("step 3/3 |"), text


# --------------------------------------------------------------------------------------------- export / --keep
def test_export_subcommand_writes_what_mat_inpaint_reads(tmp_path, capsys):
    from mat_kernels.checkpoint import load_generator
    from mat_kernels.models import Generator
    torch.manual_seed(0)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=128, img_channels=3)
    ckpt = tmp_path / "checkpoint-00000007.pt"
    torch.save({"step": 7, "G_ema": G.state_dict(), "config": {"resolution": 128}}, ckpt)
    assert main(["export", str(ckpt)]) == 0
    js = tmp_path / "weights-00000007.json"
    assert f"wrote {js}" in capsys.readouterr().out
    assert json.loads(js.read_text())["training_step"] == 7
    loaded = load_generator(js).state_dict()
    for k, v in G.state_dict().items():
        assert torch.equal(loaded[k], v), k
    assert _cli_error(capsys, ["export", str(tmp_path / "nope.pt")]).startswith("CKPT: ")
    assert "no 'G' network" in _cli_error(capsys, ["export", str(ckpt), "--which", "G"])


def test_export_weights_beside_each_checkpoint_pruned_with_keep(image_dirs, tmp_path, monkeypatch):
    """The run-time wiring (the tiny stand-in networks cannot be written in MAT's format: the
    writer is replaced by one that records what it was given)."""
    train_dir, _ = image_dirs
    out = tmp_path / "run"
    written = []

    def fake_export(state, stem):
        written.append((state["step"], Path(stem).name, sorted(state["G_ema"]) == sorted(state["G"])))
        for ext in (".json", ".safetensors"):
            Path(f"{stem}{ext}").write_text("x")
    monkeypatch.setattr(loop, "export_weights", fake_export)
    cfg = config_from_args(_args(train_dir, out, "--total-steps", "3", "--ckpt-every", "1", "--keep", "2"))
    checked = pf.preflight(cfg, torch.device("cpu"), 1)
    assert checked.cfg.export_weights is False   # default: on for --model mat only
    cfg = dataclasses.replace(checked.cfg, export_weights=True)
    loop._Trainer(cfg, 0, 1, torch.device("cpu")).run()
    assert written == [(1, "weights-00000001", True), (2, "weights-00000002", True), (3, "weights-00000003", True)]
    assert sorted(os.listdir(out)) == ["checkpoint-00000002.pt", "checkpoint-00000003.pt", "samples", "stats.jsonl",
                                       "weights-00000002.json", "weights-00000002.safetensors",
                                       "weights-00000003.json", "weights-00000003.safetensors"]
    assert pf.preflight(dataclasses.replace(cfg, model="mat", export_weights=None, resolution=128),
                        torch.device("cpu"), 1).cfg.export_weights is True
