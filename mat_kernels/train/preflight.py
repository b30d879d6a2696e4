"""Checks of a run before any network is built, and the defaults that depend on the machine.

``preflight(cfg, device, world)`` checks the image folders, the VGG19 weights (unless
``--pcp-ratio 0``), TensorBoard and export requests, and the ``--resume`` checkpoint (its
resolution and networks must match; another batch size is accepted with a warning), resolves
``batch``, ``amp``, ``tensorboard`` and ``export_weights``, and estimates the memory the run needs.
Bad options raise :class:`~mat_kernels.train.config.ConfigError` naming the flag; everything worth
telling the user comes back in ``Preflight.notes`` ("warning: ..." for the ones that may fail).

Memory estimate (host RAM on CPU, GPU memory on CUDA), per rank:
``bytes ≈ MEM_BASE + per_rank_batch · (MEM_PER_IMAGE + MEM_PER_PIXEL · resolution²)``, fitted to
the peak resident memory of two real MAT training steps on CPU (fp32, VGG19 perceptual loss, step
0 includes R1; tests/train/measure_train_memory.py, measured values beside the constants). It
was not measured on a GPU, where the CPU figure stands in. bf16 autocast and --grad-checkpoint
need less, so the estimate is an upper bound for them. On CPU every rank of the host counts
(``LOCAL_WORLD_SIZE``).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

from .config import DEFAULT_CUDA_BATCH, MAX_CPU_BATCH, ConfigError, TrainConfig
from .state import find_latest_checkpoint

__all__ = ["Preflight", "preflight", "estimate_memory", "available_memory", "resolve_amp", "has_tensorboard"]

# Least-squares fit to peak RSS measured on CPU (torch 2.13, fp32, 1 thread; bytes; fit within 1.7%):
#   128 px batch 1: 3.863e9, batch 2: 5.310e9, batch 4: 7.866e9; 256 px batch 1: 5.243e9, batch 2: 7.786e9
MEM_BASE = 2.612e9           # torch, G, D, G_ema, Adam states, VGG19
MEM_PER_IMAGE = 0.891e9      # per image of a rank's batch, whatever its size
MEM_PER_PIXEL = 26.01e3      # per pixel of a rank's batch (activations, R1 double backward)
MEM_HEADROOM = 0.9           # use at most this share of the available memory for the default batch

# Networks must match for --resume; the first one is the one users change most.
ARCH_FIELDS = ("resolution", "model", "z_dim", "w_dim", "mapping_layers", "mbstd_group")


@dataclass
class Preflight:
    cfg: TrainConfig                     # with batch, amp, tensorboard and export_weights resolved
    resume_path: Optional[str] = None
    notes: List[str] = field(default_factory=list)


def estimate_memory(resolution: int, per_rank_batch: int) -> float:
    """Estimated peak bytes of one rank's training (see the module docstring)."""
    return MEM_BASE + per_rank_batch * (MEM_PER_IMAGE + MEM_PER_PIXEL * resolution ** 2)


