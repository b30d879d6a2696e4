"""A pickler that writes official-format MAT pickles for the tests: every "persistent" module becomes
a REDUCE of ``torch_utils.persistence._reconstruct_persistent_obj`` with a meta dict whose ``module_src``
would create a marker file if it were ever exec'd; torch.nn containers, parameters, storages
(``torch.storage._load_from_bytes``), numpy scalars, sets and EasyDicts are pickled the way
torch/numpy/pickle really pickle them."""
from __future__ import annotations

import io
import pickle
import pickletools
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn


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


class _Evil:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args
