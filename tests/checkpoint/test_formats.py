"""mat_kernels.checkpoint.formats: state-dict files, this package's own format, remapping and
checks against the manifests, and loading into the real networks."""
from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from mat_kernels import checkpoint as ckpt
from mat_kernels import models
from mat_kernels.checkpoint import CheckpointError

from .official_pickles import _Evil, _assert_same_state_dict, _payload_src, _register_official_names, dump_official

# ----------------------------------------------------------------------------------------------
# (b) plain state dicts
# ----------------------------------------------------------------------------------------------


def _small_sd():
    gen = torch.Generator().manual_seed(3)
    return collections.OrderedDict(
        (k, torch.randn(s, generator=gen)) for k, s in
        [("mapping.w_avg", (5,)), ("mapping.fc0.weight", (5, 7)), ("synthesis.dec.Dec_16x16.toRGB.bias", (3,))])


@pytest.mark.parametrize("wrap", ["bare", "G_ema", "state_dict", "module_prefix", "G_ema_prefix"])
@pytest.mark.parametrize("zipfile", [True, False])
def test_state_dict_file_round_trip(tmp_path, wrap, zipfile):
    sd = _small_sd()
    obj = {
        "bare": sd,
        "G_ema": {"G_ema": sd, "D": {"x": torch.zeros(1)}},
        "state_dict": {"state_dict": sd, "epoch": 3},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "G_ema_prefix": {**{f"G_ema.{k}": v for k, v in sd.items()}, "D.x": torch.zeros(1)},
    }[wrap]
    path = tmp_path / "w.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=zipfile)
    got = ckpt.load_state_dicts(path)["G_ema"]
    _assert_same_state_dict(got, sd)


def test_remap_state_dict_is_pure():
    sd = {"module._orig_mod.G_ema.a.b": torch.zeros(1), "c": torch.ones(1)}
    before = dict(sd)
    out = ckpt.remap_state_dict(sd)
    assert list(out) == ["a.b", "c"]
    assert sd == before
    with pytest.raises(CheckpointError, match="collide"):
        ckpt.remap_state_dict({"module.a": torch.zeros(1), "a": torch.zeros(1)})


