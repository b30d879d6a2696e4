"""The errors of checkpoint loading."""
from __future__ import annotations

import pickle

__all__ = ["CheckpointError", "UnsafeCheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the network it is loaded into."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A ``torch.save`` file holds Python objects (not only tensors) that could only be rebuilt
    by running code named in the file: refused (also a ``pickle.UnpicklingError``, what torch's
    ``weights_only`` reader raises)."""
