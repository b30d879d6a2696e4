"""Format detection, loading, remapping and checking of state dicts, and saving in this package's
pickle-free format (see :mod:`mat_kernels.checkpoint`)."""
from __future__ import annotations

import collections
import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch

from .errors import CheckpointError, UnsafeCheckpointError
from .unpickler import ModuleStub, PersistentRecord, SafeUnpickler, state_dict_from_record

__all__ = ["ACCEPTED_FORMATS", "remap_state_dict", "check_state_dict", "infer_generator_config", "generator_from_state_dict",
           "infer_discriminator_config", "load_state_dicts", "load_generator", "load_discriminator", "save_checkpoint"]

PathLike = Union[str, os.PathLike]
StateDict = Dict[str, torch.Tensor]

NETWORK_NAMES = ("G_ema", "G", "D")
FORMAT_NAME = "mat_kernels"
FORMAT_VERSION = 1
# Generator defaults of the released models: z = w = 512, no labels, RGB.
DEFAULT_G_CONFIG = {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_channels": 3}
_ZIP_MAGIC = b"PK\x03\x04"
# Legacy (non-zip) torch.save files start with a pickled magic number (torch.serialization).
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
ACCEPTED_FORMATS = ("a state dict saved with torch.save(G.state_dict(), path) (or a dict of them: "
                    "{'G_ema': sd, ...}), an official MAT .pkl, or a mat_kernels .safetensors + .json "
                    "checkpoint (mat_kernels.checkpoint.save_checkpoint)")


# ----------------------------------------------------------------------------------------------
# State-dict helpers (pure functions)
# ----------------------------------------------------------------------------------------------

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def remap_state_dict(sd: Mapping[str, torch.Tensor], network: str = "G_ema") -> StateDict:
    """Map foreign key spellings onto the official names; pure (returns a new dict).

    Strips, repeatedly, the wrappers ``module.`` (DataParallel/DDP) and ``_orig_mod.``
    (torch.compile), and a leading ``f"{network}."`` (a network saved inside a bigger dict
    flattened with prefixes, e.g. ``G_ema.mapping.fc0.weight``). Two keys that collide after
    remapping raise :class:`CheckpointError`.
    """
    out: StateDict = collections.OrderedDict()
    strip = _WRAPPER_PREFIXES + (f"{network}.",)
    for key, value in sd.items():
        if not isinstance(key, str):
            raise CheckpointError(f"state dict keys must be strings, got {key!r}")
        new = key
        changed = True
        while changed:
            changed = False
            for p in strip:
                if new.startswith(p):
                    new, changed = new[len(p):], True
        if new in out:
            raise CheckpointError(f"state dict keys collide after remapping: {key!r} -> {new!r}")
        out[new] = value
    return out


def _expected_shapes(expected) -> Dict[str, Tuple[int, ...]]:
    """name -> shape from a module, a state dict, a manifest {"entries": ...} or name -> shape."""
    if isinstance(expected, torch.nn.Module):
        expected = expected.state_dict()
    if isinstance(expected, Mapping) and "entries" in expected and isinstance(expected["entries"], Mapping):
        expected = expected["entries"]
    shapes = {}
    for name, v in expected.items():
        if isinstance(v, torch.Tensor):
            shapes[name] = tuple(v.shape)
        elif isinstance(v, Mapping) and "shape" in v:
            shapes[name] = tuple(v["shape"])
        else:
            shapes[name] = tuple(v)
    return shapes


def check_state_dict(sd: Mapping[str, torch.Tensor], expected, what: str = "network") -> StateDict:
    """Check ``sd`` against the expected names and shapes; return only the expected entries.

    Args:
        sd: name -> tensor as read from a checkpoint.
        expected: an ``nn.Module``, its state dict, a manifest section
            (``{"entries": {name: {"shape": [...]}}}``) or name -> shape.
        what: the network's name for error messages.
    Raises:
        CheckpointError listing every missing name and every shape mismatch.
    Warns:
        UserWarning naming the extra entries (ignored, like the official loader does).
    """
    shapes = _expected_shapes(expected)
    missing = [n for n in shapes if n not in sd]
    mismatched = [f"{n}: checkpoint {tuple(sd[n].shape)} vs model {shapes[n]}"
                  for n in shapes if n in sd and tuple(sd[n].shape) != shapes[n]]
    if missing or mismatched:
        lines = [f"checkpoint does not fit the {what}:"]
        if missing:
            lines.append(f"  {len(missing)} missing entries: " + ", ".join(missing[:20])
                         + (" ..." if len(missing) > 20 else ""))
        if mismatched:
            lines.append(f"  {len(mismatched)} shape mismatches: " + "; ".join(mismatched[:20])
                         + (" ..." if len(mismatched) > 20 else ""))
        raise CheckpointError("\n".join(lines))
    extra = [n for n in sd if n not in shapes]
    if extra:
        warnings.warn(f"ignoring {len(extra)} checkpoint entries the {what} does not have: "
                      + ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""),
                      stacklevel=2)
    return collections.OrderedDict((n, sd[n]) for n in shapes)


