"""Bias, activation, gain and clamp of the StyleGAN2 layers MAT is built from, in plain PyTorch."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .. import _checks

# name -> (activation function, default alpha, default gain), as in the official bias_act.
ACTIVATIONS = {
    "linear": (lambda x, alpha: x, 0.0, 1.0),
    "relu": (lambda x, alpha: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
    "tanh": (lambda x, alpha: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, alpha: torch.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, alpha: F.elu(x), 0.0, 1.0),
    "selu": (lambda x, alpha: F.selu(x), 0.0, 1.0),
    "softplus": (lambda x, alpha: F.softplus(x), 0.0, 1.0),
    "swish": (lambda x, alpha: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
             alpha: Optional[float] = None, gain: Optional[float] = None,
             clamp: Optional[float] = None) -> torch.Tensor:
    """Bias, activation, gain and clamp in the order of the official reference ``bias_act``.

    Args:
        x: any floating tensor; b: (x.shape[dim],) or None; act: a key of ``ACTIVATIONS``;
        alpha, gain: None for the activation's defaults; clamp: None or < 0 for no clamp.
    Returns:
        A tensor of x's shape.
    """
    dim = _checks.check_bias_act_args(x, b, _checks.as_int("dim", dim), act, ACTIVATIONS)
    alpha, gain, clamp = (_checks.as_float(n, v, optional=True) for n, v in (("alpha", alpha), ("gain", gain),
                                                                             ("clamp", clamp)))
    alpha, gain, clamp = bias_act_defaults(act, alpha, gain, clamp)
    return bias_act_core(x, b, dim, act, alpha, gain, clamp)


def bias_act_defaults(act: str, alpha: Optional[float], gain: Optional[float], clamp: Optional[float]):
    """(alpha, gain, clamp) with the activation's defaults filled in; clamp -1 means none."""
    _, def_alpha, def_gain = ACTIVATIONS[act]
    alpha = float(def_alpha if alpha is None else alpha)
    gain = float(def_gain if gain is None else gain)
    clamp = -1.0 if clamp is None or clamp < 0 else float(clamp)
    return alpha, gain, clamp


def bias_act_core(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float, gain: float,
                  clamp: float) -> torch.Tensor:
    """:func:`bias_act` for validated arguments with every default filled in."""
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = ACTIVATIONS[act][0](x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
