"""Use the fused layers inside the official MAT code (fenglinglwb/MAT) without leaving it.

Two switches, in the spirit of Liger-Kernel's ``apply_liger_kernel_to_*``:

- :func:`convert` turns an already built network (``Generator``/``Discriminator`` from the
  official ``networks.mat``, or one loaded with ``legacy.load_network_pkl``) into one running
  our modules, in place.
- :func:`patch` replaces the classes in the imported ``networks.mat`` module so that networks
  built afterwards (by ``train.py`` through ``dnnlib.util.construct_class_by_name``, or by user
  code) come out converted. :func:`unpatch` (or the callable ``patch`` returns) restores it.

How a module is converted: its class is swapped, in place, for a subclass of our drop-in
(``mat_kernels.nn``) that remembers the official class. The object keeps its ``__dict__``, so
parameters, buffers, children, hooks, training mode, device and dtype are the very same objects;
an optimizer built earlier keeps stepping them and the state dict is unchanged. Attributes our
forward needs and the official instance lacks (``in_features``, ``kernel_size``...) are derived
from the instance's own tensors and checked against its other attributes; anything that does not
add up is left alone and named in the report, never guessed.

Pickles stay official: a converted module pickles exactly as its official class would (a
``torch_utils.persistence`` record with the original source, or a reference to the official
class), so snapshots written by the official training loop load without this package and with
:func:`mat_kernels.load_generator`. ``copy.deepcopy`` keeps the converted classes.

This module never imports the official code; it works on the objects it is given. Official
classes are recognised by class name and defining module (``networks.mat``,
``networks.basic_module``, or the ``_imported_module_*`` copy the official pickle loader makes
of them), looking through the ``persistence.persistent_class`` wrapper whose
instances report module ``torch_utils.persistence`` and have the real class as their base.
"""
from __future__ import annotations

import copy
import numbers
import types
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn

from . import backends
from .nn.attention import SwinTransformerBlock, WindowAttention
from .nn.layers import ACTIVATIONS, Conv2dLayer, Conv2dLayerPartial, FullyConnectedLayer

__all__ = ["convert", "patch", "unpatch", "ConversionReport", "PatchReport", "OFFICIAL_MODULES",
           "DEFAULT_LAYERS", "CONVERTIBLE"]

OFFICIAL_MODULES = ("networks.mat", "networks.basic_module")
PERSISTENCE_MODULE = "torch_utils.persistence"

# official class name -> our drop-in. The order is the conversion order inside one parent:
# children before the modules that depend on them being converted.
CONVERTIBLE: Dict[str, type] = {
    "FullyConnectedLayer": FullyConnectedLayer,
    "Conv2dLayer": Conv2dLayer,
    "Conv2dLayerPartial": Conv2dLayerPartial,
    "WindowAttention": WindowAttention,
    "SwinTransformerBlock": SwinTransformerBlock,
}
# Conv2dLayer is opt-in: our resampling is the plain-PyTorch upfirdn2d, and no recorded
# measurement shows it at least as fast as the official CUDA upfirdn2d plugin. The fully
# connected layer computes the same matmul and replaces the official bias_act with the fused
# Triton kernel on CUDA, the same single elementwise pass.
DEFAULT_LAYERS = ("SwinTransformerBlock", "WindowAttention", "Conv2dLayerPartial", "FullyConnectedLayer")


# ----------------------------------------------------------------------------------------------
# Recognising official classes
# ----------------------------------------------------------------------------------------------

# The official loader (torch_utils.persistence) exec's the pickled source of networks/mat.py in
# a fresh module with this name prefix, so networks from legacy.load_network_pkl have their
# classes there, behind the persistence wrapper that carries the source text.
IMPORTED_PREFIX = "_imported_module_"


def _official_base(cls: type) -> Optional[type]:
    """The first class in ``cls``'s MRO that is an official MAT class: defined at the top level
    of an official module, or of the persistence loader's copy of one (its wrapper's source
    text defines a class of that name)."""
    for base in cls.__mro__:
        if base.__qualname__ != base.__name__:
            continue
        if base.__module__ in OFFICIAL_MODULES:
            return base
        if base.__module__.startswith(IMPORTED_PREFIX):
            src = getattr(cls, "_orig_module_src", None)
            if isinstance(src, str) and f"\nclass {base.__name__}(" in src:
                return base
    return None


def _is_persistence_wrapper(cls: type, name: str) -> bool:
    return cls.__module__ == PERSISTENCE_MODULE and getattr(cls, "_orig_class_name", None) == name