def test_state_dict_file_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"G_ema": _Evil(os.system, (f"touch {marker}",))}, path)
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load_state_dicts(path)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"hello world")
    with pytest.raises(CheckpointError, match="not a pickle"):
        ckpt.load_state_dicts(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ckpt.load_state_dicts(tmp_path / "nope.pkl")


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle", "safetensors"])
def test_truncated_file_is_named(tmp_path, fmt):
    sd = _small_sd()
    path = tmp_path / f"cut_{fmt}.pth"
    if fmt == "pickle":
        path.write_bytes(pickle.dumps({"G_ema": sd}, protocol=3))
    elif fmt == "safetensors":
        path = ckpt.save_checkpoint(tmp_path / "cut", sd).with_suffix(".safetensors")
    else:
        torch.save({"G_ema": sd}, path, _use_new_zipfile_serialization=fmt == "zip")
    ckpt.load_state_dicts(path)  # whole, it loads
    _truncate(path)
    with pytest.raises(CheckpointError, match="truncated or corrupted") as err:
        ckpt.load_state_dicts(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_pickled_module_says_what_the_loader_reads(tmp_path):
    path = tmp_path / "whole_module.pt"
    torch.save(nn.Linear(2, 3), path)
    with pytest.raises(ckpt.UnsafeCheckpointError) as err:
        ckpt.load_state_dicts(path)
    msg = str(err.value)
    assert isinstance(err.value, CheckpointError) and isinstance(err.value, pickle.UnpicklingError)
    assert str(path) in msg and "torch.nn.modules.linear.Linear" in msg
    assert "torch.save(model.state_dict(), path)" in msg and "safetensors" in msg and ".pkl" in msg
    assert "weights_only" not in msg  # an argument the user cannot pass here


def test_load_generator_checks_device_before_reading(tmp_path, monkeypatch):
    def never(*args, **kwargs):  # pragma: no cover - reached only if the check comes too late
        raise AssertionError("the checkpoint was read before the device was checked")

    monkeypatch.setattr(ckpt, "load_state_dicts", never)
    with pytest.raises(ValueError, match="device must be a torch device .* got 'gpu'"):
        ckpt.load_generator(tmp_path / "any.pth", device="gpu")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda:99': there are only"):
            ckpt.load_discriminator(tmp_path / "any.pth", device="cuda:99")
    else:
        for load in (ckpt.load_generator, ckpt.load_discriminator):
            with pytest.raises(ValueError, match="device='cuda' requested but CUDA is not available"):
                load(tmp_path / "any.pth", device="cuda")


# ----------------------------------------------------------------------------------------------
# (c) safetensors + JSON
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["dir", "stem", "suffix"])
def test_own_format_round_trip(tmp_path, target):
    sd = _small_sd()
    d_sd = {"Dis.0.conv.weight": torch.randn(2, 4, 1, 1)}
    dest = {"dir": tmp_path, "stem": tmp_path / "model", "suffix": tmp_path / "model.safetensors"}[target]
    cfg_path = ckpt.save_checkpoint(dest, sd, {"note": "test"}, D=d_sd)
    cfg = __import__("json").loads(cfg_path.read_text())
    assert cfg["resolution"] == 16 and cfg["w_dim"] == 5 and cfg["z_dim"] == 7 and cfg["c_dim"] == 0
    assert cfg["img_channels"] == 3 and cfg["note"] == "test"
    weights = cfg_path.with_suffix(".safetensors")
    assert weights.exists()
    assert b"torch_utils" not in weights.read_bytes()
    for src in (cfg_path, weights, cfg_path.parent):
        got = ckpt.load_state_dicts(src, which=("G_ema", "D"))
        _assert_same_state_dict(got["G_ema"], sd)
        _assert_same_state_dict(got["D"], d_sd)


def test_own_format_errors(tmp_path):
    sd = _small_sd()
    cfg_path = ckpt.save_checkpoint(tmp_path / "m", sd)
    with pytest.raises(CheckpointError, match=r"no 'D' network"):
        ckpt.load_state_dicts(cfg_path, which="D")
    with pytest.raises(CheckpointError, match="disagrees"):
        ckpt.save_checkpoint(tmp_path / "bad", sd, {"resolution": 512})
    cfg_path.with_suffix(".safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        ckpt.load_state_dicts(cfg_path)


# ----------------------------------------------------------------------------------------------
# Checks against the manifests
# ----------------------------------------------------------------------------------------------


def _sd_from_manifest(section):
    # Zero-stride views: the full 512 generator's names and shapes without its memory.
    return {k: torch.zeros(()).expand(v["shape"]) for k, v in section["entries"].items()}


@pytest.mark.parametrize("res", [256, 512])
def test_infer_config_from_manifest(manifest256, manifest512, res):
    man = manifest256 if res == 256 else manifest512
    g = ckpt.infer_generator_config(_sd_from_manifest(man["generator"]))
    assert g == {"resolution": res, "z_dim": 512, "c_dim": 0, "w_dim": 512, "img_channels": 3, "mapping_layers": 8,
                 "use_noise": True}
    d = ckpt.infer_discriminator_config(_sd_from_manifest(man["discriminator"]))
    assert d == {"resolution": res, "c_dim": 0, "img_channels": 3}


def test_check_state_dict_reports_missing_and_mismatched(manifest256):
    section = manifest256["generator"]
    sd = _sd_from_manifest(section)
    names = list(sd)
    ok = ckpt.check_state_dict(sd, section, what="Generator")
    assert list(ok) == names
    del sd[names[0]]
    sd[names[1]] = torch.zeros(7)
    with pytest.raises(CheckpointError) as err:
        ckpt.check_state_dict(sd, section, what="Generator")
    msg = str(err.value)
    assert "1 missing entries: " + names[0] in msg
    assert f"{names[1]}: checkpoint (7,) vs model {tuple(section['entries'][names[1]]['shape'])}" in msg


def test_check_state_dict_warns_on_extra(manifest256):
    section = manifest256["discriminator"]
    sd = _sd_from_manifest(section)
    sd["old.unused"] = torch.zeros(1)
    with pytest.warns(UserWarning, match="ignoring 1 checkpoint entries.*old.unused"):
        out = ckpt.check_state_dict(sd, section, what="Discriminator")
    assert "old.unused" not in out and len(out) == len(section["entries"])


# ----------------------------------------------------------------------------------------------
# With the real networks (mat_kernels.models)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def g256_formats(tmp_path_factory):
    """A random-init 256 generator and the same weights in all three formats."""
    torch.manual_seed(7)
    G = models.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3).eval()
    # Non-trivial buffers too (w_avg is zeros at init).
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    d = tmp_path_factory.mktemp("g256")
    paths = {}
    mp = pytest.MonkeyPatch()
    try:
        _register_official_names(mp)
        dump_official({"G": G, "G_ema": G, "D": G}, d / "official.pkl", _payload_src(d / "executed.txt"),
                      persist_all=True, sanitize=True)
    finally:
        mp.undo()
    paths["official"] = d / "official.pkl"
    torch.save({"G_ema": G.state_dict()}, d / "sd.pth")
    paths["pth"] = d / "sd.pth"
    paths["ours"] = ckpt.save_checkpoint(d / "ours", G)
    yield G, paths
    assert not (d / "executed.txt").exists()


@pytest.fixture(scope="module")
def g256_source_output(g256_formats):
    """The source generator's output on a fixed input (one CPU forward, shared)."""
    G, _ = g256_formats
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 256, 256, generator=gen) * 2 - 1
    mask = (torch.rand(1, 1, 256, 256, generator=gen) > 0.4).float()
    z = torch.randn(1, 512, generator=gen)
    inputs = (img, mask, z, torch.zeros(1, 0))
    with torch.no_grad():
        torch.manual_seed(5)  # the forward draws two dropout maps from the global RNG
        out = G(*inputs, noise_mode="const")
    return inputs, out


