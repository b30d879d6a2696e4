"""Weights-only exports of training checkpoints, in the format ``mat-inpaint`` reads.

A training checkpoint (``checkpoint-STEP.pt``, about 1.4 GB at 256 or 512) holds G, D, G_ema,
both Adam states and every rank's RNG state: what ``--resume`` needs. An export holds G_ema alone
(about 250 MB) as ``weights-STEP.json`` + ``weights-STEP.safetensors``
(:func:`mat_kernels.checkpoint.save_checkpoint`: no pickle), for ``mat-inpaint --checkpoint`` and
:func:`mat_kernels.checkpoint.load_generator`.

``mat-train --export-weights`` (on by default for ``--model mat``) writes one beside every
checkpoint; ``mat-train export CKPT [OUT]`` exports an existing checkpoint.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from .state import CKPT_RE

__all__ = ["export_stem", "export_weights", "export_main"]

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


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mat-train", usage="mat-train export CKPT [OUT] [--which {G_ema,G}]",
        description="Write the G_ema weights of a mat-train checkpoint (G, D, G_ema and both Adam states) "
                    "alone, as JSON + safetensors: what mat-inpaint --checkpoint reads.")
    p.add_argument("checkpoint", metavar="CKPT", help="a training checkpoint (checkpoint-STEP.pt)")
    p.add_argument("out", metavar="OUT", nargs="?",
                   help="output stem, .json path or folder (default: weights-STEP beside CKPT)")
    p.add_argument("--which", choices=("G_ema", "G"), default="G_ema",
                   help="network to export (default: G_ema, the one used for inference)")
    return p


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_export_parser()
    args = parser.parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        parser.error(f"CKPT: {args.checkpoint} does not exist")
    out = args.out if args.out is not None else export_stem(args.checkpoint)
    try:
        path = export_weights(args.checkpoint, out, which=args.which)
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        # ValueError covers mat_kernels.checkpoint.CheckpointError (e.g. not a MAT generator)
        parser.error(f"CKPT: cannot export {args.checkpoint}: {exc}")
    print(f"mat-train export: wrote {path} (mat-inpaint --checkpoint {path})")
    return 0