def _classify(cls: type) -> Tuple[Optional[str], Optional[str]]:
    """(official class name, None) when ``cls`` is an official class (possibly wrapped by
    ``persistent_class``), (None, reason) when it only looks like one, (None, None) otherwise."""
    if getattr(cls, "_mk_official_class", None) is not None:
        return None, None  # already converted
    base = _official_base(cls)
    if base is None:
        if cls.__name__ in CONVERTIBLE and not cls.__module__.startswith("mat_kernels."):
            return None, (f"class {cls.__module__}.{cls.__qualname__} has an official name but is not "
                          f"defined in {' or '.join(OFFICIAL_MODULES)}")
        return None, None
    between = cls.__mro__[:cls.__mro__.index(base)]
    for c in between:
        if not _is_persistence_wrapper(c, base.__name__):
            return None, (f"class {c.__module__}.{c.__qualname__} subclasses the official "
                          f"{base.__module__}.{base.__name__}; its forward may differ")
    return base.__name__, None


# ----------------------------------------------------------------------------------------------
# Per-class checks: what our forward reads, derived from the instance and checked
# ----------------------------------------------------------------------------------------------

def _tensor(m: nn.Module, name: str, ndim: int, problems: List[str]) -> Optional[torch.Tensor]:
    t = m._parameters.get(name, m._buffers.get(name))
    if not isinstance(t, torch.Tensor) or t.ndim != ndim:
        got = f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        problems.append(f"{name} must be a {ndim}-D parameter or buffer, got {got}")
        return None
    return t


def _number(m: nn.Module, name: str, problems: List[str], integer: bool = False):
    v = m.__dict__.get(name)
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(v, bool) or not isinstance(v, kind):
        problems.append(f"{name} must be {'an int' if integer else 'a number'}, got {v!r}")
        return None
    return int(v) if integer else float(v)


def _child(m: nn.Module, name: str, problems: List[str]) -> Optional[nn.Module]:
    c = m._modules.get(name)
    if c is None:
        problems.append(f"child module {name!r} is missing")
    return c


def _bias(m: nn.Module, out: int, problems: List[str]) -> None:
    b = m._parameters.get("bias", m._buffers.get("bias", m.__dict__.get("bias")))
    if b is not None and (not isinstance(b, torch.Tensor) or tuple(b.shape) != (out,)):
        problems.append(f"bias must be None or ({out},), got {getattr(b, 'shape', b)!r}")


def _activation(m: nn.Module, problems: List[str]) -> None:
    if m.__dict__.get("activation") not in ACTIVATIONS:
        problems.append(f"activation {m.__dict__.get('activation')!r} is not one of {sorted(ACTIVATIONS)}")


def _prepare_fc(m: nn.Module, problems: List[str]) -> dict:
    w = _tensor(m, "weight", 2, problems)
    _activation(m, problems)
    weight_gain = _number(m, "weight_gain", problems)
    _number(m, "bias_gain", problems)
    if w is None:
        return {}
    _bias(m, w.shape[0], problems)
    # float() of the official numpy float64 is exact; a plain float keeps torch.compile guards simple.
    return dict(in_features=int(w.shape[1]), out_features=int(w.shape[0]), weight_gain=weight_gain)


def _prepare_conv(m: nn.Module, problems: List[str]) -> dict:
    w = _tensor(m, "weight", 4, problems)
    _activation(m, problems)
    _tensor(m, "resample_filter", 2, problems)
    up = _number(m, "up", problems, integer=True)
    down = _number(m, "down", problems, integer=True)
    padding = _number(m, "padding", problems, integer=True)
    weight_gain = _number(m, "weight_gain", problems)
    act_gain = _number(m, "act_gain", problems)
    clamp = m.__dict__.get("conv_clamp", "missing")
    if clamp is not None and not isinstance(clamp, numbers.Real):
        problems.append(f"conv_clamp must be None or a number, got {clamp!r}")
    if w is None:
        return {}
    out_c, in_c, kh, kw = (int(s) for s in w.shape)
    _bias(m, out_c, problems)
    if kh != kw:
        problems.append(f"kernel must be square, got {kh}x{kw}")
    if padding is not None and padding != kh // 2:
        problems.append(f"padding {padding} != kernel_size // 2 = {kh // 2}")
    if up is not None and down is not None and (up < 1 or down < 1):
        problems.append(f"up and down must be >= 1, got up={up}, down={down}")
    return dict(in_channels=in_c, out_channels=out_c, kernel_size=kh, weight_gain=weight_gain, act_gain=act_gain)