def _forward(G, inputs):
    with torch.no_grad():
        torch.manual_seed(5)
        return G(*inputs, noise_mode="const")


@pytest.mark.parametrize("fmt", ["official", "pth", "ours"])
def test_load_generator_matches_source(g256_formats, fmt):
    """Every entry and the mapping output are identical (cheap); the full forward of the
    official-format load is compared in the next test, the others under the extended mark."""
    G, paths = g256_formats
    loaded = ckpt.load_generator(paths[fmt], resolution=256)
    assert isinstance(loaded, models.Generator)
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    _assert_same_state_dict(loaded.state_dict(), G.state_dict())
    z = torch.randn(3, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.mapping(z, None, truncation_psi=0.7), G.mapping(z, None, truncation_psi=0.7))


def test_load_generator_forward_matches_source_official(g256_formats, g256_source_output):
    _, paths = g256_formats
    inputs, want = g256_source_output
    assert torch.equal(_forward(ckpt.load_generator(paths["official"]), inputs), want)


@pytest.mark.extended
@pytest.mark.parametrize("fmt", ["pth", "ours"])
def test_load_generator_forward_matches_source(g256_formats, g256_source_output, fmt):
    _, paths = g256_formats
    inputs, want = g256_source_output
    assert torch.equal(_forward(ckpt.load_generator(paths[fmt]), inputs), want)


def test_load_generator_wrong_resolution(g256_formats):
    _, paths = g256_formats
    with pytest.raises(CheckpointError, match="resolution=512 was requested.*256"):
        ckpt.load_generator(paths["ours"], resolution=512)


def test_load_generator_missing_entry(g256_formats, tmp_path):
    G, _ = g256_formats
    sd = dict(G.state_dict())
    victim = "mapping.fc3.weight"
    del sd[victim]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=rf"missing entries: {victim}"):
        ckpt.load_generator(tmp_path / "broken.pth")


def test_load_discriminator_from_official_pickle(official_names, tmp_path):
    torch.manual_seed(3)
    D = models.Discriminator(c_dim=0, img_resolution=256, img_channels=3).eval()
    G_stub = nn.Module()
    marker = tmp_path / "executed.txt"
    dump_official({"G": G_stub, "G_ema": G_stub, "D": D}, tmp_path / "d.pkl", _payload_src(marker),
                  persist_all=True, sanitize=True)
    official_names.undo()
    loaded = ckpt.load_discriminator(tmp_path / "d.pkl")
    _assert_same_state_dict(loaded.state_dict(), D.state_dict())
    assert not marker.exists()
