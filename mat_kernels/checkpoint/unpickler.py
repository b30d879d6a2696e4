"""Restricted unpickling of the official persistent-class ``.pkl`` files: each persistent object
becomes an inert :class:`PersistentRecord`, every global outside a short allow-list is refused, so
nothing from the file is executed; :func:`state_dict_from_record` rebuilds the state dict."""
from __future__ import annotations

import collections
import io
import pickle
import re
from typing import Dict, Mapping, Tuple

import numpy as np
import torch

from .errors import CheckpointError

StateDict = Dict[str, torch.Tensor]

__all__ = ["PersistentRecord", "ModuleStub", "SafeUnpickler", "safe_load_pickle", "state_dict_from_record"]


class PersistentRecord:
    """Inert stand-in for a ``torch_utils.persistence`` object: its class name and state.

    ``state`` is the pickled ``__dict__`` of the module (``_parameters``, ``_buffers``,
    ``_modules``, ``_non_persistent_buffers_set``, ``_init_kwargs``, ...). The stored source
    text (``module_src``) is dropped unread.
    """

    __slots__ = ("class_name", "state", "version")

    def __init__(self, class_name: str, state: dict, version):
        self.class_name = class_name
        self.state = state
        self.version = version

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name!r})"


def _reconstruct_persistent_record(meta):
    """Replacement for ``torch_utils.persistence._reconstruct_persistent_obj``: never execs."""
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError(
            f"persistent object: expected a meta dict, got {type(meta).__name__}")
    if meta.get("type") != "class":
        raise pickle.UnpicklingError(
            f"persistent object: unsupported meta type {meta.get('type')!r} (expected 'class')")
    class_name = meta.get("class_name")
    if not isinstance(class_name, str):
        raise pickle.UnpicklingError("persistent object: meta has no class_name string")
    state = meta.get("state")
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(
            f"persistent object {class_name}: expected a state dict, got {type(state).__name__}")
    return PersistentRecord(class_name, state, meta.get("version"))


class ModuleStub:
    """Inert stand-in for a ``torch.nn.modules.*`` instance (ModuleList, Sequential, Softmax...).

    Unpickling creates it with NEWOBJ and fills it through BUILD; it only stores the state.
    The class object itself may also appear as a plain value (e.g. ``nn.GELU`` inside
    ``_init_kwargs``); then it is just an inert class.
    """

    stub_of = "torch.nn.Module"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"{self.stub_of}: expected a state dict, got {type(state).__name__}")
        self.state = state

    def __repr__(self) -> str:
        return f"ModuleStub({self.stub_of})"


class _EasyDictStub(dict):
    """``dnnlib.util.EasyDict`` read back as a plain dict (attribute access is not needed)."""


def _safe_load_from_bytes(data):
    """``torch.storage._load_from_bytes``: a legacy torch.save blob of one storage."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(
            f"torch.storage._load_from_bytes: expected bytes, got {type(data).__name__}")
    storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(
            f"torch.storage._load_from_bytes: expected a storage, got {type(storage).__name__}")
    return storage


def _int_tuple(what: str, value) -> Tuple[int, ...]:
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise pickle.UnpicklingError(f"tensor rebuild: {what} must be a tuple of ints, got {value!r}")
    return tuple(value)


def _safe_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                            backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` with bounds checks; returns a plain tensor.

    Torch's own rebuild silently *grows* the storage when size/stride point past its end, so
    the extent is checked here first. ``requires_grad``, hooks and metadata are dropped.
    """
    if isinstance(storage, torch.storage.TypedStorage):
        dtype, untyped = storage.dtype, storage._untyped_storage
    else:
        raise pickle.UnpicklingError(
            f"tensor rebuild: expected a typed storage, got {type(storage).__name__}")
    size = _int_tuple("size", size)
    stride = _int_tuple("stride", stride)
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise pickle.UnpicklingError(f"tensor rebuild: bad storage offset {storage_offset!r}")
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"tensor rebuild: bad size {size} / stride {stride}")
    numel = untyped.nbytes() // torch.empty((), dtype=dtype).element_size()
    if all(s > 0 for s in size):
        last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= numel:
            raise pickle.UnpicklingError(
                f"tensor rebuild: size {size}, stride {stride}, offset {storage_offset} reach "
                f"element {last} of a storage with {numel} elements")
    t = torch.empty((0,), dtype=dtype)
    t.set_(untyped, storage_offset, size, stride)
    return t


