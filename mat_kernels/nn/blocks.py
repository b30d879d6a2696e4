"""MAT's building blocks above the layer level, with the official names and signatures.

Tokens are (B, H*W, C) in row-major pixel order; feature maps are NCHW. Masks are 1 = known,
0 = hole, (B, H*W, 1) as tokens and (B, 1, H, W) as maps.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .attention import SwinTransformerBlock
from .layers import (Conv2dLayer, Conv2dLayerPartial, FullyConnectedLayer, StyleConv, ToRGB,
                     get_style_code)


def token2feature(x: torch.Tensor, x_size: Sequence[int]) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W). A strided (channels-last) view, as in the released code."""
    B, N, C = x.shape
    h, w = x_size
    if N != h * w:
        raise ValueError(f"x must have H*W = {h * w} tokens for x_size={tuple(x_size)}, got {N}")
    return x.permute(0, 2, 1).reshape(B, C, h, w)


def feature2token(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C): a view of NCHW and of channels_last maps (the latter is
    then a contiguous token tensor)."""
    B, C, H, W = x.shape
    return x.reshape(B, C, H * W).transpose(1, 2)


class PatchMerging(nn.Module):
    """Strided partial conv between transformer stages: tokens at x_size -> tokens at x_size / down.

    forward(x (B, H*W, C_in), x_size (H, W), mask (B, H*W, 1) or None)
    -> (x (B, H*W/down^2, C_out), new x_size, new mask or None).
    """

    def __init__(self, in_channels: int, out_channels: int, down: int = 2):
        super().__init__()
        self.conv = Conv2dLayerPartial(in_channels=in_channels, out_channels=out_channels, kernel_size=3,
                                       activation="lrelu", down=down)
        self.down = down

    def forward(self, x, x_size, mask=None):
        x = token2feature(x, x_size)
        if mask is not None:
            mask = token2feature(mask, x_size)
        x, mask = self.conv(x, mask)
        if self.down != 1:
            ratio = 1 / self.down
            x_size = (int(x_size[0] * ratio), int(x_size[1] * ratio))
        x = feature2token(x)
        if mask is not None:
            mask = feature2token(mask)
        return x, x_size, mask


class PatchUpsampling(nn.Module):
    """Upsampling partial conv (k3, lrelu, up): tokens at x_size -> tokens at x_size * up.

    MAT never passes a mask here; with one, the mask keeps the input size (stride 1), as in the
    released code, and the returned mask would not match the new grid.
    """

    def __init__(self, in_channels: int, out_channels: int, up: int = 2):
        super().__init__()
        self.conv = Conv2dLayerPartial(in_channels=in_channels, out_channels=out_channels, kernel_size=3,
                                       activation="lrelu", up=up)
        self.up = up

    def forward(self, x, x_size, mask=None):
        x = token2feature(x, x_size)
        if mask is not None:
            raise ValueError("PatchUpsampling does not take a mask (MAT only upsamples mask-free tokens)")
        x, _ = self.conv(x, None)
        if self.up != 1:
            x_size = (int(x_size[0] * self.up), int(x_size[1] * self.up))
        return feature2token(x), x_size, None


class BasicLayer(nn.Module):
    """One transformer stage: optional down/upsampling, ``depth`` Swin blocks (shift 0 for even
    blocks, window_size // 2 for odd ones), a trailing partial conv, and a residual around
    blocks + conv.

    forward(x (B, H*W, C), x_size (H, W), mask (B, H*W, 1) or None) -> (x, x_size, mask).
    """

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, down_ratio=1, mlp_ratio=2.0,
                 qkv_bias=True, qk_scale=None, drop=0.0, attn_drop=0.0, drop_path=0.0, norm_layer=None,
                 downsample=None, use_checkpoint=False):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        # Registered first so its keys precede the blocks' in the state dict.
        self.downsample = downsample
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim=dim, input_resolution=input_resolution, num_heads=num_heads,
                                 down_ratio=down_ratio, window_size=window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio,
                                 qkv_bias=qkv_bias, qk_scale=qk_scale)
            for i in range(depth)])
        self.conv = Conv2dLayerPartial(in_channels=dim, out_channels=dim, kernel_size=3, activation="lrelu")

    def forward(self, x, x_size, mask=None):
        if self.downsample is not None:
            x, x_size, mask = self.downsample(x, x_size, mask)
        identity = x
        for blk in self.blocks:
            x, mask = blk(x, x_size, mask)
        if mask is not None:
            mask = token2feature(mask, x_size)
        x, mask = self.conv(token2feature(x, x_size), mask)
        x = feature2token(x) + identity
        if mask is not None:
            mask = feature2token(mask)
        return x, x_size, mask


class EncFromRGB(nn.Module):
    """First encoder block of the second stage: Conv k1 then Conv k3, both lrelu."""

    def __init__(self, in_channels, out_channels, activation):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels=in_channels, out_channels=out_channels, kernel_size=1,
                                 activation=activation)
        self.conv1 = Conv2dLayer(in_channels=out_channels, out_channels=out_channels, kernel_size=3,
                                 activation=activation)

    def forward(self, x):
        return self.conv1(self.conv0(x))


class ConvBlockDown(nn.Module):
    """Encoder block: Conv k3 down 2 then Conv k3 (lrelu): (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_channels, out_channels, activation):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels=in_channels, out_channels=out_channels, kernel_size=3,
                                 activation=activation, down=2)
        self.conv1 = Conv2dLayer(in_channels=out_channels, out_channels=out_channels, kernel_size=3,
                                 activation=activation)

    def forward(self, x):
        return self.conv1(self.conv0(x))


