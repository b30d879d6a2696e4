"""The model-level harness: rows for every path, failures with reasons, the training step runs."""
import pytest
import torch
import torch.nn as nn

from mat_kernels.bench import model as M

CPU = torch.device("cpu")


class TinyG(nn.Module):
    """Stands in for the Generator: same call signature, a convolution instead of MAT."""

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels):
        super().__init__()
        self.conv = nn.Conv2d(img_channels + 1, img_channels, 3, padding=1)
        self.backend = None

    def set_backend(self, name):
        self.backend = name
        return self

    def forward(self, images, masks, z, c, noise_mode="random", return_stg1=False):
        dt = self.conv.weight.dtype  # inputs follow the weights, as in the real Generator
        images, masks, z = images.to(dt), masks.to(dt), z.to(dt)
        img = self.conv(torch.cat([images * masks, masks], 1)) + z.mean()
        return (img, img * 0.5) if return_stg1 else img


class TinyD(nn.Module):
    def __init__(self, c_dim, img_resolution, img_channels):
        super().__init__()
        self.fc = nn.Linear(img_channels, 1)

    def forward(self, images, masks, images_stg1, c):
        return self.fc(images.mean((2, 3))), self.fc(images_stg1.mean((2, 3)))


def test_model_rows_when_the_model_cannot_be_imported(monkeypatch):
    def missing():
        raise M.ModelUnavailable("model not available: ImportError: no models here")
    monkeypatch.setattr(M, "load_networks", missing)
    rows = M.run_model(256, [1, 2], CPU, 0, 1)
    assert len(rows) == len(M.WHATS) * 2 * len(M.MODEL_PATHS)
    assert all(r["status"] == "failed" and r["reason"].startswith("model not available") for r in rows)


def test_model_rows_with_stand_in_networks(monkeypatch):
    monkeypatch.setattr(M, "load_networks", lambda: (TinyG, TinyD))
    done = []
    rows = M.run_model(32, [2], CPU, 0, 2, paths=["reference", "auto", "compile"],
                       skip={"compile": "not on CPU"}, on_row_done=done.append)
    assert len(rows) == len(done) == 2 * 3
    ok = [r for r in rows if r["path"] != "compile"]
    assert all(r["status"] == "ok" and r["images_per_s"] == pytest.approx(2 / (r["median_ms"] / 1e3)) for r in ok)
    assert all(r["speedup_vs_reference"] is not None for r in ok)
    assert [r["status"] for r in rows if r["path"] == "compile"] == ["skipped", "skipped"]


def test_train_step_updates_both_networks():
    call = M.build_call(TinyG, TinyD, "train_step", "auto", 2, 16, CPU)
    G = call.__closure__  # the networks live in the closure; find them through the optimisers
    before = [c.cell_contents for c in G if isinstance(c.cell_contents, torch.optim.Adam)]
    params = [[p.detach().clone() for p in opt.param_groups[0]["params"]] for opt in before]
    loss_g, loss_d = call()
    assert torch.isfinite(loss_g) and torch.isfinite(loss_d)
    for opt, old in zip(before, params):
        assert any(not torch.equal(p, o) for p, o in zip(opt.param_groups[0]["params"], old))
    assert len(before) == 2


def test_generator_forward_uses_the_requested_backend(monkeypatch):
    made = []

    class G(TinyG):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)
    M.build_call(G, TinyD, "generator_forward", "auto", 1, 16, CPU)()
    M.build_call(G, TinyD, "generator_forward", "reference", 1, 16, CPU)()
    assert [g.backend for g in made] == ["auto", "reference"]
    with pytest.raises(ValueError, match="path"):
        M.build_call(G, TinyD, "generator_forward", "fast", 1, 16, CPU)


@pytest.mark.extended
def test_real_generator_forward_at_256():
    rows = M.run_model(256, [1], CPU, 0, 1, paths=["reference"], whats=["generator_forward"])
    assert rows[0]["status"] == "ok", rows[0]["reason"]


def test_precision_rows_report_their_error_against_fp32(monkeypatch):
    monkeypatch.setattr(M, "load_networks", lambda: (TinyG, TinyD))
    rows = {}
    for dtype in M.PRECISIONS:
        for r in M.run_model(16, [1], CPU, 0, 1, paths=["reference"], dtype=dtype):
            rows[(r["what"], dtype)] = r
    assert rows[("generator_forward", "fp32")]["rel_err_vs_fp32"] == 0.0
    for dtype in ("bf16", "bf16-weights"):
        err = rows[("generator_forward", dtype)]["rel_err_vs_fp32"]
        assert 0 < err < 2e-2, (dtype, err)  # bf16 rounding of a 3x3 conv: ~2^-8
    assert rows[("train_step", "bf16")]["status"] == "ok"
    assert rows[("train_step", "bf16-weights")]["status"] == "skipped"
    assert all(r["rel_err_vs_fp32"] is None for k, r in rows.items() if k[0] == "train_step")
    with pytest.raises(ValueError, match="dtype"):
        M.build_call(TinyG, TinyD, "generator_forward", "auto", 1, 16, CPU, "fp8")


def test_bad_model_dtype_names_the_argument(capsys):
    from mat_kernels.cli.bench import parser
    with pytest.raises(SystemExit):
        parser().parse_args(["--model", "--model-dtypes", "fp32,fp8"])
    err = capsys.readouterr().err
    assert "--model-dtypes" in err and "fp8" in err
