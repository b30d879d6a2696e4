"""FIR resampling and resampling convolutions of StyleGAN2, as MAT uses them (reference PyTorch).

``upfirdn2d`` = upsample (zero insertion), pad/crop, FIR filter, downsample, per channel.
``conv2d_resample`` fuses a convolution with 2x up/down sampling the way the released code
does: strided convolution after a blur for ``down``, a flipped-weight transposed convolution
followed by a blur (gain up^2) for ``up``. The op sequence is kept so results match the official
reference path to the rounding of the same torch calls.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

Padding = Union[int, Sequence[int]]


def _pair(value, name: str) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise ValueError(f"{name} must be a positive int or a pair [x, y] of positive ints, got {value!r}")
    return int(value[0]), int(value[1])


def _padding4(padding: Padding) -> Tuple[int, int, int, int]:
    """int -> all sides; [x, y] -> [x, x, y, y]; [x0, x1, y0, y1] as given (negative = crop)."""
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = [padding, padding]
    if not isinstance(padding, (list, tuple)) or len(padding) not in (2, 4) \
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in padding):
        raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1] of ints, got {padding!r}")
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    return tuple(int(p) for p in padding)


def _filter_size(f) -> Tuple[int, int]:
    """(width, height) of a 2-D filter, (taps, taps) of a separable one, (1, 1) for None."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise ValueError(f"f must be None or a 1-D/2-D tensor from setup_filter(), got "
                         f"{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}")
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(f, device=None, normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1, separable=None) -> torch.Tensor:
    """FIR filter for :func:`upfirdn2d`, float32.

    A 1-D list becomes its outer product (a 2-D, non-separable filter) unless it has 8 or more
    taps (or ``separable=True``); ``normalize`` makes it sum to 1 (unit DC gain); ``gain``
    scales the signal magnitude (gain^(ndim/2) per filter element).

    Returns:
        (taps, taps) or (taps,) float32 tensor on ``device`` (default: the current default
        device, so modules can be built under ``torch.device("meta")``). ``[1, 3, 3, 1]`` gives the 4x4
        binomial filter, outer([1,3,3,1], [1,3,3,1]) / 64.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f"f must be a non-empty scalar, 1-D or 2-D filter, got shape {tuple(f.shape)}")
    if f.ndim == 0:
        f = f.reshape(1)
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("a 2-D filter cannot be made separable")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f if device is None else f.to(device=device)


def upfirdn2d(x: torch.Tensor, f, up=1, down=1, padding: Padding = 0, flip_filter: bool = False,
              gain: float = 1) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample every channel of a batch of images.

    1. insert ``up - 1`` zeros after every sample; 2. pad by ``padding`` [x0, x1, y0, y1]
    (negative crops); 3. convolve with ``f`` (true convolution unless ``flip_filter``; the
    filter is scaled by gain^(f.ndim / 2)), keeping fully covered outputs; 4. keep every
    ``down``-th sample.

    Args:
        x: (B, C, H, W) floating tensor.
        f: (fh, fw) or (taps,) float32 filter from :func:`setup_filter`, or None (identity).
    Returns:
        (B, C, (H*up + y0 + y1 - fh) // down + 1, (W*up + x0 + x1 - fw) // down + 1).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    _filter_size(f)
    if f.requires_grad:
        raise ValueError("f must not require grad (filters are fixed buffers)")
    upx, upy = _pair(up, "up")
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = _padding4(padding)
    B, C, H, W = x.shape

    # Zero insertion: every sample is followed by up-1 zeros along each axis.
    if upx > 1 or upy > 1:
        x = x.reshape(B, C, H, 1, W, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(B, C, H * upy, W * upx)
    # Positive padding pads with zeros, negative padding crops.
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]

    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:  # conv2d correlates; flipping makes it a true convolution
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([C, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=C)
    else:  # separable: one pass per axis
        x = F.conv2d(x, f.unsqueeze(2), groups=C)
        x = F.conv2d(x, f.unsqueeze(3), groups=C)
    return x[:, :, ::downy, ::downx]


def upsample2d(x: torch.Tensor, f, up=2, padding: Padding = 0, flip_filter: bool = False,
               gain: float = 1) -> torch.Tensor:
    """FIR upsampling: (B, C, H, W) -> (B, C, H*up, W*up) (plus ``padding``), DC gain kept
    (the filter gets gain up^2 to make up for the inserted zeros)."""
    upx, upy = _pair(up, "up")
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x: torch.Tensor, f, down=2, padding: Padding = 0, flip_filter: bool = False,
                 gain: float = 1) -> torch.Tensor:
    """FIR downsampling: (B, C, H, W) -> (B, C, H/down, W/down) (plus ``padding``)."""
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2,
         py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain)


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d / conv_transpose2d; ``flip_weight=False`` makes it a true convolution."""
    out_channels, in_per_group, kh, kw = w.shape
    if not flip_weight:
        w = w.flip([2, 3])
    # Channels-last 1x1 convolutions with few channels: the released code routes them through a
    # matmul (tiny outputs) or a contiguous conv and returns channels-last; kept for layout parity.
    if (kh == 1 and kw == 1 and stride == 1 and padding in (0, [0, 0], (0, 0)) and not transpose
            and x.stride()[1] == 1 and min(out_channels, in_per_group) < 64):
        if out_channels <= 4 and groups == 1:
            shape = x.shape
            x = w.squeeze(3).squeeze(2) @ x.reshape([shape[0], in_per_group, -1])
            x = x.reshape([shape[0], out_channels, shape[2], shape[3]])
        else:
            x = F.conv2d(x.to(memory_format=torch.contiguous_format),
                         w.to(memory_format=torch.contiguous_format), groups=groups)
        return x.to(memory_format=torch.channels_last)
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f=None, up: int = 1, down: int = 1,
                    padding: Padding = 0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> torch.Tensor:
    """2-D convolution with optional FIR up/down sampling; padding is given once, relative to
    the upsampled image.

    Args:
        x: (B, C_in, H, W); w: (C_out, C_in / groups, kh, kw), same dtype as x.
        f: float32 filter from :func:`setup_filter` or None.
        up, down: integer factors >= 1. padding: int, [x, y] or [x0, x1, y0, y1].
        flip_weight: True = correlation (as F.conv2d), False = convolution.
    Returns:
        (B, C_out, H', W'): for MAT's cases (k odd, padding k//2) H' = H * up / down.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or w.dtype != x.dtype:
        raise ValueError("w must be a 4-D (out, in/groups, kh, kw) tensor with x's dtype")
    # The released code insists on float32 filters; any floating filter is accepted here so a
    # module converted with .double()/.half() keeps working (upfirdn2d casts it to x's dtype).
    if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or not f.is_floating_point()):
        raise ValueError("f must be None or a floating 1-D/2-D filter from setup_filter()")
    for name, v in (("up", up), ("down", down), ("groups", groups)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)

    # Padding the FIR stage needs, on top of the convolution's own padding.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 with downsampling: downsample first (cheaper), then convolve.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    # 1x1 with upsampling: convolve first, then upsample.
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    # Downsampling: blur, then a strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    # Upsampling: transposed strided convolution (weights as (in, out) per group), then blur.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2,
                      flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x
    # No resampling and symmetric non-negative padding: a plain convolution.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    # General case: pad/crop with upfirdn2d, then convolve.
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
    return _conv(x, w, groups=groups, flip_weight=flip_weight)
