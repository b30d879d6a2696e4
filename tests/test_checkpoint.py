"""mat_kernels.checkpoint: safe reading of official pickles, state-dict files and our own format.

The official-format pickles are written here by a small pickler that emulates
``torch_utils.persistence``: every "persistent" module becomes a REDUCE of
``torch_utils.persistence._reconstruct_persistent_obj`` with a meta dict whose ``module_src``
would create a marker file if it were ever exec'd; torch.nn containers, parameters, storages
(``torch.storage._load_from_bytes``), numpy scalars, sets and EasyDicts are pickled the way
torch/numpy/pickle really pickle them.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mat_kernels import checkpoint as ckpt
from mat_kernels import models
from mat_kernels.checkpoint import CheckpointError

# ----------------------------------------------------------------------------------------------
# Emulation of the official persistent-class pickles
# ----------------------------------------------------------------------------------------------


def _payload_src(marker: Path) -> str:
    """Source text that creates ``marker`` when exec'd (as the official loader would)."""
    return (
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('module_src was executed')\n"
        "class Generator:\n    pass\n"
    )


def _never_called(meta):  # pragma: no cover - only its name is pickled
    raise AssertionError("the official reconstruct function must never be called")


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (a dict subclass), pickled under that name."""


def _register_official_names(monkeypatch):
    tu = types.ModuleType("torch_utils")
    tup = types.ModuleType("torch_utils.persistence")
    _never_called.__module__ = "torch_utils.persistence"
    _never_called.__qualname__ = _never_called.__name__ = "_reconstruct_persistent_obj"
    tup._reconstruct_persistent_obj = _never_called
    tu.persistence = tup
    dn = types.ModuleType("dnnlib")
    dnu = types.ModuleType("dnnlib.util")
    _EasyDict.__module__, _EasyDict.__qualname__, _EasyDict.__name__ = "dnnlib.util", "EasyDict", "EasyDict"
    dnu.EasyDict = _EasyDict
    dn.util = dnu
    for name, mod in (("torch_utils", tu), ("torch_utils.persistence", tup), ("dnnlib", dn), ("dnnlib.util", dnu)):
        monkeypatch.setitem(sys.modules, name, mod)
    return monkeypatch


@pytest.fixture
def official_names(monkeypatch):
    """Register importable stand-ins for torch_utils.persistence / dnnlib.util while pickling.

    pickle writes globals by name and checks that the name resolves, so the writer needs these
    modules; the loader under test must not: tests call ``official_names.undo()`` before loading.
    """
    return _register_official_names(monkeypatch)


class _OfficialPickler(pickle.Pickler):
    """Pickles modules of our test classes (and, with ``persist_all``, every non-torch.nn
    module) as persistent objects in the official format."""

    def __init__(self, f, protocol, module_src, persist_all=False, sanitize=False):
        super().__init__(f, protocol=protocol)
        self.module_src = module_src
        self.persist_all = persist_all
        self.sanitize = sanitize

    def reducer_override(self, obj):
        if not isinstance(obj, nn.Module):
            return NotImplemented
        persistent = getattr(type(obj), "_persistent", False) or (
            self.persist_all and not type(obj).__module__.startswith("torch.nn."))
        if not persistent:
            return NotImplemented
        state = dict(obj.__dict__)
        if self.sanitize:
            # Keep only what official modules carry that matters for the state dict.
            keep = ("training", "_parameters", "_buffers", "_non_persistent_buffers_set", "_modules")
            state = {k: state[k] for k in keep if k in state}
        meta = dict(type="class", version=6, module_src=self.module_src,
                    class_name=type(obj).__name__, state=state)
        return (_never_called, (meta,))


def dump_official(obj, path: Path, module_src: str, protocol=3, **kwargs) -> bytes:
    buf = io.BytesIO()
    _OfficialPickler(buf, protocol, module_src, **kwargs).dump(obj)
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _globals_in(data: bytes):
    out = set()
    stack = []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            out.add(arg.replace(" ", "."))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            stack.append(arg)
        elif op.name == "STACK_GLOBAL":
            out.add(f"{stack[-2]}.{stack[-1]}")
    return out


class Leaf(nn.Module):
    """A layer with every kind of entry official modules hold."""

    _persistent = True

    def __init__(self, cin, cout, gen):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3, generator=gen))
        self.bias = nn.Parameter(torch.randn(cout, generator=gen))
        self.register_buffer("resample_filter", torch.randn(4, 4, generator=gen))
        self.register_buffer("scratch", torch.randn(3, generator=gen), persistent=False)
        self.register_buffer("attn_mask", None)  # unshifted Swin blocks hold a None buffer
        self.weight_gain = np.float64(1 / np.sqrt(cin * 9))  # numpy scalar attribute
        self.weight_maskUpdater = torch.ones(1, 1, 3, 3)  # tensor attribute, not a buffer
        self._init_args = (cin, cout)
        self._init_kwargs = {}


class Net(nn.Module):
    _persistent = True

    def __init__(self, gen):
        super().__init__()
        self.first = Leaf(4, 6, gen)
        self.blocks = nn.ModuleList([Leaf(6, 6, gen), Leaf(6, 8, gen)])
        self.seq = nn.Sequential(Leaf(8, 8, gen), nn.AdaptiveAvgPool2d(1), nn.Softmax(dim=1))
        self.register_buffer("w_avg", torch.randn(5, generator=gen))
        # A strided view: its storage is bigger than the tensor (offset/stride must be honoured).
        self.register_buffer("view", torch.arange(24.0).reshape(4, 6)[1:, ::2])
        self.post = nn.Parameter(torch.randn(2, 3, generator=gen))
        self.post.extra_attr = "makes torch emit _rebuild_parameter_with_state"
        # Official modules keep deep copies of their constructor arguments; a persistent module
        # in there (BasicLayer's downsample) is NOT a child and must be ignored.
        copy_gen = torch.Generator().manual_seed(99)
        self._init_args = ()
        self._init_kwargs = _EasyDict(
            downsample=Leaf(6, 6, copy_gen), act_layer=nn.GELU, norm_layer=nn.LayerNorm,
            synthesis_kwargs=_EasyDict(channel_base=32768), gains=[np.float64(2.0) ** 0.5],
        )


def _make_official_dict():
    gen = torch.Generator().manual_seed(1)
    G, G_ema, D = Net(gen), Net(gen), Net(gen)
    data = {"G": G, "D": D, "G_ema": G_ema, "augment_pipe": None,
            "training_set_kwargs": {"path": "x"}, "val_set_kwargs": {}}
    return data


def _assert_same_state_dict(got, want):
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert torch.equal(got[k], want[k]), k


# ----------------------------------------------------------------------------------------------
# (a) official pickles
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_official_pickle_reproduces_state_dict(official_names, tmp_path, protocol):
    marker = tmp_path / "executed.txt"
    data = _make_official_dict()
    path = tmp_path / "network.pkl"
    raw = dump_official(data, path, _payload_src(marker), protocol=protocol)
    official_names.undo()  # the loader must work without torch_utils / dnnlib importable

    found = _globals_in(raw)
    assert "torch_utils.persistence._reconstruct_persistent_obj" in found
    assert "torch.storage._load_from_bytes" in found
    assert "torch._utils._rebuild_parameter_with_state" in found
    assert "dnnlib.util.EasyDict" in found
    assert any(g.endswith("multiarray.scalar") for g in found)
    # Protocol <= 3 (the released files) stores sets as REDUCE(builtins.set, [list]).
    assert ("builtins.set" in found) == (protocol <= 3)

    sds = ckpt.load_state_dicts(path, which=("G_ema", "G", "D"))
    for name in ("G_ema", "G", "D"):
        want = data[name].state_dict()
        _assert_same_state_dict(sds[name], want)
        assert not any("scratch" in k or "attn_mask" in k or "downsample" in k for k in sds[name])
    assert not marker.exists(), "module_src was executed"


def test_official_pickle_with_numpy1_scalar_name(official_names, tmp_path):
    """numpy < 2 writes numpy.core.multiarray.scalar; both spellings load."""
    marker = tmp_path / "executed.txt"
    data = _make_official_dict()
    buf = io.BytesIO()
    _OfficialPickler(buf, 3, _payload_src(marker)).dump(data)
    raw = buf.getvalue()
    assert b"cnumpy._core.multiarray\nscalar\n" in raw
    raw = raw.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
    path = tmp_path / "np1.pkl"
    path.write_bytes(raw)
    official_names.undo()
    sd = ckpt.load_state_dicts(path)["G_ema"]
    _assert_same_state_dict(sd, data["G_ema"].state_dict())
    assert not marker.exists()


def test_records_keep_plain_attributes_inert(official_names, tmp_path):
    marker = tmp_path / "executed.txt"
    data = _make_official_dict()
    path = tmp_path / "n.pkl"
    dump_official(data, path, _payload_src(marker))
    official_names.undo()
    top = ckpt.safe_load_pickle(path)
    rec = top["G_ema"]
    assert isinstance(rec, ckpt.PersistentRecord) and rec.class_name == "Net"
    kw = rec.state["_init_kwargs"]
    assert isinstance(kw, dict) and kw["synthesis_kwargs"]["channel_base"] == 32768
    assert isinstance(kw["act_layer"], type) and issubclass(kw["act_layer"], ckpt.ModuleStub)
    leaf = rec.state["_modules"]["first"]
    assert leaf.state["weight_gain"] == np.float64(1 / np.sqrt(36))
    assert isinstance(leaf.state["weight_gain"], np.float64)
    assert isinstance(rec.state["_modules"]["blocks"], ckpt.ModuleStub)
    assert top["training_set_kwargs"] == {"path": "x"} and top["augment_pipe"] is None
    assert not marker.exists()


def test_module_src_payload_is_live(tmp_path):
    """The payload used above really does create the marker when exec'd (so the checks that it
    was not created can fail)."""
    marker = tmp_path / "live.txt"
    exec(compile(_payload_src(marker), "<payload>", "exec"), {})  # noqa: S102 - deliberate
    assert marker.exists()


class _Evil:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _malicious_cases(marker: Path):
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "os.system": (os.system, (f"touch {marker}",)),
        "builtins.exec": (exec, (code,)),
        "builtins.eval": (eval, (code,)),
        "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],)),
        "builtins.getattr": (getattr, (object, "__subclasses__")),
    }


@pytest.mark.parametrize("case", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen", "builtins.getattr"])
@pytest.mark.parametrize("protocol", [3, 4])
def test_malicious_pickle_is_refused(tmp_path, case, protocol):
    marker = tmp_path / "pwned.txt"
    fn, args = _malicious_cases(marker)[case]
    # Hidden one level down, inside an otherwise ordinary-looking checkpoint dict.
    payload = {"G_ema": {"mapping.w_avg": torch.zeros(2)}, "evil": _Evil(fn, args)}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    expected_name = {"os.system": os.system.__module__ + ".system",
                     "subprocess.Popen": "subprocess.Popen"}.get(case, case)
    with pytest.raises(pickle.UnpicklingError, match=rf"refusing to load global '{expected_name}'"):
        ckpt.load_state_dicts(path)
    assert not marker.exists()


def test_malicious_storage_blob_is_refused(tmp_path):
    """A payload inside a torch.storage._load_from_bytes blob meets torch's weights_only reader."""
    marker = tmp_path / "pwned.txt"
    blob = pickle.dumps(_Evil(os.system, (f"touch {marker}",)), protocol=2)

    class BadStorage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (blob,)

    path = tmp_path / "evil_blob.pkl"
    path.write_bytes(pickle.dumps({"G_ema": {"w": BadStorage()}}, protocol=3))
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load_state_dicts(path)
    assert not marker.exists()