_DEC_RE = re.compile(r"^synthesis\.dec\.Dec_(\d+)x(\d+)\.")
_MAPPING_FC_RE = re.compile(r"^mapping\.fc(\d+)\.weight$")
_DIS_BLOCK_RE = re.compile(r"^Dis\.(\d+)\.conv0\.weight$")


def infer_generator_config(sd: Mapping[str, torch.Tensor]) -> dict:
    """Generator constructor arguments read off a state dict with the official names.

    Resolution: the largest decoder block ``synthesis.dec.Dec_{R}x{R}``; ``w_dim``: the size of
    ``mapping.w_avg``; ``c_dim``: the input size of ``mapping.embed`` (0 without it);
    ``z_dim``: ``mapping.fc0``'s input size minus the label embedding (= w_dim when c_dim > 0);
    ``img_channels``: the final ToRGB's output size; ``mapping_layers``: number of ``mapping.fc*``;
    ``use_noise``: whether the second-stage decoder has noise inputs (False for IOPaint's files).
    """
    res = [int(m.group(1)) for k in sd for m in [_DEC_RE.match(k)] if m]
    if not res:
        raise CheckpointError("cannot infer the generator's resolution: the state dict has no "
                              "'synthesis.dec.Dec_<R>x<R>.*' entries (is it a MAT generator?)")
    resolution = max(res)
    try:
        w_dim = int(sd["mapping.w_avg"].shape[0])
        fc0_in = int(sd["mapping.fc0.weight"].shape[1])
        rgb = sd[f"synthesis.dec.Dec_{resolution}x{resolution}.toRGB.bias"]
    except KeyError as exc:
        raise CheckpointError(f"cannot infer the generator's configuration: missing {exc}") from None
    embed = sd.get("mapping.embed.weight")
    c_dim = int(embed.shape[1]) if embed is not None else 0
    z_dim = fc0_in - (int(embed.shape[0]) if embed is not None else 0)
    n_fc = len([k for k in sd if _MAPPING_FC_RE.match(k)])
    # The released networks have per-layer noise in the second-stage decoder; IOPaint's copy of
    # MAT (and its Places_512_FullData_G.pth) is built without it, so none of the decoder's
    # noise_strength/noise_const entries are there (22 at 512). Some present and some absent is
    # a damaged file, which the name check then reports.
    noise = [k for k in sd if _is_decoder_noise(k)]
    return {"resolution": resolution, "z_dim": z_dim, "c_dim": c_dim, "w_dim": w_dim,
            "img_channels": int(rgb.shape[0]), "mapping_layers": n_fc, "use_noise": bool(noise)}


