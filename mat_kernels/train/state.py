"""Training-checkpoint files in ``--out-dir``: ``checkpoint-STEP.pt``, written atomically, found and read back."""
from __future__ import annotations

import os
import re
from typing import Optional

import torch

__all__ = ["CKPT_RE", "find_latest_checkpoint", "save_training_state", "load_training_state"]

CKPT_RE = re.compile(r"^checkpoint-(\d{8})\.pt$")


def find_latest_checkpoint(out_dir: str) -> Optional[str]:
    """The ``checkpoint-STEP.pt`` in ``out_dir`` with the highest step, or None."""
    if not os.path.isdir(out_dir):
        return None
    found = sorted((int(m.group(1)), f) for f in os.listdir(out_dir) if (m := CKPT_RE.match(f)))
    return os.path.join(out_dir, found[-1][1]) if found else None


def save_training_state(path: str, state: dict) -> None:
    """Write a training checkpoint (networks, optimisers, RNG states, step; not the inference
    format of :func:`mat_kernels.checkpoint.save_checkpoint`): torch.save to a temporary file in
    the same folder, then os.replace (atomic on POSIX)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_training_state(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"resume: checkpoint {path!r} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)
