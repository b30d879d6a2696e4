"""Tiny stand-ins with MAT's Generator/Discriminator interfaces, for fast CPU tests of the loop.

They reproduce what the loop relies on: a mapping network with a w_avg buffer updated in train
mode (truncation towards it), random draws inside the synthesis (an always-on Bernoulli map and
per-layer noise in 'random' mode), a two-output synthesis with compositing, a transformer-like
submodule named ``BasicLayer`` (for gradient checkpointing) and a two-branch discriminator. Every
parameter takes part in every forward pass (DDP requires it).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TinyMapping(nn.Module):
    def __init__(self, z_dim, w_dim, num_ws=4, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        self.fc0 = nn.Linear(z_dim, w_dim)
        self.fc1 = nn.Linear(w_dim, w_dim)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        w = self.fc1(F.leaky_relu(self.fc0(x), 0.2)).float()  # bf16 under autocast
        if self.training and not skip_w_avg_update:
            self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            ws = self.w_avg.lerp(ws, truncation_psi)
        return ws


class BasicLayer(nn.Module):
    """Named like MAT's transformer stage so --grad-checkpoint finds it; draws dropout inside."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        keep = F.dropout(torch.ones_like(x[:, :1]) * 0.5, training=True)
        return x + torch.tanh(self.conv(x)) * keep


class TinySynthesis(nn.Module):
    def __init__(self, w_dim, res, ch=8):
        super().__init__()
        self.res = res
        self.num_layers = 4
        self.stem = nn.Conv2d(5, ch, 3, padding=1)
        self.tran = BasicLayer(ch)
        self.style = nn.Linear(w_dim, ch)
        self.to_rgb1 = nn.Conv2d(ch, 3, 1)
        self.to_rgb = nn.Conv2d(ch, 3, 3, padding=1)
        self.register_buffer("noise_const", torch.randn(1, 1, res, res))

    def forward(self, images_in, masks_in, ws, noise_mode="random", return_stg1=False):
        x = self.stem(torch.cat([masks_in - 0.5, images_in * masks_in, masks_in * 0 + 1], 1))
        x = self.tran(F.leaky_relu(x, 0.2))
        x = x * (1 + self.style(ws[:, -1]))[:, :, None, None]
        stg1 = torch.tanh(self.to_rgb1(x))
        stg1 = images_in * masks_in + stg1 * (1 - masks_in)
        noise = torch.randn_like(x[:, :1]) if noise_mode == "random" else self.noise_const
        img = torch.tanh(self.to_rgb(F.leaky_relu(x + 0.1 * noise, 0.2)) + stg1)
        img = images_in * masks_in + img * (1 - masks_in)
        return (img, stg1) if return_stg1 else img


class TinyGenerator(nn.Module):
    def __init__(self, z_dim, w_dim, res):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution = z_dim, 0, w_dim, res
        self.synthesis = TinySynthesis(w_dim, res)
        self.mapping = TinyMapping(z_dim, w_dim, num_ws=self.synthesis.num_layers)

    def forward(self, images_in, masks_in, z, c=None, truncation_psi=1, truncation_cutoff=None,
                skip_w_avg_update=False, noise_mode="random", return_stg1=False):
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, skip_w_avg_update)
        return self.synthesis(images_in, masks_in, ws, noise_mode=noise_mode, return_stg1=return_stg1)


class _Branch(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv0 = nn.Conv2d(4, ch, 3, padding=1)
        self.conv1 = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        self.fc = nn.Linear(ch, 1)

    def forward(self, img, mask):
        x = F.leaky_relu(self.conv0(torch.cat([mask - 0.5, img], 1)), 0.2)
        x = F.leaky_relu(self.conv1(x), 0.2)
        return self.fc(x.mean(dim=(2, 3)))


class TinyDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = _Branch(8)
        self.b_stg1 = _Branch(4)

    def forward(self, images_in, masks_in, images_stg1, c=None):
        return self.b(images_in, masks_in), self.b_stg1(images_stg1, masks_in)


def build(cfg):
    """Factory for ``--model tests.train.tiny_models:build``."""
    return TinyGenerator(cfg.z_dim, cfg.w_dim, cfg.resolution), TinyDiscriminator()
