"""MAT's networks with the official names, and backend selection for a whole network."""
from __future__ import annotations

import torch.nn as nn

from .. import backends
from ..nn.attention import SwinTransformerBlock
from .discriminator import Discriminator
from .generator import Decoder, Encoder, FirstStage, Generator, SynthesisNet
from .mapping import MappingNet

__all__ = ["Generator", "Discriminator", "MappingNet", "SynthesisNet", "FirstStage", "Encoder", "Decoder",
           "set_backend"]


def set_backend(model: nn.Module, name: str) -> nn.Module:
    """Set the kernel backend ("reference", "triton", "cuda" or "auto") on every module of
    ``model`` (itself included) that has one: Swin blocks (window attention), partial convs
    (mask rule) and the layers applying bias_act. Sets an instance attribute ``backend``;
    "auto" runs fused kernels on CUDA tensors and the reference on CPU. Returns ``model``.

    The backend's module is imported here, so a later ``torch.compile`` of ``model`` traces
    through it (an import inside a compiled region is a graph break). Setting ``module.backend``
    by hand skips that import: on a CUDA machine every backend is imported with the package
    anyway; elsewhere call this function (or import ``mat_kernels.backends.<name>``) first.
    """
    if name not in backends.NAMES:
        raise ValueError(f"backend must be one of {backends.NAMES}, got {name!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if name != "auto":
        backends.load(name)
    for module in model.modules():
        if isinstance(module, SwinTransformerBlock) or hasattr(type(module), "backend"):
            module.backend = name
    return model