class ToStyle(nn.Module):
    """Global style of the second stage: 3 strided convs, average pool, FC.

    forward(x (B, in, H, W)) -> (B, out).
    """

    def __init__(self, in_channels, out_channels, activation, drop_rate=0.5):
        super().__init__()
        self.conv = nn.Sequential(*[
            Conv2dLayer(in_channels=in_channels, out_channels=in_channels, kernel_size=3, activation=activation,
                        down=2)
            for _ in range(3)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = FullyConnectedLayer(in_features=in_channels, out_features=out_channels, activation=activation)

    def forward(self, x):
        x = self.pool(self.conv(x))
        return self.fc(x.flatten(start_dim=1))


class DecBlockFirstV2(nn.Module):
    """First decoder block (16x16): plain conv + encoder skip, StyleConv (ws[:, 0]), ToRGB (ws[:, 1])."""

    def __init__(self, res, in_channels, out_channels, activation, style_dim, use_noise, demodulate, img_channels):
        super().__init__()
        self.res = res
        self.conv0 = Conv2dLayer(in_channels=in_channels, out_channels=in_channels, kernel_size=3,
                                 activation=activation)
        self.conv1 = StyleConv(in_channels=in_channels, out_channels=out_channels, style_dim=style_dim,
                               resolution=2 ** res, kernel_size=3, use_noise=use_noise, activation=activation,
                               demodulate=demodulate)
        self.toRGB = ToRGB(in_channels=out_channels, out_channels=img_channels, style_dim=style_dim,
                           kernel_size=1, demodulate=False)

    def forward(self, x, ws, gs, E_features, noise_mode="random"):
        x = self.conv0(x)
        x = x + E_features[self.res]
        x = self.conv1(x, get_style_code(ws[:, 0], gs), noise_mode=noise_mode)
        img = self.toRGB(x, get_style_code(ws[:, 1], gs), skip=None)
        return x, img


class DecBlock(nn.Module):
    """Decoder block at 2^res: StyleConv up (ws[2res-9]) + encoder skip, StyleConv (ws[2res-8]),
    ToRGB (ws[2res-7]) added to the upsampled image."""

    def __init__(self, res, in_channels, out_channels, activation, style_dim, use_noise, demodulate, img_channels):
        super().__init__()
        self.res = res
        self.conv0 = StyleConv(in_channels=in_channels, out_channels=out_channels, style_dim=style_dim,
                               resolution=2 ** res, kernel_size=3, up=2, use_noise=use_noise,
                               activation=activation, demodulate=demodulate)
        self.conv1 = StyleConv(in_channels=out_channels, out_channels=out_channels, style_dim=style_dim,
                               resolution=2 ** res, kernel_size=3, use_noise=use_noise, activation=activation,
                               demodulate=demodulate)
        self.toRGB = ToRGB(in_channels=out_channels, out_channels=img_channels, style_dim=style_dim,
                           kernel_size=1, demodulate=False)

    def forward(self, x, img, ws, gs, E_features, noise_mode="random"):
        x = self.conv0(x, get_style_code(ws[:, self.res * 2 - 9], gs), noise_mode=noise_mode)
        x = x + E_features[self.res]
        x = self.conv1(x, get_style_code(ws[:, self.res * 2 - 8], gs), noise_mode=noise_mode)
        img = self.toRGB(x, get_style_code(ws[:, self.res * 2 - 7], gs), skip=img)
        return x, img


class DecStyleBlock(DecBlock):
    """First-stage decoder block: StyleConv up + skip, StyleConv, ToRGB, one style for all three.

    ``res`` is stored as given; StyleConv gets 2**res as its resolution (MAT passes pixel sizes
    here, harmless because the first stage has no noise buffers). Same submodules as
    :class:`DecBlock`; only the use of the style differs.
    """

    def forward(self, x, img, style, skip, noise_mode="random"):
        x = self.conv0(x, style, noise_mode=noise_mode)
        x = x + skip
        x = self.conv1(x, style, noise_mode=noise_mode)
        img = self.toRGB(x, style, skip=img)
        return x, img


class DisFromRGB(nn.Module):
    """Discriminator input layer: Conv k1 with ``activation``."""

    def __init__(self, in_channels, out_channels, activation):
        super().__init__()
        self.conv = Conv2dLayer(in_channels=in_channels, out_channels=out_channels, kernel_size=1,
                                activation=activation)

    def forward(self, x):
        return self.conv(x)


class DisBlock(nn.Module):
    """Residual discriminator block: skip (k1, down 2, no bias, gain sqrt .5) + conv1(conv0(x))
    (conv1: k3, down 2, gain sqrt .5). (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_channels, out_channels, activation):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels=in_channels, out_channels=in_channels, kernel_size=3,
                                 activation=activation)
        self.conv1 = Conv2dLayer(in_channels=in_channels, out_channels=out_channels, kernel_size=3, down=2,
                                 activation=activation)
        self.skip = Conv2dLayer(in_channels=in_channels, out_channels=out_channels, kernel_size=1, down=2,
                                bias=False)

    def forward(self, x):
        skip = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return skip + x