def _prepare_partial(m: nn.Module, problems: List[str]) -> dict:
    conv = _child(m, "conv", problems)
    slide = _number(m, "slide_winsize", problems)
    stride = _number(m, "stride", problems, integer=True)
    padding = _number(m, "padding", problems, integer=True)
    if conv is None:
        return {}
    w = conv._parameters.get("weight", conv._buffers.get("weight"))
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        problems.append("conv.weight must be a 4-D tensor")
        return {}
    k = int(w.shape[-1])
    if k % 2 != 1:
        problems.append(f"kernel_size must be odd for a partial convolution, got {k}")
    if slide is not None and slide != k * k:
        problems.append(f"slide_winsize {slide} != kernel_size**2 = {k * k}")
    if padding is not None and padding != k // 2:
        problems.append(f"padding {padding} != kernel_size // 2 = {k // 2}")
    for name in ("up", "down"):
        if not isinstance(conv.__dict__.get(name), int):
            problems.append(f"conv.{name} must be an int, got {conv.__dict__.get(name)!r}")
    if stride is not None and conv.__dict__.get("down") != stride:
        problems.append(f"stride {stride} != conv.down {conv.__dict__.get('down')!r}")
    return dict(kernel_size=k)


def _prepare_attention(m: nn.Module, problems: List[str]) -> dict:
    dim = _number(m, "dim", problems, integer=True)
    heads = _number(m, "num_heads", problems, integer=True)
    _number(m, "scale", problems)
    ws = m.__dict__.get("window_size")
    if isinstance(ws, numbers.Integral):
        ws = (int(ws), int(ws))
    if not (isinstance(ws, (tuple, list)) and len(ws) == 2):
        problems.append(f"window_size must be an int or a pair, got {ws!r}")
    for name in ("q", "k", "v", "proj"):
        c = _child(m, name, problems)
        w = None if c is None else c._parameters.get("weight")
        if c is not None and dim is not None and (w is None or tuple(w.shape) != (dim, dim)):
            problems.append(f"{name}.weight must be ({dim}, {dim}), got {getattr(w, 'shape', w)!r}")
    if dim is not None and heads is not None and (heads < 1 or dim % heads):
        problems.append(f"dim {dim} is not divisible by num_heads {heads}")
    return dict(window_size=tuple(ws)) if isinstance(ws, (tuple, list)) and len(ws) == 2 else {}


def _prepare_block(m: nn.Module, problems: List[str]) -> dict:
    dim = _number(m, "dim", problems, integer=True)
    heads = _number(m, "num_heads", problems, integer=True)
    ws = _number(m, "window_size", problems, integer=True)
    shift = _number(m, "shift_size", problems, integer=True)
    if "attn_mask" not in m._buffers:
        problems.append("buffer 'attn_mask' is missing")
    if ws is not None and shift is not None and not 0 <= shift < ws:
        problems.append(f"shift_size {shift} is not in [0, window_size={ws})")
    attn = _child(m, "attn", problems)
    _child(m, "fuse", problems)
    _child(m, "mlp", problems)
    if attn is not None:
        # The fused path stacks q and k into one GEMM through our layers' effective_weight_bias.
        for name in ("q", "k"):
            if not callable(getattr(attn._modules.get(name), "effective_weight_bias", None)):
                problems.append(f"attn.{name} was not converted (the fused q/k projection needs our "
                                f"FullyConnectedLayer there)")
        if attn.__dict__.get("num_heads") != heads:
            problems.append(f"attn.num_heads {attn.__dict__.get('num_heads')!r} != num_heads {heads}")
        if not isinstance(attn.__dict__.get("scale"), numbers.Real):
            problems.append("attn.scale must be a number")
        if dim is not None and heads and dim % heads:
            problems.append(f"dim {dim} is not divisible by num_heads {heads}")
    return {}


_PREPARE: Dict[str, Callable[[nn.Module, List[str]], dict]] = {
    "FullyConnectedLayer": _prepare_fc,
    "Conv2dLayer": _prepare_conv,
    "Conv2dLayerPartial": _prepare_partial,
    "WindowAttention": _prepare_attention,
    "SwinTransformerBlock": _prepare_block,
}


# ----------------------------------------------------------------------------------------------
# Converted classes
# ----------------------------------------------------------------------------------------------

