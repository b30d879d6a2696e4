"""TwoStageLoss and PerceptualLoss against outputs recorded from the official MAT code.

data/official_two_stage_loss.pt was written by record_official_loss.py, which runs the official
losses/loss.py and losses/pcp.py on the tiny stand-in networks (same seeds and inputs as here).
Each phase must give bit-identical gradients, the same w_avg buffers (only the first mapping pass
updates it) and leave the torch RNG at the same position (style mixing's draw order).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mat_kernels.train.losses import PerceptualLoss, TwoStageLoss

from .record_official_loss import LOSS_KW, make_inputs, make_vgg_and_pair, run_phases

DATA = Path(__file__).resolve().parent / "data" / "official_two_stage_loss.pt"


@pytest.fixture(scope="module")
def recorded():
    return torch.load(DATA, weights_only=True)


@pytest.fixture(scope="module")
def vgg_pair():
    return make_vgg_and_pair()


@pytest.fixture(scope="module")
def pcp(vgg_pair):
    return PerceptualLoss(vgg=vgg_pair[0])


def test_perceptual_and_style_loss_equal_official(recorded, pcp, vgg_pair):
    _, x, y = vgg_pair
    p, s = pcp.losses(x, y)
    torch.testing.assert_close(p, recorded["pcp"], rtol=0, atol=0)
    torch.testing.assert_close(s, recorded["style"], rtol=0, atol=0)
    torch.testing.assert_close(pcp(x, y), recorded["pcp"], rtol=0, atol=0)


def test_two_stage_loss_phases_equal_official(recorded, pcp):
    G, D, img, mask, c = make_inputs()
    got = run_phases(lambda g, d: TwoStageLoss(g.mapping, g.synthesis, d, pcp=pcp, **LOSS_KW),
                     G, D, img, mask, c, official=False)
    assert got.keys() == recorded["phases"].keys()
    for key, rec in recorded["phases"].items():
        assert got[key].keys() == rec.keys(), key
        for name, expected in rec.items():
            torch.testing.assert_close(got[key][name], expected, rtol=0, atol=0, msg=lambda m: f"{key} {name}: {m}")