def test_out_of_bounds_tensor_is_refused(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        storage = torch.arange(4.0).storage()

    class Oob:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storage, 0, (100,), (1,), False, collections.OrderedDict())

    path = tmp_path / "oob.pkl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        path.write_bytes(pickle.dumps({"G_ema": {"w": Oob()}}, protocol=3))
    with pytest.raises(pickle.UnpicklingError, match="reach element 99 of a storage with 4"):
        ckpt.load_state_dicts(path)


def test_persistent_ids_are_refused(tmp_path):
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "pid" if isinstance(obj, torch.Tensor) else None

    buf = io.BytesIO()
    P(buf, protocol=3).dump({"G_ema": {"w": torch.zeros(1)}})
    path = tmp_path / "pid.pkl"
    path.write_bytes(buf.getvalue())
    with pytest.raises(pickle.UnpicklingError, match="persistent id"):
        ckpt.load_state_dicts(path)


def test_missing_network_is_named(official_names, tmp_path):
    data = _make_official_dict()
    del data["G_ema"]
    path = tmp_path / "n.pkl"
    dump_official(data, path, "pass\n")
    official_names.undo()
    with pytest.raises(CheckpointError, match=r"no 'G_ema' network .*'D', 'G'"):
        ckpt.load_state_dicts(path)


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