def infer_discriminator_config(sd: Mapping[str, torch.Tensor]) -> dict:
    """Discriminator arguments from a state dict: resolution = 2**(last Dis block + 2)."""
    blocks = [int(m.group(1)) for k in sd for m in [_DIS_BLOCK_RE.match(k)] if m]
    if not blocks or "Dis.0.conv.weight" not in sd:
        raise CheckpointError("cannot infer the discriminator's resolution: no 'Dis.<i>.conv0' "
                              "entries (is it a MAT discriminator?)")
    c_dim = int(sd["mapping.embed.weight"].shape[1]) if "mapping.embed.weight" in sd else 0
    # Dis.0 (FromRGB) sees the image plus the mask channel.
    return {"resolution": 2 ** (max(blocks) + 2), "c_dim": c_dim,
            "img_channels": int(sd["Dis.0.conv.weight"].shape[1]) - 1}


# ----------------------------------------------------------------------------------------------
# Format detection and loading
# ----------------------------------------------------------------------------------------------

def _own_format_paths(path: Path) -> Optional[Tuple[Path, dict]]:
    """(config path, config) when ``path`` names this package's format, else None."""
    if path.is_dir():
        configs = sorted(p for p in path.glob("*.json") if _is_own_config(p))
        if len(configs) != 1:
            raise CheckpointError(
                f"checkpoint directory {path} must hold exactly one mat_kernels config "
                f"(*.json with \"format\": \"{FORMAT_NAME}\"), found {len(configs)}")
        cfg_path = configs[0]
    elif path.suffix == ".json":
        cfg_path = path
    elif path.suffix == ".safetensors":
        cfg_path = path.with_suffix(".json")
        if not cfg_path.exists():
            raise CheckpointError(f"{path}: its config {cfg_path.name} is missing beside it")
    else:
        return None
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read checkpoint config {cfg_path}: {exc}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{cfg_path} is not a mat_kernels checkpoint config")
    return cfg_path, cfg


def _is_own_config(p: Path) -> bool:
    try:
        cfg = json.loads(p.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("format") == FORMAT_NAME


def _read_config(path: PathLike) -> Optional[dict]:
    found = _own_format_paths(Path(path))
    return None if found is None else found[1]


def _load_own_format(cfg_path: Path, cfg: dict, which: Sequence[str]) -> Dict[str, StateDict]:
    from safetensors import safe_open

    networks = cfg.get("networks") or {}
    out = {}
    for name in which:
        if name not in networks:
            raise CheckpointError(f"{cfg_path}: no '{name}' network in this checkpoint "
                                  f"(it holds: {sorted(networks)})")
        weights = cfg_path.parent / networks[name]
        if not weights.exists():
            raise CheckpointError(f"{cfg_path}: weights file {weights} is missing")
        try:
            with safe_open(str(weights), framework="pt", device="cpu") as f:
                keys = list(f.keys())
                # safetensors sorts names; the saved registration order is restored when present.
                order = json.loads((f.metadata() or {}).get("order", "[]"))
                if sorted(order) == sorted(keys):
                    keys = order
                out[name] = collections.OrderedDict((k, f.get_tensor(k)) for k in keys)
        except Exception as exc:  # safetensors' SafetensorError: header or data cut short
            raise _unreadable(weights, exc) from None
    return out


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _select_networks(data, which: Sequence[str], path) -> Dict[str, StateDict]:
    """Pick the requested networks out of whatever a pickle / torch.load returned."""
    if _is_tensor_dict(data):
        # A bare state dict: it can only be one network. Keys may carry "G_ema."-style prefixes.
        if len(which) != 1:
            raise CheckpointError(f"{path} holds a single bare state dict; ask for one network, "
                                  f"not {tuple(which)}")
        name = which[0]
        prefixed = [k for k in data if k.startswith(f"{name}.")]
        if prefixed and len(prefixed) < len(data):
            data = {k: v for k, v in data.items() if k.startswith(f"{name}.")}
        return {name: remap_state_dict(data, network=name)}
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict of networks or a state dict at the top "
                              f"level, got {type(data).__name__}")
    out = {}
    for name in which:
        if name in data:
            net = data[name]
        elif "state_dict" in data and len(which) == 1:
            net = data["state_dict"]
        else:
            held = sorted(k for k in data if isinstance(k, str))
            raise CheckpointError(f"{path}: no '{name}' network in this checkpoint (top-level "
                                  f"keys: {held})")
        if isinstance(net, (PersistentRecord, ModuleStub)):
            sd = state_dict_from_record(net)
        elif _is_tensor_dict(net):
            sd = remap_state_dict(net, network=name)
        else:
            raise CheckpointError(f"{path}: '{name}' is a {type(net).__name__}, expected a "
                                  f"pickled network or a state dict")
        out[name] = sd
    return out


