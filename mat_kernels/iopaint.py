"""IOPaint (Sanster/IOPaint, ``pip install "mat_kernels[iopaint]"``) with this package's MAT
generator as its ``mat`` model, without editing IOPaint.

    mat-iopaint start --model mat --device cpu --port 8080
    mat-iopaint start --model mat --device cuda --mat-checkpoint Places_512_FullData.pkl

``mat-iopaint`` (:mod:`mat_kernels.cli.iopaint`) registers :func:`model_class` as ``iopaint.model.models["mat"]`` and hands every
other argument to IOPaint's own command line (``iopaint start``, ``iopaint run``, with their flags
as they are: ``--device``, ``--no-half``, ``--port``, ``--model-dir`` ...). The one option of its
own, ``--mat-checkpoint PATH``, names the weights: IOPaint's ``Places_512_FullData_G.pth`` (the
default: the file IOPaint itself would load, ``$MAT_MODEL_URL`` when that is a local file, else
its download cache), an official ``.pkl`` (read by the safe loader; nothing in it is executed),
any state dict with the official names or this package's safetensors format.

What the model does is IOPaint's MAT model, step for step: IOPaint's ``InpaintModel.__call__``
(its crop/resize strategies, square padding to multiples of 512) and ``MAT.forward`` (mask
threshold, [-1, 1] input, ``noise_mode="none"``, truncation 1, rounding) run unchanged; only the
network is replaced. It is seeded like IOPaint's (seed 240 before it is built, then z drawn from
numpy), its decoder has no noise inputs (as IOPaint's copy; a ``.pkl``'s noise weights are left
out), and its first-stage Bernoulli map is laid out as IOPaint's (``Generator.set_map_order
("iopaint")``, see ``mat_kernels.models.generator.MAP_ORDERS``), so the same weights and request
give IOPaint's image. fp16 on CUDA unless ``--no-half`` (IOPaint's rule), fp32 elsewhere; on CUDA
the fused kernels run (backend ``auto``), whose fp16 path normalises tokens and counts
partial-convolution masks in fp32 (no NaN fixes needed).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, generator_from_state_dict, load_state_dicts

SEED = 240  # IOPaint's MAT seeds python, numpy and torch with it before building its network
CHECKPOINT_FLAG = "--mat-checkpoint"


class IOPaintMissingError(ImportError):
    """IOPaint is not installed."""


def require_iopaint():
    """IOPaint's MAT module; a one-line :class:`IOPaintMissingError` when it cannot be imported."""
    try:
        import iopaint.model.mat as iop_mat
    except ImportError as exc:
        if (exc.name or "iopaint").split(".")[0] == "iopaint":
            what = "IOPaint is not installed"
        else:  # installed, but one of its own dependencies is missing or broken
            what = f"IOPaint cannot be imported ({' '.join(str(exc).split())})"
        raise IOPaintMissingError(f"{what}; install it with pip install \"mat_kernels[iopaint]\" "
                                  f"(iopaint 1.6.0)") from None
    return iop_mat


def default_checkpoint() -> Path:
    """The MAT weights IOPaint itself loads: ``$MAT_MODEL_URL`` when it names a local file,
    else where IOPaint downloads ``Places_512_FullData_G.pth`` to (torch hub's checkpoints)."""
    iop_mat = require_iopaint()
    from iopaint.helper import get_cache_path_by_url
    url = iop_mat.MAT_MODEL_URL
    return Path(url) if os.path.exists(url) else Path(get_cache_path_by_url(url))


def read_weights(path) -> dict:
    """The generator's state dict from ``path``, checked by name and shape against the network
    the IOPaint model builds (no noise inputs). Errors are one line and name the file."""
    path = Path(path)
    try:
        sd = load_state_dicts(path, ("G_ema",))["G_ema"]
        return generator_from_state_dict(sd, use_noise=False, source=path, check_only=True)
    except (CheckpointError, OSError) as exc:
        msg = " ".join(str(exc).split())
        raise CheckpointError(msg if str(path) in msg else f"{path}: {msg}") from None


def model_class(checkpoint=None, state_dict=None):
    """A subclass of IOPaint's ``MAT`` model whose network is ``mat_kernels``' generator.

    checkpoint: the weights (see the module docstring); None: :func:`default_checkpoint`,
    downloaded by IOPaint when missing, as for its own model. state_dict: the weights as
    :func:`read_weights` returned them, used by the first model built instead of reading the
    file again.
    """
    iop_mat = require_iopaint()
    from iopaint.model.utils import set_seed

    explicit = checkpoint is not None
    preloaded = [state_dict] if state_dict is not None else []

    def weights_path() -> Path:
        return Path(checkpoint) if explicit else default_checkpoint()

    class MAT(iop_mat.MAT):
        """IOPaint's MAT model (its pre/post-processing and forward) running mat_kernels'
        generator."""

        def init_model(self, device, **kwargs):
            sd = preloaded.pop() if preloaded else read_weights(weights_path())
            fp16 = not kwargs.get("no_half", False)
            use_gpu = "cuda" in str(device) and torch.cuda.is_available()
            self.torch_dtype = torch.float16 if use_gpu and fp16 else torch.float32
            # IOPaint's order: seed, build the network (its parameter draws advance torch's RNG,
            # ours draws the same), load, then z from numpy. The first request's Bernoulli maps
            # then come from the same RNG state as in IOPaint.
            set_seed(SEED)
            G = generator_from_state_dict(sd, use_noise=False, source=weights_path())
            del sd
            G.set_map_order("iopaint")
            self.model = G.to(self.torch_dtype).to(device)
            self.z = torch.from_numpy(np.random.randn(1, G.z_dim)).to(self.torch_dtype).to(device)
            self.label = torch.zeros([1, G.c_dim], device=device).to(self.torch_dtype)

        @staticmethod
        def download():
            if explicit:
                if not Path(checkpoint).exists():
                    raise FileNotFoundError(f"{CHECKPOINT_FLAG}: {checkpoint} does not exist")
                return
            iop_mat.MAT.download()

        @staticmethod
        def is_downloaded() -> bool:
            return weights_path().exists()

    MAT.__qualname__ = MAT.__name__ = "MatKernelsMAT"
    return MAT


def register(checkpoint=None, state_dict=None):
    """Make :func:`model_class` IOPaint's ``mat`` model (``iopaint.model.models["mat"]``, the
    dict its model manager, downloader and model list read); returns the class."""
    require_iopaint()
    from iopaint.model import models
    cls = model_class(checkpoint, state_dict)
    models["mat"] = cls
    return cls
