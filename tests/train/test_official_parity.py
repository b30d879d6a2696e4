"""TwoStageLoss and PerceptualLoss against outputs recorded from the official MAT code.

tests/fixtures/official_two_stage_loss.pt was written by record_official_loss.py, which runs the official
losses/loss.py and losses/pcp.py on the tiny stand-in networks (same seeds and inputs as here).
Each phase must give the same gradients and w_avg buffers (only the first mapping pass updates
it) and leave the torch RNG at the same position (style mixing's draw order: the next draw is
compared exactly). The recording was made in another process, possibly on another CPU, so the
float values are compared within fp32 rounding over the depth of the computation
(``mat_kernels.testing.TOLERANCES``), never bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mat_kernels.testing import assert_close
from mat_kernels.train.losses import PerceptualLoss, TwoStageLoss

from .record_official_loss import LOSS_KW, make_inputs, make_vgg_and_pair, run_phases

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "official_two_stage_loss.pt"


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
    for name, got, expected in (("pcp", p, recorded["pcp"]), ("style", s, recorded["style"]),
                                ("pcp via forward", pcp(x, y), recorded["pcp"])):
        assert_close(got, expected, "perceptual_loss", "fwd", torch.float32, name=name, scale=expected.abs().max())


def test_two_stage_loss_phases_equal_official(recorded, pcp):
    G, D, img, mask, c = make_inputs()
    got = run_phases(lambda g, d: TwoStageLoss(g.mapping, g.synthesis, d, pcp=pcp, **LOSS_KW),
                     G, D, img, mask, c, official=False)
    assert got.keys() == recorded["phases"].keys()
    for key, rec in recorded["phases"].items():
        assert got[key].keys() == rec.keys(), key
        for name, expected in rec.items():
            if name == "next_rand":   # the RNG's position: exact on every machine
                assert torch.equal(got[key][name], expected), f"{key}: the RNG is at another position"
            else:
                assert_close(got[key][name], expected, "two_stage_loss", "bwd", torch.float32, name=f"{key} {name}",
                             scale=expected.abs().max())
