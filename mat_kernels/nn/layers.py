"""StyleGAN2-style layers MAT is built from, with the official parameter names and numerics.

Every layer that applies a bias and an activation goes through :func:`apply_bias_act`, that is
:func:`mat_kernels.ops.bias_act` with the layer's ``backend``. ``Conv2dLayerPartial``'s
mask rule goes through :func:`mat_kernels.ops.partial_conv_mask_update` with the layer's
``backend``. ``mat_kernels.models.set_backend`` sets both on a whole network.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from .draws import normal_noise
from ..reference.bias_act import ACTIVATIONS, bias_act  # noqa: F401  (re-exported: the layers' reference)
from .fast_conv import activate_, activation_gain, conv2d_resample_fused, use_fast_path
from .resample import conv2d_resample, setup_filter, upsample2d


def apply_bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
                   alpha: Optional[float] = None, gain: Optional[float] = None,
                   clamp: Optional[float] = None, backend: str = "auto") -> torch.Tensor:
    """:func:`mat_kernels.ops.bias_act` with the layer's ``backend``. There is no CUDA-extension
    bias_act, so a layer set to "cuda" lets ``auto`` choose (the Triton kernel on CUDA tensors)."""
    return ops.bias_act(x, b, dim, act, alpha, gain, clamp, backend="auto" if backend == "cuda" else backend)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x * rsqrt(mean(x^2 over ``dim``) + eps): unit second moment per sample."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def get_style_code(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MAT's style code: concat[a, b] along dim 1."""
    return torch.cat([a, b], dim=1)


