"""The CPU fast path of the StyleGAN2 layers: channels_last convolutions with the bias, the
activation gain and the resampling filter's padding folded into the convolutions.

The reference layers (backend ``"reference"``, and every layer while autograd records) run the official op sequence:
convolution, an explicit zero pad (``F.pad``) before every FIR blur, then bias, activation and gain as three
passes over the output (:func:`mat_kernels.reference.bias_act`). On CPU tensors in inference
(``torch.no_grad``/``inference_mode``) the layers set to ``"auto"`` or ``"sdpa"`` run the same math
with fewer passes over memory:

* the activations are kept channels_last (NHWC), where oneDNN's convolutions, transposed
  convolutions and depthwise FIR blurs are 1.6-2.4x faster on CPU than on NCHW tensors;
* the zero padding of a blur is the convolution's own ``padding`` when it is symmetric (no pad
  copy);
* ``act(x + b) * g`` is ``act(x * g + b * g)`` for the piecewise-linear activations (g > 0): the
  gain is folded into the weights, the bias is the last convolution's bias (the blur's, after an
  up-sampling convolution), and the activation is one in-place pass.

Results differ from the reference by fp32 rounding only (the sums are the same, grouped
differently); the generator's output stays within the fp32 model tolerance of the reference
backend (tests/models/test_fast_path.py). Calls this path does not cover (clamps, other
activations, autocast, half biases on fp32 inputs) go through the reference layers.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..ops import autocast_dtype
from ..reference.bias_act import bias_act_defaults
from .resample import _filter_size

FAST_ACTS = ("linear", "relu", "lrelu")
FAST_BACKENDS = ("auto", "sdpa")


def use_fast_path(backend: str, x: torch.Tensor, act: str = "linear", clamp: Optional[float] = None,
                  gain: float = 1.0, bias: Optional[torch.Tensor] = None) -> bool:
    """Whether a layer with ``backend`` runs this path for input ``x``: inference only (autograd
    off), so that training keeps the official op sequence and its gradients bit for bit."""
    return (backend in FAST_BACKENDS and x.device.type == "cpu" and not torch.is_grad_enabled() and act in FAST_ACTS and clamp is None
            and gain > 0 and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and autocast_dtype(x.device) is None and (bias is None or bias.dtype == x.dtype))


def activation_gain(act: str, gain: float = 1.0):
    """(alpha, total gain) of ``act`` with the layer's extra ``gain``."""
    alpha, act_gain, _ = bias_act_defaults(act, None, None, None)
    return alpha, act_gain * gain


def activate_(x: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    """The activation of an already gained and biased tensor (a fresh one: in place)."""
    if act == "lrelu":
        return F.leaky_relu(x, alpha, inplace=True)
    if act == "relu":
        return F.relu(x, inplace=True)
    return x


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _blur(x: torch.Tensor, f: torch.Tensor, pad, gain: float, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """upfirdn2d(x, f, padding=pad, gain=gain) + bias for a 2-D filter (up = down = 1): the
    symmetric part of the padding is the convolution's, the rest an explicit pad/crop."""
    px0, px1, py0, py1 = pad
    C = x.shape[1]
    fk = (f * (gain ** (f.ndim / 2))).to(x.dtype).flip([0, 1])
    fk = fk[None, None].repeat(C, 1, 1, 1)
    sx, sy = max(min(px0, px1), 0), max(min(py0, py1), 0)
    if (px0, px1, py0, py1) != (sx, sx, sy, sy):
        x = F.pad(x, [px0 - sx, px1 - sx, py0 - sy, py1 - sy])
    return F.conv2d(x, fk, bias=bias, padding=(sy, sx), groups=C)


def conv2d_resample_fused(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor], up: int, down: int,
                          padding: int, bias: Optional[torch.Tensor], groups: int = 1) -> Optional[torch.Tensor]:
    """:func:`mat_kernels.nn.resample.conv2d_resample` (correlation, unflipped filter) plus
    ``bias`` per output channel, on channels_last tensors, for MAT's geometries: k x k with
    padding k // 2 and no resampling, down 2 (blur then strided conv) and up 2 (transposed conv
    then blur). Returns None for any other geometry (the caller takes the reference path)."""
    out_channels, in_per_group, kh, kw = w.shape
    if kh != kw or kh % 2 != 1 or padding != kh // 2 or (up, down) not in ((1, 1), (1, 2), (2, 1)):
        return None
    if f is not None and (f.ndim != 2 or f.shape[0] != f.shape[1]):
        return None
    x, w = _cl(x), _cl(w)
    if up == 1 and down == 1:
        return F.conv2d(x, w, bias=bias, padding=padding, groups=groups)
    if f is None or kh == 1:
        return None
    fw, _ = _filter_size(f)
    if down == 2:
        p0 = padding + (fw - down + 1) // 2
        p1 = padding + (fw - down) // 2
        x = _blur(x, f, (p0, p1, p0, p1), 1.0, None)
        return F.conv2d(x, w, bias=bias, stride=2, groups=groups)
    # up == 2: transposed convolution with the flipped weight (as (in, out) per group), then blur.
    if groups == 1:
        wt = w.transpose(0, 1)
    else:
        wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    p0 = padding + (fw + up - 1) // 2 - (kw - 1)
    p1 = padding + (fw - up) // 2 - (kw - up)
    t = max(min(-p0, -p1), 0)
    x = F.conv_transpose2d(x, _cl(wt.flip([2, 3])), stride=2, padding=t, groups=groups)
    return _blur(x, f, (p0 + t, p1 + t, p0 + t, p1 + t), float(up ** 2), bias)
