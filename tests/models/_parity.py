"""The deterministic weights and inputs of the official-parity recording (no official code here).

``tests/data/official_model_outputs_256.pt`` was produced by running the official networks with
exactly these functions (see tests/models/test_official_parity.py), so the test can rebuild the
same weights and inputs for mat_kernels' networks.
"""
from __future__ import annotations

from typing import Dict

import torch

WEIGHT_SEED = 1234
INPUT_SEED = 4321
# Kept as constructed: deterministic functions of the architecture.
CONSTRUCTED_SUFFIXES = ("resample_filter", "attn_mask")


def parity_state_dict(template: Dict[str, torch.Tensor], seed: int = WEIGHT_SEED) -> Dict[str, torch.Tensor]:
    """Weights for every entry of ``template`` (a state dict in official key order).

    One CPU ``torch.Generator`` seeded ``seed`` draws ``randn(shape)`` for every entry in order,
    except ``resample_filter`` / ``attn_mask`` buffers (copied from the template). Scales: mapping
    ``fc*.weight`` x100 (the official init N(0,1)/lr_multiplier), ``*.affine.bias`` 1 + 0.1 x,
    other ``*.bias`` and ``noise_strength`` 0.1 x, everything else (weights, ``noise_const``,
    ``w_avg``) x1.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in template.items():
        if name.endswith(CONSTRUCTED_SUFFIXES):
            out[name] = t.detach().clone()
            continue
        x = torch.randn(tuple(t.shape), generator=g, dtype=torch.float32)
        if name.startswith("mapping.fc") and name.endswith(".weight"):
            x = x * 100.0
        elif name.endswith("affine.bias"):
            x = 1.0 + 0.1 * x
        elif name.endswith(".bias") or name.endswith("noise_strength"):
            x = 0.1 * x
        out[name] = x
    return out


def parity_inputs(resolution: int = 256, seed: int = INPUT_SEED):
    """(image (1, 3, R, R) in [-1, 1), mask (1, 1, R, R), z (1, 512)) from a generator seeded ``seed``.

    The mask (1 = known) has a rectangular hole [R/4, 3R/4) x [R/8, 5R/8) (whole attention
    windows invalid at the 64x64 grid) plus ~10% random single-pixel holes.
    """
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, resolution, resolution, generator=g) * 2 - 1
    mask = torch.ones(1, 1, resolution, resolution)
    mask[:, :, resolution // 4: 3 * resolution // 4, resolution // 8: 5 * resolution // 8] = 0
    mask[torch.rand(1, 1, resolution, resolution, generator=g) < 0.1] = 0
    z = torch.randn(1, 512, generator=g)
    return image, mask, z


# (name, truncation_psi, noise_mode, torch.manual_seed right before the G call)
G_RUNS = (("psi1_const", 1.0, "const", 100), ("psi05_const", 0.5, "const", 101), ("psi05_random", 0.5, "random", 102))


def discriminator_inputs(image, mask, out, out_stg1):
    """Batch of 2 for D (so the minibatch-std group has 2 samples): [G output, input image]."""
    return (torch.cat([out, image]), torch.cat([mask, mask]), torch.cat([out_stg1, image]))