def _cgroup_room() -> Optional[int]:
    """Bytes left under a cgroup v2 memory limit (containers), None without one."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            return int(limit) - int(f.read().strip())
    except (OSError, ValueError):
        return None


def available_memory(device: torch.device) -> Optional[int]:
    """Bytes available for a new run: free GPU memory (torch.cuda.mem_get_info) on CUDA;
    MemAvailable of /proc/meminfo (or free pages), capped by a cgroup limit, on CPU; None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    room = _cgroup_room()
    return avail if room is None else min(avail, room)


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto`` (``--amp`` without a value): bf16 on CPU and on GPUs with bf16, else fp16."""
    if amp != "auto":
        return amp
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


def has_tensorboard() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        return False
    return True


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


# --------------------------------------------------------------------------------------------- folders / files
def _has_image(root: str) -> bool:
    from PIL import Image
    Image.init()
    exts = {e.lower() for e in Image.EXTENSION}
    for _, _, files in os.walk(root):
        if any(os.path.splitext(f)[1].lower() in exts for f in files):
            return True
    return False


def _check_folder(opt: str, path: Optional[str]) -> None:
    if path is None:
        return
    if not os.path.isdir(path):
        raise ConfigError(f"{opt}: folder {path!r} does not exist")
    if not _has_image(path):
        raise ConfigError(f"{opt}: no image files (.png, .jpg, ...) in {path!r} (searched recursively)")


def _check_vgg(cfg: TrainConfig) -> None:
    if cfg.pcp_ratio == 0:
        return
    from .losses import find_vgg19_weights
    try:
        find_vgg19_weights(cfg.vgg_path, arg="--vgg-path")
    except FileNotFoundError as exc:
        msg = str(exc).rstrip(".")
        if not msg.startswith("--vgg-path:"):
            msg = f"--vgg-path: {msg}"
        raise ConfigError(f"{msg}. To train without the perceptual loss, pass --pcp-ratio 0.") from None


def _check_model(cfg: TrainConfig) -> None:
    if cfg.model == "mat":
        return
    mod, _, attr = cfg.model.partition(":")
    try:
        factory = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--model: cannot load {cfg.model!r} ({type(exc).__name__}: {exc})") from None
    if not callable(factory):
        raise ConfigError(f"--model: {cfg.model!r} is not callable")


# --------------------------------------------------------------------------------------------- resume
def _resume_source(cfg: TrainConfig) -> Tuple[Optional[str], Optional[dict]]:
    """(path, stored config) of the --resume checkpoint, read without loading its tensors."""
    if cfg.resume is None:
        return None, None
    path = cfg.resume
    if path == "latest":
        path = find_latest_checkpoint(cfg.out_dir)
        if path is None:
            raise ConfigError(f"--resume latest: no checkpoint-*.pt in --out-dir {cfg.out_dir!r}")
    elif not os.path.isfile(path):
        raise ConfigError(f"--resume: checkpoint {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        stored = state["config"]
    except Exception as exc:  # not a torch file, or not a training state
        raise ConfigError(f"--resume: {path!r} is not a mat-train training checkpoint "
                          f"({type(exc).__name__}: {exc})") from None
    return path, stored


def _check_resume(cfg: TrainConfig, path: str, stored: dict, notes: List[str]) -> TrainConfig:
    """The networks must match the checkpoint's; the batch defaults to the checkpoint's."""
    for name in ARCH_FIELDS:
        if name in stored and stored[name] != getattr(cfg, name):
            opt = "--" + name.replace("_", "-")
            raise ConfigError(f"{opt}: the checkpoint {path!r} was trained with {opt} {stored[name]}, got "
                              f"{getattr(cfg, name)} (pass {opt} {stored[name]} to resume it)")
    old = stored.get("batch")
    if cfg.batch is None and old is not None:
        cfg = dataclasses.replace(cfg, batch=int(old))
    elif old is not None and cfg.batch != old:
        notes.append(f"warning: --batch {cfg.batch} differs from the checkpoint's ({old}): training continues "
                     f"from it, but not exactly as the interrupted run would have (data order, EMA, R1 "
                     f"statistics change)")
    return cfg


# --------------------------------------------------------------------------------------------- batch / memory
def _ranks_on_host(device: torch.device, world: int) -> int:
    if device.type == "cuda":
        return 1  # one GPU per rank
    return int(os.environ.get("LOCAL_WORLD_SIZE", world))


def _default_batch(cfg: TrainConfig, device: torch.device, world: int, avail: Optional[int],
                   notes: List[str]) -> int:
    if device.type == "cuda":
        return max(DEFAULT_CUDA_BATCH // world, 1) * world
    host = _ranks_on_host(device, world)
    per_rank = 1
    while (per_rank * 2 * world <= MAX_CPU_BATCH and avail is not None
           and host * estimate_memory(cfg.resolution, per_rank * 2) <= MEM_HEADROOM * avail):
        per_rank *= 2
    room = "memory available unknown" if avail is None else f"{_gib(avail)} available"
    notes.append(f"--batch {per_rank * world} (the CPU default: the largest power of two up to {MAX_CPU_BATCH} "
                 f"that fits the memory estimate at --resolution {cfg.resolution}; {room}); pass --batch to "
                 f"choose")
    return per_rank * world


def _check_memory(cfg: TrainConfig, device: torch.device, world: int, avail: Optional[int],
                  notes: List[str]) -> None:
    if avail is None or cfg.model != "mat":  # the estimate is MAT's
        return
    host = _ranks_on_host(device, world)
    need = host * estimate_memory(cfg.resolution, cfg.batch // world)
    if need <= avail:
        return
    where = "GPU memory" if device.type == "cuda" else "memory"
    fits = [b for b in range(1, cfg.batch // world)
            if host * estimate_memory(cfg.resolution, b) <= MEM_HEADROOM * avail]
    hint = (f"--batch {fits[-1] * world} fits" if fits else
            f"even --batch {world} does not fit; lower --resolution")
    notes.append(f"warning: --batch {cfg.batch} at --resolution {cfg.resolution} needs about {_gib(need)} of "
                 f"{where} (estimate) but {_gib(avail)} are available; the run may be killed for lack of "
                 f"memory. {hint} (--amp and --grad-checkpoint also save memory)")


def preflight(cfg: TrainConfig, device: torch.device, world: int) -> Preflight:
    """Check ``cfg`` for a run on ``device`` with ``world`` ranks; see the module docstring."""
    cfg = dataclasses.replace(cfg).validate()
    notes: List[str] = []
    _check_folder("--data", cfg.data)
    _check_folder("--val-data", cfg.val_data)
    if cfg.val_masks is not None and not os.path.isdir(cfg.val_masks):
        raise ConfigError(f"--val-masks: folder {cfg.val_masks!r} does not exist")
    _check_model(cfg)
    _check_vgg(cfg)
    if cfg.tensorboard and not has_tensorboard():
        raise ConfigError("--tensorboard: the tensorboard package is not installed (pip install tensorboard, "
                          "or leave --tensorboard out: stats.jsonl is always written)")
    if cfg.export_weights and cfg.model != "mat":
        raise ConfigError(f"--export-weights: only --model mat can be exported (got --model {cfg.model})")
    resume_path, stored = _resume_source(cfg)
    if stored is not None:
        cfg = _check_resume(cfg, resume_path, stored, notes)
    avail = available_memory(device)
    if cfg.batch is None:
        cfg = dataclasses.replace(cfg, batch=_default_batch(cfg, device, world, avail, notes))
    if cfg.batch % world != 0:
        raise ConfigError(f"--batch: {cfg.batch} is not divisible by the number of ranks ({world})")
    _check_memory(cfg, device, world, avail, notes)
    cfg = dataclasses.replace(
        cfg, amp=resolve_amp(cfg.amp, device),
        tensorboard=has_tensorboard() if cfg.tensorboard is None else cfg.tensorboard,
        export_weights=cfg.model == "mat" if cfg.export_weights is None else cfg.export_weights)
    return Preflight(cfg, resume_path, notes)
