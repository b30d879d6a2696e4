"""MAT's generator: a transformer first stage and a StyleGAN2-like conv U-Net second stage.

Module and parameter names are the released ones, so official state dicts load with
``strict=True`` (checked against ``tests/fixtures/mat{256,512}_state_dict_manifest.json``).
Images are (B, C, H, W) in [-1, 1], masks (B, 1, H, W) with 1 = known, 0 = hole.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contract import FLOAT_DTYPES
from ..nn.blocks import (BasicLayer, ConvBlockDown, DecBlock, DecBlockFirstV2, DecStyleBlock, EncFromRGB,
                         PatchMerging, PatchUpsampling, ToStyle, feature2token, token2feature)
from ..nn.draws import bernoulli_map
from ..nn.layers import Conv2dLayer, Conv2dLayerPartial, FullyConnectedLayer
from .mapping import MappingNet

# Channel counts per feature size; hard-coded in MAT (channel_base/decay/max are ignored).
_NF = {512: 64, 256: 128, 128: 256, 64: 512, 32: 512, 16: 512, 8: 512, 4: 512}


def nf(stage: int, channel_base=32768, channel_decay=1.0, channel_max=512) -> int:
    """Channels at feature size 2**stage (64 at 512 up to 512 at <= 64)."""
    if 2 ** stage not in _NF:
        raise ValueError(f"no channel count for feature size {2 ** stage}; MAT supports sizes 4..512 "
                         f"(img_resolution 128..512)")
    return _NF[2 ** stage]


def _check_resolution(img_resolution: int) -> int:
    log2 = int(np.log2(img_resolution)) if img_resolution > 0 else 0
    if img_resolution != 2 ** log2 or not 128 <= img_resolution <= 512:
        raise ValueError(f"img_resolution must be a power of two in [128, 512] (256 and 512 are the released "
                         f"sizes), got {img_resolution}")
    return log2


# How the first stage's always-on Bernoulli map is laid out over the RNG's draws. "official":
# as the released code (fenglinglwb/MAT). "iopaint": as IOPaint's copy of the generator
# (iopaint/model/mat.py), whose Conv2dLayerPartial passes its `trainable` argument positionally
# into Conv2dLayer's `channels_last` slot: its partial convolutions hold channels-last weights,
# so the middle stage's tokens are contiguous (B, L, C) there and the map is filled in that
# order. Both are fair Bernoulli(0.5) maps; a seed gives a different one in each.
MAP_ORDERS = ("official", "iopaint")


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a network computes in: its parameters' (float32 unless converted with
    ``.to(dtype)``/``.half()``). Under autocast the parameters stay float32 and autocast picks
    the dtype of each op instead."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _check_inputs(images_in, masks_in, img_channels, img_resolution=None):
    """Shapes and dtypes of a network's image and mask inputs, and the mask's values.

    images_in: (B, C, H, W), any floating dtype. masks_in: (B, 1, H, W), bool or floating with
    values in [0, 1] (1 = known, 0 = hole; values in between blend, as grey mask pixels do in
    the released code). Integer masks are refused: a 0/255 image mask would be taken as 255.
    """
    if not isinstance(images_in, torch.Tensor) or images_in.ndim != 4 or images_in.shape[1] != img_channels:
        raise ValueError(f"images_in must be (B, {img_channels}, H, W), got "
                         f"{tuple(images_in.shape) if isinstance(images_in, torch.Tensor) else type(images_in)}")
    B, _, H, W = images_in.shape
    if not isinstance(masks_in, torch.Tensor) or tuple(masks_in.shape) != (B, 1, H, W):
        raise ValueError(f"masks_in must be (B, 1, H, W) = {(B, 1, H, W)} (1 = known, 0 = hole), got "
                         f"{tuple(masks_in.shape) if isinstance(masks_in, torch.Tensor) else type(masks_in)}")
    if img_resolution is not None and (H % img_resolution or W % img_resolution):
        raise ValueError(f"image height and width must be multiples of img_resolution={img_resolution}, "
                         f"got {H}x{W}")
    if images_in.dtype not in FLOAT_DTYPES:
        raise TypeError(f"images_in must be a floating tensor (values in [-1, 1]), got {images_in.dtype}")
    if masks_in.dtype != torch.bool and masks_in.dtype not in FLOAT_DTYPES:
        raise TypeError(f"masks_in must be bool or floating with values in [0, 1] (1 = known, 0 = hole), "
                        f"got {masks_in.dtype}")
    _check_mask_values(masks_in)


def _check_mask_values(masks_in: torch.Tensor) -> None:
    # One reduction and one host sync per call; skipped where values cannot be read (meta
    # tensors, torch.compile tracing) and for bool masks, which are valid by construction.
    if (masks_in.dtype == torch.bool or masks_in.numel() == 0 or masks_in.device.type == "meta"
            or torch.compiler.is_compiling()):
        return
    lo, hi = torch.aminmax(masks_in.detach())
    if bool((lo >= 0) & (hi <= 1)):
        return
    lo, hi = float(lo), float(hi)
    hint = " (a 0/255 mask image must be divided by 255)" if hi > 1 else ""
    raise ValueError(f"masks_in must hold values in [0, 1] (1 = known, 0 = hole), got values in "
                     f"[{lo:g}, {hi:g}]{hint}")


def _to_parameter_dtype(module: nn.Module, *tensors: torch.Tensor):
    """``tensors`` in the dtype ``module`` computes in. Inputs of another float dtype (or bool
    masks) are cast, as ``G.to(torch.bfloat16)`` users expect their fp32 inputs to work; under
    autocast the parameters stay float32 and autocast then picks each op's dtype."""
    dtype = parameter_dtype(module)
    return tuple(t.to(dtype) for t in tensors)


