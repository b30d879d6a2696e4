"""The deterministic weights and inputs of the official-parity recording (no official code here).

``tests/fixtures/official_model_outputs.pt`` was produced by running the official networks with
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


def parity_batch(resolution: int = 256, batch: int = 1):
    """``parity_inputs`` of seeds INPUT_SEED, INPUT_SEED + 1, ... stacked into a batch (batch 1 is
    ``parity_inputs(resolution)`` itself): the same rectangular hole, other pixels and z."""
    items = [parity_inputs(resolution, INPUT_SEED + i) for i in range(batch)]
    return tuple(torch.cat(parts) for parts in zip(*items))


# (name, resolution, batch, truncation_psi, noise_mode, train mode, torch.manual_seed right before
# the G call). At 256: batch 1, 2, 3 x the three noise modes, psi 1 and 0.5 alternating so that
# every (batch, psi) and (psi, noise mode) pair occurs; one batch-2 run in train mode (w_avg is
# updated before truncation). At 512: one batch-2 run (extended test).
G_RUNS = (
    ("b1_psi1_const", 256, 1, 1.0, "const", False, 100),
    ("b1_psi05_random", 256, 1, 0.5, "random", False, 102),
    ("b1_psi1_none", 256, 1, 1.0, "none", False, 103),
    ("b2_psi05_const", 256, 2, 0.5, "const", False, 104),
    ("b2_psi1_random", 256, 2, 1.0, "random", False, 105),
    ("b2_psi05_none", 256, 2, 0.5, "none", False, 106),
    ("b3_psi1_const", 256, 3, 1.0, "const", False, 107),
    ("b3_psi05_random", 256, 3, 0.5, "random", False, 108),
    ("b3_psi1_none", 256, 3, 1.0, "none", False, 109),
    ("b2_train_psi05_random", 256, 2, 0.5, "random", True, 110),
    ("512_b2_psi05_random", 512, 2, 0.5, "random", False, 111),
)

# The recorded images keep every 4th row and column (from row 1, column 2): 1/16 of the pixels,
# to keep the recording small; a wrong Bernoulli map or noise draw changes most hole pixels.
SUBSAMPLE = (Ellipsis, slice(1, None, 4), slice(2, None, 4))


def discriminator_inputs(resolution: int = 256):
    """Batch of 2 for D (so the minibatch-std group has 2 samples): images, masks and stage-1
    images from ``parity_inputs`` of other seeds (D is checked on its own)."""
    image, mask, _ = parity_batch(resolution, 2)
    stg1, _, _ = parity_inputs(resolution, INPUT_SEED + 7)
    return image, mask, torch.cat([stg1, image[:1]])
