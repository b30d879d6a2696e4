"""MAT's mapping network (StyleGAN2's), z (B, z_dim) -> ws (B, num_ws, w_dim)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..nn.layers import FullyConnectedLayer, normalize_2nd_moment


class MappingNet(nn.Module):
    """``fc0 … fc{num_layers-1}`` (lrelu, lr_multiplier 0.01), optional label ``embed``, buffer
    ``w_avg`` (the tracked mean of W, used for truncation).

    forward(z (B, z_dim), c (B, c_dim) or None, truncation_psi=1, truncation_cutoff=None,
    skip_w_avg_update=False) -> (B, num_ws, w_dim), or (B, w_dim) when num_ws is None. In
    training mode (and not skip_w_avg_update) w_avg moves towards the batch mean with
    w_avg_beta. Both updates use ``torch.lerp`` with the released argument order: lerp rounds
    differently from the expanded formula.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: Optional[int], num_layers: int = 8,
                 embed_features: Optional[int] = None, layer_features: Optional[int] = None,
                 activation: str = "lrelu", lr_multiplier: float = 0.01, w_avg_beta: Optional[float] = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                                          lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        x = None
        # float32 as officially; the weights' dtype when they were converted (MappingNet.half()).
        dtype = self.fc0.weight.dtype
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must have shape (B, {self.z_dim}), got "
                                 f"{None if z is None else tuple(z.shape)}")
            x = normalize_2nd_moment(z.to(dtype))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"c must have shape (B, {self.c_dim}), got {None if c is None else tuple(c.shape)}")
            y = normalize_2nd_moment(self.embed(c.to(dtype)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).to(self.w_avg.dtype).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("truncation_psi != 1 needs the tracked w_avg (w_avg_beta is None)")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)  # x is fp16/bf16 under autocast
            else:
                x[:, :truncation_cutoff] = self.w_avg.to(x.dtype).lerp(x[:, :truncation_cutoff], truncation_psi)
        return x