def _safe_rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    """``torch._utils._rebuild_parameter(_with_state)``: the parameter's data as a plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(
            f"parameter rebuild: expected a tensor, got {type(data).__name__}")
    return data


def _safe_numpy_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy.dtype: expected a type string, got {spec!r}")
    dt = np.dtype(spec)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"numpy.dtype: object dtype {spec!r} is not allowed")
    return np.dtype(spec, bool(align), bool(copy))


def _safe_numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar``: a numeric scalar from its raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy scalar: unsupported dtype {dtype!r}")
    if data is None:
        data = b"\x00" * dtype.itemsize
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError(
            f"numpy scalar: expected {dtype.itemsize} bytes for {dtype}, got {data!r}")
    return np.frombuffer(bytes(data), dtype=dtype)[0].copy()


# Exact (module, name) -> safe replacement. Everything not here (and not a torch.nn.modules
# class) is refused.
_ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_record,
    ("dnnlib.util", "EasyDict"): _EasyDictStub,
    ("dnnlib", "EasyDict"): _EasyDictStub,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("numpy.core.multiarray", "scalar"): _safe_numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _safe_numpy_scalar,
    ("numpy", "dtype"): _safe_numpy_dtype,
    ("torch._utils", "_rebuild_tensor_v2"): _safe_rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _safe_rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _safe_rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _safe_load_from_bytes,
}


def _fresh_handle(target):
    """A per-load object standing for ``target``.

    Pickle's BUILD opcode can ``setattr`` on any object the stream holds, including what
    ``find_class`` returned. Handing out fresh wrappers (a closure for functions, a throwaway
    subclass for Python classes) keeps such writes from touching this module's objects.
    Immutable builtin types (set, OrderedDict, ...) cannot be written to and are returned as is.
    """
    if isinstance(target, type):
        if target.__module__ == __name__:
            return type(target.__name__, (target,), {"__module__": __name__})
        return target

    def handle(*args):
        return target(*args)

    handle.__name__ = target.__name__
    return handle


class SafeUnpickler(pickle.Unpickler):
    """Unpickler for official MAT/StyleGAN2-ADA network pickles that never runs their code.

    ``find_class`` maps the handful of globals such pickles use to inert or checked
    replacements (see the module docstring) and raises :class:`pickle.UnpicklingError` naming
    ``module.name`` for anything else, so e.g. ``os.system`` or ``builtins.exec`` cannot be
    reached. Persistent ids are refused too (plain pickles have none).
    """

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._handles: Dict[Tuple[str, str], object] = {}

    def find_class(self, module, name):
        key = (module, name)
        handle = self._handles.get(key)
        if handle is not None:
            return handle
        target = _ALLOWED_GLOBALS.get(key)
        if target is not None:
            handle = _fresh_handle(target)
        elif module.startswith("torch.nn.modules.") and re.fullmatch(r"[A-Z][A-Za-z0-9_]*", name):
            handle = type(name, (ModuleStub,), {"stub_of": f"{module}.{name}", "__module__": __name__})
        else:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': it is not on the allow-list of "
                f"mat_kernels.checkpoint.SafeUnpickler (official MAT pickles never need it; the "
                f"file may be malicious or not a MAT checkpoint)")
        self._handles[key] = handle
        return handle

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(
            f"refusing persistent id {pid!r}: official MAT pickles are plain pickles")


def safe_load_pickle(path_or_file) -> object:
    """Unpickle a file with :class:`SafeUnpickler` (no code from the file is executed)."""
    if hasattr(path_or_file, "read"):
        return SafeUnpickler(path_or_file).load()
    with open(path_or_file, "rb") as f:
        return SafeUnpickler(f).load()


def _state_of(obj):
    if isinstance(obj, (PersistentRecord, ModuleStub)):
        return obj.state
    return None


def state_dict_from_record(record, prefix: str = "") -> StateDict:
    """Rebuild ``module.state_dict()`` from an unpickled :class:`PersistentRecord` tree.

    Follows only ``_modules`` (copies of submodules inside ``_init_kwargs`` are ignored), takes
    every non-None parameter and every non-None buffer not in ``_non_persistent_buffers_set``.
    Tensors are returned as-is (no copy); keys are in registration order.
    """
    out: StateDict = collections.OrderedDict()
    _walk_record(record, prefix, out, set())
    return out


def _walk_record(obj, prefix, out, active):
    state = _state_of(obj)
    if state is None:
        raise CheckpointError(
            f"module '{prefix.rstrip('.') or '<root>'}': expected a pickled module, "
            f"got {type(obj).__name__}")
    if id(obj) in active:
        raise CheckpointError(f"module '{prefix.rstrip('.')}' contains itself")
    active.add(id(obj))
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        entries = state.get(kind) or {}
        if not isinstance(entries, Mapping):
            raise CheckpointError(f"module '{prefix.rstrip('.')}': {kind} is not a dict")
        for name, value in entries.items():
            if value is None or (kind == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(
                    f"'{prefix}{name}' is a {type(value).__name__}, expected a tensor")
            out[prefix + name] = value
    children = state.get("_modules") or {}
    if not isinstance(children, Mapping):
        raise CheckpointError(f"module '{prefix.rstrip('.')}': _modules is not a dict")
    for name, child in children.items():
        if child is not None:
            _walk_record(child, f"{prefix}{name}.", out, active)
    active.discard(id(obj))
