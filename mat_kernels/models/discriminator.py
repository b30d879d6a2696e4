"""MAT's two-branch discriminator (full image and stage-1 image), official names."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..nn.blocks import DisBlock, DisFromRGB
from ..nn.layers import Conv2dLayer, FullyConnectedLayer, MinibatchStdLayer
from ..contract import FLOAT_DTYPES
from .generator import _check_inputs, _to_parameter_dtype, nf
from .mapping import MappingNet


class Discriminator(nn.Module):
    """``Dis`` (+ ``fc0``, ``fc1``) scores the final image, ``Dis_stg1`` (+ ``fc0_stg1``,
    ``fc1_stg1``, all channel counts halved) the stage-1 image; both see the mask as a channel.

    forward(images_in (B, C, H, W), masks_in (B, 1, H, W), images_stg1 (B, C, H, W), c (B, c_dim)
    or None) -> (logit (B, 1), logit_stg1 (B, 1)). With mbstd enabled, B must be divisible by
    min(mbstd_group_size, B).
    """

    def __init__(self, c_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, channel_decay=1,
                 cmap_dim=None, activation="lrelu", mbstd_group_size=4, mbstd_num_channels=1):
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        resolution_log2 = int(np.log2(img_resolution)) if img_resolution > 0 else 0
        if img_resolution != 2 ** resolution_log2 or not 8 <= img_resolution <= 512:
            raise ValueError(f"img_resolution must be a power of two in [8, 512], got {img_resolution}")
        self.resolution_log2 = resolution_log2
        if cmap_dim is None:
            cmap_dim = nf(2)
        if c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim
        if c_dim > 0:
            self.mapping = MappingNet(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None)

        self.Dis = self._branch(img_channels, resolution_log2, 1, activation, mbstd_group_size, mbstd_num_channels)
        self.fc0 = FullyConnectedLayer(nf(2) * 4 ** 2, nf(2), activation=activation)
        self.fc1 = FullyConnectedLayer(nf(2), 1 if cmap_dim == 0 else cmap_dim)
        self.Dis_stg1 = self._branch(img_channels, resolution_log2, 2, activation, mbstd_group_size,
                                     mbstd_num_channels)
        self.fc0_stg1 = FullyConnectedLayer(nf(2) // 2 * 4 ** 2, nf(2) // 2, activation=activation)
        self.fc1_stg1 = FullyConnectedLayer(nf(2) // 2, 1 if cmap_dim == 0 else cmap_dim)

    @staticmethod
    def _branch(img_channels, resolution_log2, div, activation, mbstd_group_size, mbstd_num_channels):
        layers = [DisFromRGB(img_channels + 1, nf(resolution_log2) // div, activation)]
        for res in range(resolution_log2, 2, -1):
            layers.append(DisBlock(nf(res) // div, nf(res - 1) // div, activation))
        if mbstd_num_channels > 0:
            layers.append(MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels))
        layers.append(Conv2dLayer(nf(2) // div + mbstd_num_channels, nf(2) // div, kernel_size=3,
                                  activation=activation))
        return nn.Sequential(*layers)

    def forward(self, images_in, masks_in, images_stg1, c=None):
        _check_inputs(images_in, masks_in, self.img_channels)
        if not isinstance(images_stg1, torch.Tensor) or images_stg1.shape != images_in.shape:
            raise ValueError(f"images_stg1 must have the shape of images_in {tuple(images_in.shape)}, got "
                             f"{tuple(images_stg1.shape) if isinstance(images_stg1, torch.Tensor) else images_stg1}")
        if images_in.shape[-2:] != (self.img_resolution, self.img_resolution):
            raise ValueError(f"images must be {self.img_resolution}x{self.img_resolution}, got "
                             f"{tuple(images_in.shape[-2:])}")
        if images_stg1.dtype not in FLOAT_DTYPES:
            raise TypeError(f"images_stg1 must be a floating tensor (values in [-1, 1]), got {images_stg1.dtype}")
        # inputs follow the weights' dtype (fp32, or half weights from D.half())
        images_in, masks_in, images_stg1 = _to_parameter_dtype(self, images_in, masks_in, images_stg1)
        x = self.Dis(torch.cat([masks_in - 0.5, images_in], dim=1))
        x = self.fc1(self.fc0(x.flatten(start_dim=1)))
        x_stg1 = self.Dis_stg1(torch.cat([masks_in - 0.5, images_stg1], dim=1))
        x_stg1 = self.fc1_stg1(self.fc0_stg1(x_stg1.flatten(start_dim=1)))
        if self.c_dim > 0:
            cmap = self.mapping(None, c)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
            x_stg1 = (x_stg1 * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x, x_stg1

    def set_backend(self, name: str) -> "Discriminator":
        """Select the bias_act kernels of every layer (the discriminator has no attention)."""
        from . import set_backend
        return set_backend(self, name)