class FullyConnectedLayer(nn.Module):
    """MAT's ``FullyConnectedLayer``: equalised-learning-rate linear layer with bias+activation.

    ``weight`` is (out, in) drawn N(0, 1) / lr_multiplier and scaled at run time by
    lr_multiplier / sqrt(in); ``bias`` is scaled by lr_multiplier. forward takes (..., in) and
    returns (..., out). ``backend`` picks the bias_act implementation (see :func:`apply_bias_act`).
    """

    backend: str = "auto"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1, bias_init: float = 0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.activation = activation
        self.weight_gain = float(lr_multiplier / np.sqrt(in_features))
        self.bias_gain = lr_multiplier

    def effective_weight_bias(self):
        w = self.weight * self.weight_gain
        b = self.bias
        if b is not None and self.bias_gain != 1:
            b = b * self.bias_gain
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.effective_weight_bias()
        if x.ndim >= 3 and use_fast_path(self.backend, x, self.activation, bias=b) and x.dtype == w.dtype:
            # Token maps (the transformer's layers): one GEMM with the bias (gain folded in), then
            # the activation in place. Style and mapping vectors keep the official sequence.
            alpha, g = activation_gain(self.activation)
            if g != 1:
                w, b = w * g, (None if b is None else b * g)
            return activate_(F.linear(x, w, b), self.activation, alpha)
        x = x.matmul(w.t())
        if self.activation == "linear" and b is not None:
            # As the official layer: under autocast the matmul is fp16/bf16 and the fp32 bias
            # promotes the sum to fp32, so the layer's output dtype is the official one.
            # (Attention's q, k and v then differ in dtype; ops.window_attention casts them.)
            return x + b.reshape([-1 if i == x.ndim - 1 else 1 for i in range(x.ndim)])
        return apply_bias_act(x, b, act=self.activation, dim=x.ndim - 1, backend=self.backend)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution with optional FIR up/down sampling, then bias_act.

    ``weight`` (out, in, k, k) ~ N(0, 1) scaled by 1/sqrt(in k^2) at run time, ``bias`` (out,)
    zeros, buffer ``resample_filter`` (4, 4) present even without resampling.
    forward(x (B, in, H, W), gain=1) -> (B, out, H * up / down, W * up / down); the activation
    gain is the activation's default times ``gain``.
    """

    backend: str = "auto"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, resample_filter=(1, 3, 3, 1),
                 conv_clamp: Optional[float] = None, trainable: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.activation = activation
        self.up = up
        self.down = down
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = float(1 / np.sqrt(in_channels * (kernel_size ** 2)))
        self.act_gain = ACTIVATIONS[activation][2]
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias is not None:
                self.register_buffer("bias", bias)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        if use_fast_path(self.backend, x, self.activation, self.conv_clamp, gain, self.bias):
            alpha, g = activation_gain(self.activation, gain)
            w = (self.weight * (self.weight_gain * g)).to(x.dtype)
            y = conv2d_resample_fused(x, w, self.resample_filter, self.up, self.down, self.padding,
                                      None if self.bias is None else self.bias * g)
            if y is not None:
                return activate_(y, self.activation, alpha)
        # In x's dtype (as the official layers do): under autocast x arrives in fp16/bf16 from the
        # previous convolution while the parameter stays fp32.
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return apply_bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=act_clamp,
                              backend=self.backend)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
                f"activation={self.activation}, up={self.up}, down={self.down}")


class Conv2dLayerPartial(nn.Module):
    """MAT's partial convolution: a :class:`Conv2dLayer` ``conv`` whose activated output is
    rescaled by k^2 / (valid count) where the count is positive and zeroed elsewhere.

    forward(x (B, in, H, W), mask (B, 1, H, W) or None) -> (y, new_mask): y is
    (B, out, H', W'); new_mask (B, 1, H', W') = clamp(count, 0, 1) (None without a mask). The
    count is a k x k box sum of the mask with stride ``down`` and zero padding k // 2 (no blur),
    computed by :func:`mat_kernels.ops.partial_conv_mask_update` with this layer's ``backend``.
    The box filter is not a buffer (absent from the state dict, as in the released code).
    """

    backend: str = "auto"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, resample_filter=(1, 3, 3, 1),
                 conv_clamp: Optional[float] = None, trainable: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for a partial convolution, got {kernel_size}")
        self.conv = Conv2dLayer(in_channels, out_channels, kernel_size, bias, activation, up, down,
                                resample_filter, conv_clamp, trainable)
        self.kernel_size = kernel_size
        self.slide_winsize = kernel_size ** 2
        self.stride = down
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if mask is None:
            return self.conv(x), None
        if self.conv.up != 1:
            # The released rule would count at the input size and fail to broadcast; MAT never
            # passes a mask to an upsampling partial conv.
            raise ValueError("mask must be None for an upsampling partial conv (up > 1)")
        if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0] or mask.shape[2:] != x.shape[2:]:
            raise ValueError(f"mask must have shape (B, 1, H, W) = {(x.shape[0], 1, *x.shape[2:])}, "
                             f"got {tuple(mask.shape)}")
        # The released code casts the mask to x's dtype (its box filter is cast with .to(x)); for
        # fp16/bf16 the op counts in fp32 and rounds once, since fp16 cannot hold the 1e-8 guard.
        with torch.no_grad():
            new_mask, ratio = ops.partial_conv_mask_update(mask.to(x.dtype), kernel_size=self.kernel_size,
                                                           stride=self.stride, backend=self.backend)
        y = self.conv(x)
        return torch.mul(y, ratio), new_mask


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution, run as one grouped convolution over the batch.

    ``weight`` (1, out, in, k, k); ``affine`` = FC(style_dim -> in, bias_init=1); buffer
    ``resample_filter``. forward(x (B, in, H, W), style (B, style_dim)) -> (B, out, H', W').
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, up: int = 1, down: int = 1, resample_filter=(1, 3, 3, 1),
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.demodulate = demodulate
        self.weight = nn.Parameter(torch.randn([1, out_channels, in_channels, kernel_size, kernel_size]))
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.weight_gain = float(1 / np.sqrt(in_channels * (kernel_size ** 2)))
        self.padding = kernel_size // 2
        self.up = up
        self.down = down
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(style_dim, in_channels, bias_init=1)

    def forward(self, x: torch.Tensor, style: torch.Tensor, *, gain: float = 1.0,
                bias: Optional[torch.Tensor] = None, fused: bool = False) -> torch.Tensor:
        """``fused`` (the layers' CPU fast path, :mod:`mat_kernels.nn.fast_conv`): returns
        ``conv(x) * gain + bias`` on channels_last tensors; otherwise the official op sequence
        (``gain`` and ``bias`` must then be left at their defaults)."""
        batch, in_channels, height, width = x.shape
        if in_channels != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels, got {in_channels}")
        style = self.affine(style).view(batch, 1, in_channels, 1, 1)
        weight = self.weight * self.weight_gain * style
        if fused:
            return self._forward_fused(x, weight, gain, bias)
        if self.demodulate:
            decoefs = (weight.pow(2).sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
            weight = weight * decoefs.view(batch, self.out_channels, 1, 1, 1)
        weight = weight.view(batch * self.out_channels, in_channels, self.kernel_size, self.kernel_size)
        x = x.view(1, batch * in_channels, height, width)
        x = conv2d_resample(x, weight.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, groups=batch)
        return x.view(batch, self.out_channels, *x.shape[2:])

    def _forward_fused(self, x, weight, gain, bias):
        batch, in_channels, height, width = x.shape
        # The demodulation and the gain are one per-output-channel factor of the weight.
        scale = gain
        if self.demodulate:
            scale = (weight.pow(2).sum(dim=[2, 3, 4]) + 1e-8).rsqrt() * gain
            scale = scale.view(batch, self.out_channels, 1, 1, 1)
        weight = (weight * scale).view(batch * self.out_channels, in_channels, self.kernel_size,
                                       self.kernel_size).to(x.dtype)
        b = None if bias is None else bias.to(x.dtype).repeat(batch)
        xg = x if batch == 1 else x.reshape(1, batch * in_channels, height, width)
        y = conv2d_resample_fused(xg, weight, self.resample_filter, self.up, self.down, self.padding, b,
                                  groups=batch)
        if y is None:
            y = conv2d_resample(xg, weight, f=self.resample_filter, up=self.up, down=self.down,
                                padding=self.padding, groups=batch)
            if b is not None:
                y = y + b.view(1, -1, 1, 1)
        return y if batch == 1 else y.reshape(batch, self.out_channels, *y.shape[2:])


NOISE_MODES = ("random", "const", "none")


class StyleConv(nn.Module):
    """Modulated convolution, optional per-pixel noise, bias and activation.

    With ``use_noise``: buffer ``noise_const`` (resolution, resolution) and parameter
    ``noise_strength`` (scalar, 0 at init). forward(x (B, in, H, W), style (B, style_dim),
    noise_mode) -> (B, out, H * up, W * up). noise_mode "random" adds randn(B, 1, H, W) *
    strength (global RNG), "const" adds noise_const * strength (needs H = W = resolution),
    "none" adds nothing (the released code crashes there; StyleGAN2's meaning is kept).
    """

    backend: str = "auto"

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, resolution: int,
                 kernel_size: int = 3, up: int = 1, use_noise: bool = True, activation: str = "lrelu",
                 resample_filter=(1, 3, 3, 1), conv_clamp: Optional[float] = None, demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                                    style_dim=style_dim, demodulate=demodulate, up=up,
                                    resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.use_noise = use_noise
        self.resolution = resolution
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.activation = activation
        self.act_gain = ACTIVATIONS[activation][2]
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise_mode: str = "random", gain: float = 1
                ) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if use_fast_path(self.backend, x, self.activation, self.conv_clamp, gain, self.bias):
            return self._forward_fused(x, style, noise_mode, gain)
        x = self.conv(x, style)
        noise = self._noise(x, noise_mode)
        if noise is not None:
            x = x + noise
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return apply_bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=act_clamp,
                              backend=self.backend)

    def _forward_fused(self, x, style, noise_mode, gain):
        """act((conv(x) + noise + b) * g) as act(conv(x) * g + b * g + noise * g)."""
        alpha, g = activation_gain(self.activation, gain)
        x = self.conv(x, style, gain=g, bias=self.bias * g, fused=True)
        noise = self._noise(x, noise_mode)
        if noise is not None:
            x = x.add_(noise * g)
        return activate_(x, self.activation, alpha)

    def _noise(self, x, noise_mode):
        """The noise added to conv output ``x`` (None without noise), the same in both paths."""
        if not self.use_noise or noise_mode == "none":
            return None
        if noise_mode == "random":
            # drawn in fp32 whatever x's dtype (same noise in every precision), after x is computed,
            # through the seeded draw so that compiled and eager runs draw the same noise
            return normal_noise(x, (x.shape[0], 1, x.shape[2], x.shape[3])) * self.noise_strength
        if tuple(x.shape[-2:]) != tuple(self.noise_const.shape):
            raise ValueError(f"noise_mode='const' needs a {tuple(self.noise_const.shape)} feature map, "
                             f"got {tuple(x.shape[-2:])}; use noise_mode='random' or 'none'")
        return self.noise_const * self.noise_strength


class ToRGB(nn.Module):
    """1x1 modulated convolution (no demodulation) to image channels, bias, plus the upsampled skip.

    forward(x (B, in, H, W), style (B, style_dim), skip (B, out, H/2, W/2) or (B, out, H, W) or
    None) -> (B, out, H, W). Owns its own ``resample_filter`` besides ``conv``'s.
    """

    backend: str = "auto"

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, kernel_size: int = 1,
                 resample_filter=(1, 3, 3, 1), conv_clamp: Optional[float] = None, demodulate: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                                    style_dim=style_dim, demodulate=demodulate,
                                    resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        if use_fast_path(self.backend, x, clamp=self.conv_clamp, bias=self.bias):
            # The image path has 3 channels: back to NCHW, the layout of the reference's output.
            out = self.conv(x, style, bias=self.bias, fused=True).contiguous()
        else:
            x = self.conv(x, style)
            out = apply_bias_act(x, self.bias, clamp=self.conv_clamp, backend=self.backend)
        if skip is not None:
            if skip.shape != out.shape:
                skip = upsample2d(skip, self.resample_filter)
            out = out + skip
        return out


class MinibatchStdLayer(nn.Module):
    """Appends ``num_channels`` feature maps holding the std over groups of ``group_size`` samples.

    forward(x (N, C, H, W)) -> (N, C + num_channels, H, W). The group size is min(group_size, N)
    and must divide N; sample n belongs to group column n mod (N / G).
    """

    def __init__(self, group_size: Optional[int], num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        G = min(self.group_size, N) if self.group_size is not None else N
        if N % G:
            raise ValueError(f"the batch size ({N}) must be divisible by the minibatch-std group size ({G})")
        Fc = self.num_channels
        c = C // Fc
        y = x.reshape(G, -1, Fc, c, H, W)  # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])  # [n, F]
        y = y.reshape(-1, Fc, 1, 1)
        y = y.repeat(G, 1, H, W)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