def _unreadable(path, exc: BaseException) -> CheckpointError:
    # torch's messages run on for lines: the first sentence says what broke
    first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0]
    return CheckpointError(f"{path}: cannot read the checkpoint, the file looks truncated or corrupted "
                           f"({type(exc).__name__}: {first})")


def _torch_load(path: Path):
    """``torch.load(weights_only=True)`` with errors that name the file and what it can read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise _unreadable(path, exc) from None
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" (it names {found.group(1)})" if found else ""
        raise UnsafeCheckpointError(
            f"{path} holds pickled Python objects, not only tensors{what}: e.g. a whole module saved "
            f"with torch.save(model). Rebuilding them would run code named in the file, which this "
            f"loader never does. It reads {ACCEPTED_FORMATS}; re-save with "
            f"torch.save(model.state_dict(), path)") from None
    except (RuntimeError, EOFError, OSError) as exc:  # zip directory missing, unexpected EOF
        raise _unreadable(path, exc) from None


def _safe_unpickle(path: Path):
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f).load()
    except EOFError as exc:
        raise _unreadable(path, exc) from None
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc):  # the refusals of SafeUnpickler keep their own message
            raise _unreadable(path, exc) from None
        raise


def load_state_dicts(path: PathLike, which: Union[str, Iterable[str]] = ("G_ema",)) -> Dict[str, StateDict]:
    """Read the state dicts of the requested networks from any supported checkpoint.

    Args:
        path: an official ``.pkl``, a ``torch.save`` file (zip or legacy) holding a state dict
            or ``{"G_ema": sd, ...}`` / ``{"state_dict": sd}``, or this package's format (the
            ``.safetensors`` file, its ``.json`` config, or the directory holding them).
        which: network names among ``G_ema``, ``G``, ``D`` (or one name).
    Returns:
        ``{name: state_dict}`` with official key names, CPU tensors. No code from the file is
        executed, whatever the format.
    """
    which = (which,) if isinstance(which, str) else tuple(which)
    if not which:
        raise ValueError("which must name at least one network")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    own = _own_format_paths(path)
    if own is not None:
        return _load_own_format(own[0], own[1], which)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_ZIP_MAGIC):
        return _select_networks(_torch_load(path), which, path)
    if not head.startswith(b"\x80"):
        raise CheckpointError(f"{path}: not a pickle, a torch.save zip or a mat_kernels "
                              f"checkpoint (first bytes {head!r})")
    data = _safe_unpickle(path)
    if isinstance(data, int) and data == _TORCH_LEGACY_MAGIC:
        # A legacy (non-zip) torch.save file, not a plain pickle: torch's own safe reader.
        data = _torch_load(path)
    return _select_networks(data, which, path)


def _resolve_config(sd, which, path, resolution, config):
    inferred = (infer_discriminator_config(sd) if which == "D" else infer_generator_config(sd))
    if config:
        for key, value in config.items():
            if key in inferred and inferred[key] != value:
                raise CheckpointError(f"{path}: config says {key}={value} but the weights "
                                      f"imply {key}={inferred[key]}")
    if resolution is not None and resolution != inferred["resolution"]:
        raise CheckpointError(f"{path}: resolution={resolution} was requested but the "
                              f"checkpoint's {which} is for {inferred['resolution']}")
    return inferred


def _check_device(device) -> torch.device:
    """``device`` as a torch.device that this torch can allocate on; checked before loading."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}: "
                         f"{exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ValueError(f"device={device!r} requested but CUDA is not available ({why}); use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: there are only {torch.cuda.device_count()} CUDA devices")
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:
        raise ValueError(f"device={device!r} cannot be used: {exc}") from None
    return dev