class _Converted:
    """Mixin of every converted class: pickles as the official class, copies as itself."""

    _mk_official_class: Optional[type] = None

    def __reduce_ex__(self, protocol):
        # Pickle through an instance of the official class holding the same __dict__: a
        # persistent class writes its source-carrying record, a plain one a reference to itself.
        official = type(self)._mk_official_class
        twin = object.__new__(official)
        twin.__dict__.update(self.__dict__)
        return twin.__reduce_ex__(protocol)

    def __setstate__(self, state):
        # Reached when the official loader rebuilds a pickled module while the module is patched
        # (its class lookup then finds our patched class): check as convert does, or fall back
        # to the official class, which the state was written for.
        nn.Module.__setstate__(self, state)
        name = type(self).__name__
        problems: List[str] = []
        extra = _PREPARE[name](self, problems)
        if problems:
            self.__class__ = type(self)._mk_official_class
        else:
            self.__dict__.update(extra)

    def __copy__(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo):
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new


_CONVERTED_CLASSES: Dict[Tuple[type, type], type] = {}


def _converted_class(official: type, name: str) -> type:
    ours = CONVERTIBLE[name]
    key = (official, ours)
    cls = _CONVERTED_CLASSES.get(key)
    if cls is None:
        doc = (f"Our {ours.__module__}.{ours.__name__} standing in for the official "
               f"{_official_base(official).__module__}.{name} (pickles as the latter).")
        cls = type(name, (_Converted, ours), {"__module__": __name__, "__qualname__": f"converted.{name}",
                                              "__doc__": doc, "_mk_official_class": official})
        _CONVERTED_CLASSES[key] = cls
    return cls


def _try_convert(module: nn.Module, name: str, backend: str) -> List[str]:
    """Swap ``module``'s class for the converted one; return the reasons it cannot (then untouched)."""
    problems: List[str] = []
    extra = _PREPARE[name](module, problems)
    if problems:
        return problems
    module.__dict__.update(extra)
    module.__class__ = _converted_class(type(module), name)
    if backend != "auto":
        module.backend = backend
    return []


# ----------------------------------------------------------------------------------------------
# convert
# ----------------------------------------------------------------------------------------------

@dataclass
class ConversionReport:
    """What :func:`convert` did.

    ``replaced``: official class name -> how many modules now run our drop-in.
    ``replaced_paths``: (module path, class name) of each; "" is the model itself.
    ``already``: class name -> count of modules converted before this call.
    ``skipped``: (path, class, reason) for every module that looks official and was left alone
    because a check failed or it is not a faithful official class.
    ``not_selected``: class name -> count of convertible official modules outside ``layers``.
    ``no_drop_in``: official class name -> count of official modules with no drop-in (their
    forward runs unchanged and calls the converted children).
    """

    replaced: Counter = field(default_factory=Counter)
    replaced_paths: List[Tuple[str, str]] = field(default_factory=list)
    already: Counter = field(default_factory=Counter)
    skipped: List[Tuple[str, str, str]] = field(default_factory=list)
    not_selected: Counter = field(default_factory=Counter)
    no_drop_in: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        lines = ["mat_kernels.official.convert:"]
        total = sum(self.replaced.values())
        lines.append(f"  replaced {total} module(s)" + (": " + ", ".join(
            f"{n} x{c}" for n, c in sorted(self.replaced.items())) if total else ""))
        if self.already:
            lines.append("  already converted: " + ", ".join(f"{n} x{c}" for n, c in sorted(self.already.items())))
        if self.not_selected:
            lines.append("  left alone, not in layers: " + ", ".join(
                f"{n} x{c}" for n, c in sorted(self.not_selected.items())))
        if self.no_drop_in:
            lines.append("  left alone, no drop-in (their children are converted): " + ", ".join(
                f"{n} x{c}" for n, c in sorted(self.no_drop_in.items())))
        for path, cls, reason in self.skipped:
            lines.append(f"  skipped {path or '<model>'} ({cls}): {reason}")
        return "\n".join(lines)


def _check_layers(layers) -> Tuple[str, ...]:
    if layers is None:
        return DEFAULT_LAYERS
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise TypeError(f"layers must be a sequence of class names, got {layers!r}")
    unknown = [n for n in layers if n not in CONVERTIBLE]
    if unknown:
        raise ValueError(f"layers contains {unknown}; convertible classes are {list(CONVERTIBLE)}")
    return tuple(layers)


