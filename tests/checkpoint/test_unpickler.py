"""mat_kernels.checkpoint.unpickler: official pickles are read without running anything from them;
every global outside the allow-list, bad storages and persistent ids are refused."""
from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mat_kernels import checkpoint as ckpt
from mat_kernels.checkpoint import CheckpointError

from .official_pickles import (_Evil, _OfficialPickler, _assert_same_state_dict, _globals_in, _make_official_dict,
                               _payload_src, dump_official)

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
