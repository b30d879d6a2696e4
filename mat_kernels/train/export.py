"""Weights-only exports of training checkpoints, in the format ``mat-inpaint`` reads.

A training checkpoint (``checkpoint-STEP.pt``, about 1.4 GB at 256 or 512) holds G, D, G_ema,
both Adam states and every rank's RNG state: what ``--resume`` needs. An export holds G_ema alone
(about 250 MB) as ``weights-STEP.json`` + ``weights-STEP.safetensors``
(:func:`mat_kernels.checkpoint.save_checkpoint`: no pickle), for ``mat-inpaint --checkpoint`` and
:func:`mat_kernels.checkpoint.load_generator`.

``mat-train --export-weights`` (on by default for ``--model mat``) writes one beside every
checkpoint; ``mat-train export CKPT [OUT]`` (:mod:`mat_kernels.cli.train`) exports an existing checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch

from .state import CKPT_RE

__all__ = ["export_stem", "export_weights"]

PathLike = Union[str, os.PathLike]


def export_stem(ckpt_path: PathLike) -> Path:
    """Where the export of a training checkpoint goes: ``checkpoint-STEP.pt`` -> ``weights-STEP``
    (other names: the checkpoint's stem + ``-weights``), in the same folder."""
    p = Path(ckpt_path)
    m = CKPT_RE.match(p.name)
    return p.parent / (f"weights-{m.group(1)}" if m else f"{p.stem}-weights")


def export_weights(state: Union[dict, PathLike], out: PathLike, which: str = "G_ema") -> Path:
    """Write network ``which`` of a training state (a dict or a checkpoint path) with
    :func:`mat_kernels.checkpoint.save_checkpoint` at ``out`` (a stem, .json or .safetensors
    path, or an existing folder); returns the JSON path. The training step is recorded in it."""
    from ..checkpoint import save_checkpoint
    if not isinstance(state, dict):
        state = torch.load(state, map_location="cpu", weights_only=True, mmap=True)
    if which not in state:
        raise KeyError(f"which: no {which!r} network in the training state (it has: {sorted(state)})")
    extra = {"training_step": int(state["step"])} if "step" in state else None
    return save_checkpoint(out, state[which], extra, which=which)
