"""mat-train: optimiser/EMA settings, gradient checkpointing, and exact resume under torchrun.

The loop runs here against tiny stand-in networks (tests/train/tiny_models.py) with MAT's
interfaces: a real MAT step at 256x256 on a 2-core CPU takes far too long for CI, so the real
networks get a single-process smoke step marked `extended` (test_real_mat_step).
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mat_kernels.train.losses import TwoStageLoss
from mat_kernels.train import TrainConfig, build_parser, config_from_args, train
from mat_kernels.train.loop import enable_grad_checkpointing, find_latest_checkpoint, parameter_digest

from . import tiny_models

REPO = Path(__file__).resolve().parents[2]
TINY = "tests.train.tiny_models:build"


def _args(data, out, *extra):
    return ["--data", str(data), "--out-dir", str(out), "--resolution", "32", "--model", TINY, "--batch", "2",
            "--z-dim", "16", "--w-dim", "16", "--workers", "0", "--G-reg-interval", "2", "--D-reg-interval", "2",
            "--log-every", "1", "--no-progress", "--device", "cpu", *map(str, extra)]


def test_defaults_follow_the_readme_places_command():
    cfg = config_from_args(["--data", "x"])
    # batch: 32 on CUDA (README), resolved at start (tests/train/test_cli.py)
    assert (cfg.batch, cfg.lr, cfg.pcp_ratio, cfg.truncation_psi, cfg.style_mixing_prob) == (None, 0.001, 0.1, 0.5, 0.5)
    assert (cfg.betas, cfg.eps, cfg.r1_gamma, cfg.ema_kimg, cfg.mirror) == ((0.0, 0.99), 1e-8, 10.0, 10.0, True)
    assert (cfg.G_reg_interval, cfg.D_reg_interval, cfg.mapping_layers) == (4, 16, 8)
    with pytest.raises(ValueError, match="--data"):
        TrainConfig().validate()
    with pytest.raises(ValueError, match="--stop-at-step"):
        config_from_args(["--data", "x", "--total-steps", "3", "--stop-at-step", "5"])
    assert "--grad-checkpoint" in build_parser().format_help()


def test_single_process_run_optimiser_ema_and_outputs(image_dirs, vgg_path, tmp_path):
    train_dir, val_dir = image_dirs
    out = tmp_path / "run"
    cfg = config_from_args(_args(train_dir, out, "--total-steps", "1", "--val-data", val_dir, "--vgg-path", vgg_path,
                                 "--amp", "--sample-images", "2", "--eval-images", "3", "--ema-kimg", "0.01"))
    res = train(cfg)
    assert res["step"] == 1 and os.path.basename(res["checkpoint"]) == "checkpoint-00000001.pt"
    assert find_latest_checkpoint(str(out)) == res["checkpoint"]
    stats = res["stats"]
    for k in ("G/loss", "G/loss_s1", "G/pcp", "D/loss", "D/loss_s1", "D/r1", "D/r1_s1", "val/psnr", "val/ssim", "val/l1"):
        assert k in stats and torch.isfinite(torch.tensor(stats[k])), k
    assert (out / "stats.jsonl").read_text().count("\n") == 1
    assert (out / "samples" / "step-00000001.png").is_file()

    ck = torch.load(res["checkpoint"], weights_only=True)
    g, d = ck["opt_G"]["param_groups"][0], ck["opt_D"]["param_groups"][0]
    assert g["lr"] == pytest.approx(0.001 * 2 / 3) and g["betas"] == pytest.approx((0.0, 0.99 ** (2 / 3)))
    assert d["lr"] == pytest.approx(0.001 * 2 / 3) and g["eps"] == 1e-8
    # EMA after one step: G_ema = lerp(G_1, G_0, beta) with beta = 0.5 ** (batch / ema_nimg)
    torch.manual_seed(cfg.seed)
    G0, _ = tiny_models.build(cfg)
    beta = 0.5 ** (2 / 10.0)
    init = dict(G0.named_parameters())
    for name, p in ck["G"].items():
        if name in init:
            torch.testing.assert_close(ck["G_ema"][name], p.lerp(init[name], beta), rtol=0, atol=0)
        else:  # buffers are copied from G
            assert torch.equal(ck["G_ema"][name], p)
    assert not torch.equal(ck["G"]["synthesis.to_rgb.weight"], init["synthesis.to_rgb.weight"])


def test_amp_modes_and_compile_flags():
    for args, mode in ((["--amp", "bf16"], "bf16"), (["--amp", "fp16"], "fp16"), (["--amp"], "auto"), ([], "off"),
                       (["--no-amp"], "off"), (["--amp", "true"], "auto"), (["--amp", "off"], "off")):
        assert config_from_args(["--data", "x", *args]).amp == mode, args
    assert TrainConfig(data="x", amp=True).validate().amp == "bf16"
    with pytest.raises(SystemExit):
        config_from_args(["--data", "x", "--amp", "fp8"])
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(data="x", amp="int8").validate()
    assert config_from_args(["--data", "x", "--compile"]).compile is True


def test_fp16_amp_with_grad_scaler_and_compile(image_dirs, tmp_path, monkeypatch):
    """fp16 autocast scales every loss with a GradScaler per optimiser; --compile compiles the
    modules the loss calls except the R1 discriminator (double backward)."""
    train_dir, _ = image_dirs
    scaled = []
    real_scale = torch.amp.GradScaler.scale
    monkeypatch.setattr(torch.amp.GradScaler, "scale", lambda self, x: scaled.append(x.dtype) or real_scale(self, x))
    compiled = []
    real_compile = torch.compile
    # the wiring only (eager backend): inductor itself is tested on the real blocks in tests/nn
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(m) or real_compile(m, backend="eager"))
    cfg = config_from_args(_args(train_dir, tmp_path / "run", "--total-steps", "2", "--pcp-ratio", "0",
                                 "--amp", "fp16", "--compile"))
    res = train(cfg)
    assert res["step"] == 2
    # steps 0 and 1: Gmain (1 loss) + Dmain (2) every step, Dreg (1) at step 0
    assert len(scaled) == 7
    assert len(compiled) == 3
    for k in ("G/loss", "D/loss"):
        assert torch.isfinite(torch.tensor(res["stats"][k])), k


def test_grad_checkpointing_gives_identical_gradients():
    cfg = TrainConfig(data="x", z_dim=16, w_dim=16, resolution=32)
    torch.manual_seed(0)
    G, D = tiny_models.build(cfg)
    G2 = copy.deepcopy(G)
    assert enable_grad_checkpointing(G2, ("BasicLayer",)) == 1
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    z, c = torch.randn(2, 16), torch.zeros(2, 0)
    grads = []
    for g in (G, G2):
        g.requires_grad_(True)
        loss = TwoStageLoss(g.mapping, g.synthesis, D.requires_grad_(False), pcp=None, pcp_ratio=0,
                            style_mixing_prob=0.5, truncation_psi=0.5)
        torch.manual_seed(1)
        loss.accumulate_gradients("Gmain", img, mask, c, z, c, gain=1.0)
        grads.append([p.grad for p in g.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="checkpoint_modules"):
        enable_grad_checkpointing(G, ("NoSuchBlock",))


def test_grad_checkpointing_on_mats_basic_layer():
    from mat_kernels.nn.blocks import BasicLayer
    torch.manual_seed(0)
    layer = BasicLayer(dim=12, input_resolution=[8, 8], depth=2, num_heads=2, window_size=4)
    wrapped = copy.deepcopy(layer)
    holder = torch.nn.ModuleList([wrapped])
    assert enable_grad_checkpointing(holder, ("BasicLayer",)) == 1
    x = torch.randn(2, 64, 12)
    mask = (torch.rand(2, 64, 1) > 0.3).float()
    outs, grads = [], []
    for m in (layer, wrapped):
        xi = x.clone().requires_grad_(True)
        y, size, new_mask = m(xi, (8, 8), mask)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append((y.detach(), new_mask))
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=0, atol=0)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_parameter_digest_sees_every_bit():
    m = torch.nn.Module()
    m.scalar = torch.nn.Parameter(torch.tensor(1.5))          # 0-d parameters occur in MAT
    m.w = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.bfloat16))
    d0 = parameter_digest(m)
    assert parameter_digest(copy.deepcopy(m)) == d0
    with torch.no_grad():
        m.scalar.copy_(torch.nextafter(torch.tensor(1.5), torch.tensor(2.0)))
    assert parameter_digest(m) != d0


def _torchrun(args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mat_kernels.cli.train", *args]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"torchrun failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-6000:]}"
    return r.stdout + r.stderr


def test_torchrun_two_ranks_resume_is_bit_exact(image_dirs, vgg_path, tmp_path):
    train_dir, _ = image_dirs
    common = ["--total-steps", "4", "--ckpt-every", "2", "--vgg-path", vgg_path, "--batch", "4"]
    full, part = tmp_path / "full", tmp_path / "part"
    _torchrun(_args(train_dir, full, *common))
    _torchrun(_args(train_dir, part, *common, "--stop-at-step", "2"))   # "killed" after step 2's checkpoint
    assert sorted(os.listdir(part)) == ["checkpoint-00000002.pt", "samples", "stats.jsonl"]
    log = _torchrun(_args(train_dir, part, *common, "--resume", "latest"))
    assert "resumed from" in log and "at step 2" in log

    a = torch.load(full / "checkpoint-00000004.pt", weights_only=True)
    b = torch.load(part / "checkpoint-00000004.pt", weights_only=True)
    mid = torch.load(full / "checkpoint-00000002.pt", weights_only=True)
    assert a["step"] == b["step"] == 4 and a["world_size"] == 2

    def same(x, y, where):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), where
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                same(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                same(u, v, f"{where}[{i}]")
        else:
            assert x == y, where

    for key in ("G", "D", "G_ema", "opt_G", "opt_D"):
        same(a[key], b[key], key)
    # every rank's parameters are identical, and identical between the two runs
    digests = {r["param_digest"] for r in a["ranks"] + b["ranks"]}
    assert len(digests) == 1
    # per-rank state restored: the mapping's w_avg differs between ranks (different z), yet each
    # rank's continues exactly; so do the RNG states
    for ra, rb in zip(a["ranks"], b["ranks"]):
        same(ra, rb, "ranks")
    assert not torch.equal(a["ranks"][0]["G_buffers"]["mapping.w_avg"], a["ranks"][1]["G_buffers"]["mapping.w_avg"])
    # training did move the weights between the two checkpoints
    assert not torch.equal(mid["G"]["synthesis.to_rgb.weight"], a["G"]["synthesis.to_rgb.weight"])
    assert not torch.equal(mid["D"]["b.fc.weight"], a["D"]["b.fc.weight"])


@pytest.mark.extended
@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_real_mat_step(image_dirs, tmp_path, amp):
    """One step of the real MAT networks at 256 (single process, no perceptual loss)."""
    from PIL import Image
    import numpy as np
    data = tmp_path / "d256"
    data.mkdir()
    rng = np.random.RandomState(0)
    for i in range(2):
        Image.fromarray(rng.randint(0, 256, (256, 256, 3)).astype(np.uint8)).save(data / f"{i}.png")
    cfg = TrainConfig(data=str(data), out_dir=str(tmp_path / "run"), resolution=256, batch=2, total_steps=1,
                      workers=0, pcp_ratio=0.0, progress=False, device="cpu", mbstd_group=2, amp=amp)
    res = train(cfg)
    assert res["step"] == 1
    for k in ("G/loss", "D/loss", "D/r1"):
        assert torch.isfinite(torch.tensor(res["stats"][k])), k


@pytest.mark.gpu
@pytest.mark.parametrize("amp,compile", [("bf16", False), ("fp16", False), ("bf16", True)])
def test_real_mat_cuda_amp_grad_checkpoint(tmp_path, amp, compile):
    """Two steps of the real networks at 256 on CUDA with autocast and gradient checkpointing
    (or compiled)."""
    from PIL import Image
    import numpy as np
    data = tmp_path / "d256"
    data.mkdir()
    rng = np.random.RandomState(0)
    for i in range(4):
        Image.fromarray(rng.randint(0, 256, (300, 280, 3)).astype(np.uint8)).save(data / f"{i}.png")
    cfg = TrainConfig(data=str(data), val_data=str(data), out_dir=str(tmp_path / "run"), resolution=256, batch=4,
                      total_steps=2, workers=0, pcp_ratio=0.0, progress=False, device="cuda", amp=amp,
                      grad_checkpoint=not compile, compile=compile, G_reg_interval=2, D_reg_interval=2, eval_images=2, sample_images=2)
    res = train(cfg)
    assert res["step"] == 2
    for k in ("G/loss", "D/loss", "D/r1", "val/psnr"):
        assert torch.isfinite(torch.tensor(res["stats"][k])), k