def load_generator(path: PathLike, *, device="cpu", which: str = "G_ema",
                   resolution: Optional[int] = None, use_noise: Optional[bool] = None) -> torch.nn.Module:
    """Build ``mat_kernels.models.Generator`` from a checkpoint; eval mode, no grads.

    Args:
        path: any format :func:`load_state_dicts` reads.
        device: where the returned module lives.
        which: ``"G_ema"`` (the one used for inference) or ``"G"``.
        resolution: expected network resolution (256 or 512); None infers it from the weights.
        use_noise: whether the second-stage decoder has its noise inputs. None (default): as the
            file says (the released files have them; IOPaint's ``Places_512_FullData_G.pth``
            does not). False drops the file's noise weights and builds the decoder without
            them, as IOPaint does; ``noise_mode`` then adds nothing.
    Raises:
        ValueError naming ``device`` when this torch cannot use it (checked before loading);
        CheckpointError when the file is truncated or corrupted, holds pickled objects
        (:class:`UnsafeCheckpointError`), or the weights do not match the network.
    """
    device = _check_device(device)
    sd = load_state_dicts(path, (which,))[which]
    G = generator_from_state_dict(sd, which=which, resolution=resolution, config=_read_config(path),
                                  use_noise=use_noise, source=path)
    return G.to(device)


def _is_decoder_noise(name: str) -> bool:
    return bool(_DEC_RE.match(name)) and name.endswith((".noise_strength", ".noise_const"))


def _generator_arguments(sd, which, resolution, config, use_noise, source):
    """(state dict, Generator keyword arguments) for a state dict with the official names."""
    if use_noise not in (None, True, False):
        raise ValueError(f"use_noise must be None, True or False, got {use_noise!r}")
    if use_noise is False:
        sd = collections.OrderedDict((k, v) for k, v in sd.items() if not _is_decoder_noise(k))
        config = {k: v for k, v in (config or {}).items() if k != "use_noise"}
    cfg = _resolve_config(sd, which, source, resolution, config)
    if use_noise and not cfg["use_noise"]:
        raise CheckpointError(f"{source}: use_noise=True was requested but the checkpoint has no "
                              f"second-stage noise weights (IOPaint's layout); load it with use_noise=None")
    kwargs = dict(z_dim=cfg["z_dim"], c_dim=cfg["c_dim"], w_dim=cfg["w_dim"],
                  img_resolution=cfg["resolution"], img_channels=cfg["img_channels"])
    if cfg["mapping_layers"] != 8:
        kwargs["mapping_kwargs"] = {"num_layers": cfg["mapping_layers"]}
    if not cfg["use_noise"]:
        kwargs["synthesis_kwargs"] = {"use_noise": False}
    return sd, kwargs


