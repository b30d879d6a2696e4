"""mat_kernels' Generator/Discriminator at 256 against outputs recorded from the official code.

How ``tests/data/official_model_outputs_256.pt`` was produced (the recording script imports the
official code, so it is not in the repository): the official repository fenglinglwb/MAT at
commit d273d89 was checked out outside this repo (``networks/``, ``torch_utils/``, ``dnnlib/``;
timm replaced by a stub with ``to_2tuple``, the only timm name it calls, and ``requests``
stubbed for ``dnnlib``) and run on CPU in fp32 (torch 2.13): ``Generator(512, 0, 512, 256, 3)``
and ``Discriminator(0, 256, 3)`` in eval mode, with weights ``parity_state_dict`` of their own
state dicts and inputs ``parity_inputs(256)`` from ``tests/models/_parity.py``. For each entry of
``G_RUNS`` (name, truncation_psi, noise_mode, seed) it called ``torch.manual_seed(seed)`` right
before ``G(image, mask, z, None, truncation_psi=psi, noise_mode=mode, return_stg1=True)`` under
no_grad and stored both images; D ran on ``discriminator_inputs`` built from the psi1_const
outputs (batch 2); ``mapping_train`` holds G.mapping's output in train mode for a fixed z at
psi 0.5 and the updated ``w_avg``. Only outputs are stored; the 'about' string repeats this.

Up to the window-attention blocks our forward is bit-identical to the official one; the
attention's different (but equivalent) op grouping leaves ~3e-4 absolute differences on
outputs of magnitude ~200 after ~30 layers of random weights.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mat_kernels.models import Discriminator, Generator
from mat_kernels.testing import assert_close

from ._parity import G_RUNS, discriminator_inputs, parity_inputs, parity_state_dict

RECORDING = Path(__file__).resolve().parents[1] / "data" / "official_model_outputs_256.pt"
RUNS = {name: (psi, mode, seed) for name, psi, mode, seed in G_RUNS}


@pytest.fixture(scope="module")
def recorded():
    rec = torch.load(RECORDING, weights_only=True)
    assert "d273d89" in rec["about"]
    return rec


@pytest.fixture(scope="module")
def G():
    g = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3).eval()
    g.load_state_dict(parity_state_dict(g.state_dict()), strict=True)
    return g


@pytest.fixture(scope="module")
def D():
    d = Discriminator(c_dim=0, img_resolution=256, img_channels=3).eval()
    d.load_state_dict(parity_state_dict(d.state_dict()), strict=True)
    return d


@pytest.fixture(scope="module")
def inputs():
    return parity_inputs(256)


_cache = {}


def run_g(G, inputs, name):
    """The recorded call (seeded right before it), under no_grad; cached per module run."""
    if name not in _cache:
        psi, mode, seed = RUNS[name]
        image, mask, z = inputs
        torch.manual_seed(seed)
        with torch.no_grad():
            _cache[name] = G(image, mask, z, None, truncation_psi=psi, noise_mode=mode, return_stg1=True)
    return _cache[name]


@pytest.mark.parametrize("name", [
    "psi1_const",
    pytest.param("psi05_const", marks=pytest.mark.extended),
    "psi05_random",   # truncation 0.5 and the per-layer noise draws in official order
])
def test_generator_matches_official(G, inputs, recorded, name):
    image, mask, _ = inputs
    out, out_stg1 = run_g(G, inputs, name)
    assert_close(out_stg1, recorded[name]["img_stg1"], "model", "fwd", torch.float32, name=f"{name} stage 1")
    assert_close(out, recorded[name]["img"], "model", "fwd", torch.float32, name=f"{name} final")
    # Known pixels are copied from the input exactly, in both stages.
    known = mask.expand_as(image).bool()
    assert torch.equal(out[known], image[known]) and torch.equal(out_stg1[known], image[known])
    assert not torch.equal(out[~known], image[~known])


def test_discriminator_matches_official(D, inputs, recorded):
    image, mask, _ = inputs
    # Fed the official generator's outputs, so this checks D alone.
    imgs, masks, stg1 = discriminator_inputs(image, mask, recorded["psi1_const"]["img"],
                                             recorded["psi1_const"]["img_stg1"])
    with torch.no_grad():
        logit, logit_stg1 = D(imgs, masks, stg1, None)
    assert logit.shape == (2, 1) and logit_stg1.shape == (2, 1)
    assert_close(logit, recorded["discriminator"]["logit"], "model", "fwd", torch.float32, name="logit")
    assert_close(logit_stg1, recorded["discriminator"]["logit_stg1"], "model", "fwd", torch.float32,
                 name="logit_stg1")


def test_mapping_train_mode_matches_official(G, recorded):
    rec = recorded["mapping_train"]
    mapping = G.mapping
    w_avg = mapping.w_avg.clone()
    try:
        mapping.train()
        with torch.no_grad():
            ws = mapping(rec["z"], None, truncation_psi=0.5)
        # torch.lerp in the official argument order: bit-identical.
        assert torch.equal(ws, rec["ws"])
        assert torch.equal(mapping.w_avg, rec["w_avg_after"])
    finally:
        mapping.eval()
        mapping.w_avg.copy_(w_avg)


def test_generator_forward_backward_deterministic(G, D, inputs):
    """Forward with autograd equals the recorded-seed no-grad run bit for bit (same seed, const
    noise), and gradients reach every parameter of G and D, finite."""
    image, mask, z = inputs
    expected, expected_stg1 = run_g(G, inputs, "psi1_const")
    G.requires_grad_(True)
    D.requires_grad_(True)
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    torch.manual_seed(RUNS["psi1_const"][2])
    out, out_stg1 = G(image, mask, z, None, noise_mode="const", return_stg1=True)
    assert torch.equal(out, expected) and torch.equal(out_stg1, expected_stg1)
    logit, logit_stg1 = D(out, mask, out_stg1, None)
    (logit.sum() + logit_stg1.sum()).backward()
    for net_name, net in (("G", G), ("D", D)):
        for name, p in net.named_parameters():
            assert p.grad is not None, f"{net_name}.{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{net_name}.{name} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{net_name}.{name} has an all-zero gradient"
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