def _outside_autocast_to_parameter_dtype(module: nn.Module, *tensors: torch.Tensor):
    """For the sub-networks that take features: outside autocast, inputs of another float
    dtype are cast to the parameters' (fp16 features into an fp32 Decoder failed in a matmul);
    under autocast they are left alone, autocast picks each op's dtype."""
    dev = tensors[0].device.type if tensors else "cpu"
    if torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev):
        return tensors
    return _to_parameter_dtype(module, *tensors)


class FirstStage(nn.Module):
    """Coarse stage: partial-conv encoder to 64x64, five Swin stages (64-32-16-32-64 token grids),
    style-modulated conv decoder back to full size; known pixels copied from the input.

    forward(images_in (B, C, H, W), masks_in (B, 1, H, W), ws (B, num_ws, w_dim), noise_mode)
    -> (B, C, H, W). Only ws[:, -1] is used.

    ``map_order`` (one of :data:`MAP_ORDERS`, default "official") says in which memory order the
    Bernoulli map of the middle stage is filled from the RNG; set it with
    :meth:`Generator.set_map_order`.
    """

    map_order: str = "official"

    def __init__(self, img_channels, img_resolution=256, dim=180, w_dim=512, use_noise=False, demodulate=True,
                 activation="lrelu"):
        super().__init__()
        self.img_channels = img_channels
        res = 64
        self.conv_first = Conv2dLayerPartial(in_channels=img_channels + 1, out_channels=dim, kernel_size=3,
                                             activation=activation)
        self.enc_conv = nn.ModuleList()
        down_time = int(np.log2(img_resolution // res))
        for _ in range(down_time):
            self.enc_conv.append(Conv2dLayerPartial(in_channels=dim, out_channels=dim, kernel_size=3, down=2,
                                                    activation=activation))
        depths = [2, 3, 4, 3, 2]
        ratios = [1, 1 / 2, 1 / 2, 2, 2]
        num_heads = 6
        window_sizes = [8, 16, 16, 16, 8]
        self.tran = nn.ModuleList()
        for i, depth in enumerate(depths):
            res = int(res * ratios[i])
            if ratios[i] < 1:
                merge = PatchMerging(dim, dim, down=int(1 / ratios[i]))
            elif ratios[i] > 1:
                merge = PatchUpsampling(dim, dim, up=int(ratios[i]))
            else:
                merge = None
            self.tran.append(BasicLayer(dim=dim, input_resolution=[res, res], depth=depth, num_heads=num_heads,
                                        window_size=window_sizes[i], downsample=merge))
        down_conv = [Conv2dLayer(in_channels=dim, out_channels=dim, kernel_size=3, down=2, activation=activation)
                     for _ in range(int(np.log2(16)))]
        down_conv.append(nn.AdaptiveAvgPool2d((1, 1)))
        self.down_conv = nn.Sequential(*down_conv)
        self.to_style = FullyConnectedLayer(in_features=dim, out_features=dim * 2, activation=activation)
        self.ws_style = FullyConnectedLayer(in_features=w_dim, out_features=dim, activation=activation)
        self.to_square = FullyConnectedLayer(in_features=dim, out_features=16 * 16, activation=activation)
        style_dim = dim * 3
        self.dec_conv = nn.ModuleList()
        for _ in range(down_time):
            res = res * 2
            self.dec_conv.append(DecStyleBlock(res, dim, dim, activation, style_dim, use_noise, demodulate,
                                               img_channels))

    def forward(self, images_in, masks_in, ws, noise_mode="random"):
        """Checks the inputs and casts them (ws too) to the parameters' dtype, then runs."""
        _check_inputs(images_in, masks_in, self.img_channels)
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or ws.shape[0] != images_in.shape[0]:
            raise ValueError(f"ws must be (B, num_ws, w_dim) with B={images_in.shape[0]}, got "
                             f"{tuple(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__}")
        images_in, masks_in, ws = _to_parameter_dtype(self, images_in, masks_in, ws)
        return self.run(images_in, masks_in, ws, noise_mode)

    def run(self, images_in, masks_in, ws, noise_mode="random"):
        """forward without the checks: inputs already checked and in the parameters' dtype."""
        x = torch.cat([masks_in - 0.5, images_in * masks_in], dim=1)
        skips = []
        x, mask = self.conv_first(x, masks_in)
        skips.append(x)
        for i, block in enumerate(self.enc_conv):
            x, mask = block(x, mask)
            if i != len(self.enc_conv) - 1:
                skips.append(x)

        x_size = x.size()[-2:]
        x = feature2token(x)
        mask = feature2token(mask)
        mid = len(self.tran) // 2
        for i, block in enumerate(self.tran):
            if i < mid:  # 64 -> 32 -> 16: the mask is updated on the way
                x, x_size, mask = block(x, x_size, mask)
                skips.append(x)
            elif i > mid:  # 16 -> 32 -> 64 with token skips from the way down
                x, x_size, _ = block(x, x_size, None)
                x = x + skips[mid - i]
            else:
                x, x_size, _ = block(x, x_size, None)
                # The released code draws a Bernoulli(0.5) {0, 1} map with F.dropout(training=True)
                # in every mode, eval included, into ones_like(x); the fill follows that tensor's
                # memory order, which is (B, C, L) at batch 1 and contiguous (B, L, C) at batch >= 2
                # whatever the resolution, mode or input layout: the rule this draw keeps.
                B, L, C = x.shape
                # IOPaint's copy (map_order "iopaint") fills (B, L, C) at every batch size (MAP_ORDERS).
                filled = (0, 2, 1) if B == 1 and self.map_order == "official" else (0, 1, 2)
                mul_map = bernoulli_map(x, (B, L, C), order=filled)
                w_style = self.ws_style(ws[:, -1])
                add_n = self.to_square(w_style).unsqueeze(1)
                add_n = F.interpolate(add_n, size=x.size(1), mode="linear", align_corners=False)
                add_n = add_n.squeeze(1).unsqueeze(-1)
                x = x * mul_map + add_n * (1 - mul_map)
                gs = self.to_style(self.down_conv(token2feature(x, x_size)).flatten(start_dim=1))
                style = torch.cat([gs, w_style], dim=1)

        x = token2feature(x, x_size).contiguous()
        img = None
        for i, block in enumerate(self.dec_conv):
            x, img = block(x, img, style, skips[len(self.dec_conv) - i - 1], noise_mode=noise_mode)
        # Known pixels are copied from the input.
        return img * (1 - masks_in) + images_in * masks_in


class Encoder(nn.Module):
    """Second-stage conv encoder: ``EncConv_Block_{r}x{r}`` from full size down to 16x16.

    forward(x (B, 2C+1, H, W)) -> {log2 size: features}, e.g. {8: (B,128,256²), …, 4: (B,512,16²)} at 256.
    """

    def __init__(self, res_log2, img_channels, activation, patch_size=5, channels=16, drop_path_rate=0.1):
        super().__init__()
        self.resolution = []
        for i in range(res_log2, 3, -1):
            res = 2 ** i
            self.resolution.append(res)
            if i == res_log2:
                block = EncFromRGB(img_channels * 2 + 1, nf(i), activation)
            else:
                block = ConvBlockDown(nf(i + 1), nf(i), activation)
            setattr(self, f"EncConv_Block_{res}x{res}", block)

    def forward(self, x) -> Dict[int, torch.Tensor]:
        (x,) = _outside_autocast_to_parameter_dtype(self, x)
        out = {}
        for res in self.resolution:
            x = getattr(self, f"EncConv_Block_{res}x{res}")(x)
            out[int(math.log2(res))] = x
        return out


class Decoder(nn.Module):
    """Second-stage StyleGAN2 decoder: ``Dec_16x16`` then ``Dec_{2^r}x{2^r}`` up to full size.

    forward(x (B, 512, 16, 16), ws (B, num_ws, w_dim), gs (B, 1024), E_features, noise_mode)
    -> image (B, C, H, W).
    """

    def __init__(self, res_log2, activation, style_dim, use_noise, demodulate, img_channels):
        super().__init__()
        self.Dec_16x16 = DecBlockFirstV2(4, nf(4), nf(4), activation, style_dim, use_noise, demodulate,
                                         img_channels)
        for res in range(5, res_log2 + 1):
            setattr(self, f"Dec_{2 ** res}x{2 ** res}",
                    DecBlock(res, nf(res - 1), nf(res), activation, style_dim, use_noise, demodulate, img_channels))
        self.res_log2 = res_log2

    def forward(self, x, ws, gs, E_features, noise_mode="random"):
        x, ws, gs, *feats = _outside_autocast_to_parameter_dtype(self, x, ws, gs, *E_features.values())
        E_features = dict(zip(E_features.keys(), feats))
        x, img = self.Dec_16x16(x, ws, gs, E_features, noise_mode=noise_mode)
        for res in range(5, self.res_log2 + 1):
            x, img = getattr(self, f"Dec_{2 ** res}x{2 ** res}")(x, img, ws, gs, E_features, noise_mode=noise_mode)
        return img


class SynthesisNet(nn.Module):
    """Both stages. forward(images_in, masks_in, ws (B, num_ws, w_dim), noise_mode, return_stg1)
    -> final image (and the stage-1 image when return_stg1), each (B, C, H, W)."""

    def __init__(self, w_dim, img_resolution, img_channels=3, channel_base=32768, channel_decay=1.0,
                 channel_max=512, activation="lrelu", drop_rate=0.5, use_noise=True, demodulate=True):
        super().__init__()
        resolution_log2 = _check_resolution(img_resolution)
        self.num_layers = resolution_log2 * 2 - 3 * 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.resolution_log2 = resolution_log2
        self.first_stage = FirstStage(img_channels, img_resolution=img_resolution, w_dim=w_dim, use_noise=False,
                                      demodulate=demodulate)
        self.enc = Encoder(resolution_log2, img_channels, activation, patch_size=5, channels=16)
        self.to_square = FullyConnectedLayer(in_features=w_dim, out_features=16 * 16, activation=activation)
        self.to_style = ToStyle(in_channels=nf(4), out_channels=nf(2) * 2, activation=activation,
                                drop_rate=drop_rate)
        style_dim = w_dim + nf(2) * 2
        self.dec = Decoder(resolution_log2, activation, style_dim, use_noise, demodulate, img_channels)

    def forward(self, images_in, masks_in, ws, noise_mode="random", return_stg1=False):
        _check_inputs(images_in, masks_in, self.img_channels, self.img_resolution)
        if ws.ndim != 3 or ws.shape[0] != images_in.shape[0] or ws.shape[1] != self.num_layers:
            raise ValueError(f"ws must be (B, num_ws={self.num_layers}, w_dim), got {tuple(ws.shape)}")
        # Inputs of any float dtype (bool masks too) follow the weights' dtype (fp32, or half
        # weights from G.to(torch.bfloat16) / G.half()).
        images_in, masks_in, ws = _to_parameter_dtype(self, images_in, masks_in, ws)
        out_stg1 = self.first_stage.run(images_in, masks_in, ws, noise_mode=noise_mode)

        x = images_in * masks_in + out_stg1 * (1 - masks_in)
        x = torch.cat([masks_in - 0.5, x, images_in * masks_in], dim=1)
        E_features = self.enc(x)

        fea_16 = E_features[4]
        # Second always-on Bernoulli(0.5) map (see FirstStage.run), in contiguous (B, C, H, W)
        # memory order at every batch size, as the released code draws it.
        mul_map = bernoulli_map(fea_16, fea_16.shape)
        add_n = self.to_square(ws[:, 0]).view(-1, 16, 16).unsqueeze(1)
        add_n = F.interpolate(add_n, size=fea_16.size()[-2:], mode="bilinear", align_corners=False)
        fea_16 = fea_16 * mul_map + add_n * (1 - mul_map)
        E_features[4] = fea_16

        gs = self.to_style(fea_16)
        img = self.dec(fea_16, ws, gs, E_features, noise_mode=noise_mode)
        img = img * (1 - masks_in) + images_in * masks_in
        if not return_stg1:
            return img
        return img, out_stg1


class Generator(nn.Module):
    """MAT's generator: ``synthesis`` (both stages) then ``mapping`` (registration order of the
    released code).

    forward(images_in (B, C, H, W) in [-1, 1], masks_in (B, 1, H, W) 1 = known, z (B, z_dim),
    c (B, c_dim) or None, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False,
    noise_mode='random' | 'const' | 'none', return_stg1=False) -> image, or (image, stage-1 image).
    Known pixels of the output equal the input exactly. Each call draws two Bernoulli maps from
    the global RNG (plus the noise in 'random' mode): seed with torch.manual_seed for
    reproducible outputs.
    """

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, synthesis_kwargs={}, mapping_kwargs={}):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNet(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                      **synthesis_kwargs)
        self.mapping = MappingNet(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.synthesis.num_layers,
                                  **mapping_kwargs)

    def forward(self, images_in, masks_in, z, c=None, truncation_psi=1, truncation_cutoff=None,
                skip_w_avg_update=False, noise_mode="random", return_stg1=False):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          skip_w_avg_update=skip_w_avg_update)
        return self.synthesis(images_in, masks_in, ws, noise_mode=noise_mode, return_stg1=return_stg1)

    def set_map_order(self, order: str) -> "Generator":
        """Lay the first stage's Bernoulli map out as the released code does ("official", the
        default) or as IOPaint's copy of MAT does ("iopaint"): with the same seed, weights and
        inputs each then gives that code's image. See :data:`MAP_ORDERS`."""
        if order not in MAP_ORDERS:
            raise ValueError(f"order must be one of {MAP_ORDERS}, got {order!r}")
        self.synthesis.first_stage.map_order = order
        return self

    def set_backend(self, name: str) -> "Generator":
        """Select the kernels of every attention block, partial conv and bias_act layer."""
        from . import set_backend
        return set_backend(self, name)