def generator_from_state_dict(sd: Mapping[str, torch.Tensor], *, which: str = "G_ema",
                              resolution: Optional[int] = None, config: Optional[Mapping] = None,
                              use_noise: Optional[bool] = None, source="state dict",
                              check_only: bool = False):
    """The CPU ``Generator`` (eval mode, no grads) of a state dict with the official names; the
    arguments are :func:`load_generator`'s, ``source`` names the file in error messages. The
    network is built (its parameters drawn from torch's global RNG, as any constructor does),
    then the weights are checked against it by name and shape and loaded strictly.

    ``check_only``: only check the names and shapes (against a network built on the meta
    device: no memory, no RNG draws) and return the entries that would be loaded.
    """
    from mat_kernels.models import Generator

    sd, kwargs = _generator_arguments(sd, which, resolution, config, use_noise, source)
    what = f"Generator at {kwargs['img_resolution']} ({which})"
    if check_only:
        with torch.device("meta"):
            expected = Generator(**kwargs)
        return check_state_dict(sd, expected, what=what)
    G = Generator(**kwargs)
    G.load_state_dict(check_state_dict(sd, G, what=what), strict=True)
    return G.eval().requires_grad_(False)


def load_discriminator(path: PathLike, *, device="cpu", which: str = "D",
                       resolution: Optional[int] = None) -> torch.nn.Module:
    """Build ``mat_kernels.models.Discriminator`` from a checkpoint; eval mode, no grads."""
    from mat_kernels.models import Discriminator

    device = _check_device(device)
    sd = load_state_dicts(path, (which,))[which]
    cfg = _resolve_config(sd, "D", path, resolution, None)
    D = Discriminator(c_dim=cfg["c_dim"], img_resolution=cfg["resolution"],
                      img_channels=cfg["img_channels"])
    sd = check_state_dict(sd, D, what=f"Discriminator at {cfg['resolution']} ({which})")
    D.load_state_dict(sd, strict=True)
    return D.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# (c) Saving in this package's format
# ----------------------------------------------------------------------------------------------

def _plain_tensors(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage: give every entry its own copy.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_checkpoint(path_dir_or_stem: PathLike, G, config: Optional[Mapping] = None, *,
                    D=None, which: str = "G_ema") -> Path:
    """Write ``G`` (and optionally ``D``) as safetensors plus a JSON config; no pickle.

    Args:
        path_dir_or_stem: an existing directory (files ``<dir>/mat.{json,safetensors}``), a
            ``.safetensors``/``.json`` path, or a stem (``<stem>.json``, ``<stem>.safetensors``).
        G: a generator module or its state dict (official key names).
        config: optional overrides/extra fields; ``resolution``, ``z_dim``, ``w_dim``,
            ``c_dim``, ``img_channels`` are read off the weights and must agree with it.
        D: optional discriminator (module or state dict), stored as ``<stem>.D.safetensors``.
        which: the name G is stored under (``"G_ema"`` or ``"G"``).
    Returns:
        The path of the JSON config (pass it, the .safetensors file or the directory to the
        loaders).
    """
    from safetensors.torch import save_file

    p = Path(path_dir_or_stem)
    if p.is_dir():
        stem = p / "mat"
    elif p.suffix in (".safetensors", ".json"):
        stem = p.with_suffix("")
    else:
        stem = p
    stem.parent.mkdir(parents=True, exist_ok=True)
    g_sd = G.state_dict() if isinstance(G, torch.nn.Module) else G
    cfg = infer_generator_config(g_sd)
    for key, value in (config or {}).items():
        if key in cfg and cfg[key] != value:
            raise CheckpointError(f"config {key}={value} disagrees with the generator's "
                                  f"weights ({key}={cfg[key]})")
        cfg[key] = value
    networks = {which: stem.name + ".safetensors"}
    save_file(_plain_tensors(g_sd), str(stem.parent / networks[which]),
              metadata={"format": FORMAT_NAME, "network": which, "order": json.dumps(list(g_sd))})
    if D is not None:
        d_sd = D.state_dict() if isinstance(D, torch.nn.Module) else D
        networks["D"] = stem.name + ".D.safetensors"
        save_file(_plain_tensors(d_sd), str(stem.parent / networks["D"]),
                  metadata={"format": FORMAT_NAME, "network": "D", "order": json.dumps(list(d_sd))})
    doc = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **cfg, "networks": networks}
    cfg_path = stem.parent / (stem.name + ".json")
    cfg_path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return cfg_path