def _check_backend(backend) -> None:
    if backend not in backends.NAMES:
        raise ValueError(f"backend must be one of {backends.NAMES}, got {backend!r}")


def _post_order(model: nn.Module) -> Iterable[Tuple[str, nn.Module]]:
    """Each module once (shared ones at their first path), children before parents."""
    seen = set()
    out: List[Tuple[str, nn.Module]] = []

    def visit(prefix: str, m: nn.Module):
        if id(m) in seen:
            return
        seen.add(id(m))
        for name, child in m._modules.items():
            if child is not None:
                visit(f"{prefix}.{name}" if prefix else name, child)
        out.append((prefix, m))

    visit("", model)
    return out


def convert(model: nn.Module, backend: str = "auto", *, layers: Optional[Iterable[str]] = None,
            return_report: bool = False, verbose: bool = False):
    """Replace, in place, every official MAT module in ``model`` that has a drop-in with ours.

    Args:
        model: any ``nn.Module`` (an official ``Generator``, ``Discriminator``, a network loaded
            with ``legacy.load_network_pkl``, or a user module holding them). Walked, never rebuilt.
        backend: kernel backend set on the converted modules ("auto", "reference", "triton",
            "cuda"); "auto" runs fused kernels on CUDA tensors and the reference on CPU.
        layers: official class names to convert; default :data:`DEFAULT_LAYERS`
            (``Conv2dLayer`` is opt-in).
        return_report: also return the :class:`ConversionReport`.
        verbose: print the report.
    Returns:
        ``model`` (the same object), or ``(model, report)`` with ``return_report``.
    """
    report = _convert(model, backend, layers)
    if verbose:
        print(report)
    if report.skipped:
        warnings.warn(f"mat_kernels.official.convert left {len(report.skipped)} official-looking module(s) "
                      f"unconverted:\n{report}", stacklevel=2)
    return (model, report) if return_report else model


def _convert(model, backend, layers) -> ConversionReport:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_backend(backend)
    selected = _check_layers(layers)
    report = ConversionReport()
    for path, m in _post_order(model):
        cls = type(m)
        if isinstance(m, _Converted):
            report.already[cls.__name__] += 1
            if backend != "auto":
                m.backend = backend
            continue
        name, why_not = _classify(cls)
        if why_not is not None:
            report.skipped.append((path, f"{cls.__module__}.{cls.__qualname__}", why_not))
            continue
        if name is None:
            continue
        if name not in CONVERTIBLE:
            report.no_drop_in[name] += 1
            continue
        if name not in selected:
            report.not_selected[name] += 1
            continue
        problems = _try_convert(m, name, backend)
        if problems:
            report.skipped.append((path, name, "; ".join(problems)))
        else:
            report.replaced[name] += 1
            report.replaced_paths.append((path, name))
    return report


# ----------------------------------------------------------------------------------------------
# patch / unpatch
# ----------------------------------------------------------------------------------------------

@dataclass
class PatchReport:
    """What :func:`patch` did: ``patched`` names now build our modules, ``already`` were patched
    before this call, ``skipped`` (name, reason) were left as they are."""

    module: str
    patched: List[str] = field(default_factory=list)
    already: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"mat_kernels.official.patch({self.module}): patched {self.patched or 'nothing'}"]
        if self.already:
            lines.append(f"  already patched: {self.already}")
        for name, reason in self.skipped:
            lines.append(f"  skipped {name}: {reason}")
        return "\n".join(lines)


class Undo:
    """Restores the classes one :func:`patch` call replaced. Calling it again does nothing."""

    def __init__(self, module: types.ModuleType, names: List[str], report: PatchReport):
        self.module, self.names, self.report = module, list(names), report

    def __call__(self) -> None:
        _restore(self.module, self.names)
        self.names = []

    def __repr__(self) -> str:
        return f"<undo mat_kernels.official.patch({self.module.__name__}) for {self.names}>"


# id(module) -> (module, {name: original class}) for every module patched now.
_PATCHED: Dict[int, Tuple[types.ModuleType, Dict[str, type]]] = {}


def _patched_new(cls, *args, **kwargs):
    # Build with the official constructor (same arguments, same random initialisation, the
    # persistence record of the constructor arguments), then convert the new object in place.
    # The result is an instance of the converted class, not of ``cls``, so __init__ is not rerun.
    if not args and not kwargs:
        # Every official constructor takes arguments; an argument-free call is the persistence
        # loader (or copy) making an empty object to fill through __setstate__.
        return object.__new__(_converted_class(cls._mk_patched_original, cls._mk_patched_name))
    obj = cls._mk_patched_original(*args, **kwargs)
    problems = _try_convert(obj, cls._mk_patched_name, cls._mk_patched_backend)
    if problems:
        warnings.warn(f"mat_kernels.official.patch: a new {cls._mk_patched_name} stays official: "
                      f"{'; '.join(problems)}", stacklevel=2)
    return obj


def _patched_class(original: type, name: str, backend: str) -> type:
    converted = _converted_class(original, name)
    return type(name, (converted,), {
        "__module__": __name__, "__qualname__": f"patched.{name}", "__new__": _patched_new,
        "__doc__": f"Builds an official {name} and converts it to {converted.__doc__}",
        "_mk_patched_original": original, "_mk_patched_name": name, "_mk_patched_backend": backend})


def patch(mat_module: types.ModuleType, backend: str = "auto", *,
          layers: Optional[Iterable[str]] = None, verbose: bool = False) -> Undo:
    """Make networks built from the official ``networks.mat`` (or ``networks.basic_module``) use
    our modules.

    Each selected class name in the module is replaced by a class whose construction runs the
    official constructor and converts the result (see :func:`convert`), so weights are
    initialised exactly as before and pickles stay official. Networks already built are not
    touched (use :func:`convert`). Patching twice is harmless.

    Args:
        mat_module: the imported official module (``import networks.mat``).
        backend: kernel backend for the modules built while patched.
        layers: class names to patch; default :data:`DEFAULT_LAYERS`.
        verbose: print the report.
    Returns:
        an :class:`Undo` (call it to restore the originals); its ``report`` is a :class:`PatchReport`.
    """
    if not isinstance(mat_module, types.ModuleType):
        raise TypeError(f"mat_module must be the imported official module (networks.mat), "
                        f"got {type(mat_module).__name__}")
    if mat_module.__name__ not in OFFICIAL_MODULES:
        raise ValueError(f"mat_module must be one of the official modules {OFFICIAL_MODULES}, got module "
                         f"{mat_module.__name__!r}; for a built network use mat_kernels.official.convert")
    _check_backend(backend)
    selected = _check_layers(layers)
    report = PatchReport(module=mat_module.__name__)
    _, originals = _PATCHED.setdefault(id(mat_module), (mat_module, {}))
    new_names = []
    for name in selected:
        current = mat_module.__dict__.get(name)
        if current is None:
            report.skipped.append((name, "not defined in the module"))
            continue
        if isinstance(current, type) and getattr(current, "_mk_patched_original", None) is not None:
            report.already.append(name)
            continue
        if not isinstance(current, type) or not issubclass(current, nn.Module):
            report.skipped.append((name, f"is a {type(current).__name__}, not an nn.Module class"))
            continue
        official, why_not = _classify(current)
        if official != name:
            report.skipped.append((name, why_not or f"{current.__module__}.{current.__qualname__} is not the "
                                                    f"official {name}"))
            continue
        originals[name] = current
        setattr(mat_module, name, _patched_class(current, name, backend))
        new_names.append(name)
        report.patched.append(name)
    if not originals:
        del _PATCHED[id(mat_module)]
    if verbose:
        print(report)
    if not report.patched and not report.already:
        warnings.warn(f"mat_kernels.official.patch changed nothing:\n{report}", stacklevel=2)
    return Undo(mat_module, new_names, report)


def _restore(module: types.ModuleType, names: Iterable[str]) -> List[str]:
    entry = _PATCHED.get(id(module))
    if entry is None:
        return []
    _, originals = entry
    restored = []
    for name in list(names):
        original = originals.pop(name, None)
        if original is None:
            continue
        current = module.__dict__.get(name)
        if getattr(current, "_mk_patched_original", None) is not original:
            warnings.warn(f"mat_kernels.official: {module.__name__}.{name} was reassigned after patch(); "
                          f"restoring the official class over it", stacklevel=3)
        setattr(module, name, original)
        restored.append(name)
    if not originals:
        del _PATCHED[id(module)]
    return restored


def unpatch(mat_module: types.ModuleType) -> List[str]:
    """Restore every class :func:`patch` replaced in ``mat_module``; return their names."""
    if not isinstance(mat_module, types.ModuleType):
        raise TypeError(f"mat_module must be a module, got {type(mat_module).__name__}")
    entry = _PATCHED.get(id(mat_module))
    return _restore(mat_module, list(entry[1])) if entry else []
