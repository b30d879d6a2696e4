"""mat_kernels' Generator/Discriminator against outputs recorded from the official code.

How ``tests/fixtures/official_model_outputs.pt`` was produced (the recording script imports the
official code, so it is not in the repository): the official repository fenglinglwb/MAT at
commit d273d89 was checked out outside this repo (``networks/``, ``torch_utils/``, ``dnnlib/``;
timm replaced by a stub with ``to_2tuple``, the only timm name it calls, and ``requests``
stubbed for ``dnnlib``) and run on CPU in fp32 (torch 2.13, Intel Xeon with AVX-512/AMX):
``Generator(512, 0, 512, R, 3)`` at R = 256 and 512 and ``Discriminator(0, 256, 3)``, with
weights ``parity_state_dict`` of their own state dicts (``tests/models/_parity.py``). For each
entry of ``G_RUNS`` (name, resolution, batch, truncation_psi, noise_mode, train mode, seed) it
built the inputs ``parity_batch(resolution, batch)``, set train or eval mode, called
``torch.manual_seed(seed)`` right before ``G(image, mask, z, None, truncation_psi=psi,
noise_mode=mode, return_stg1=True)`` under no_grad and stored both images at ``SUBSAMPLE``
(every 4th row and column: 1/16 of the pixels, to keep the file at about 2 MB), restoring
w_avg afterwards (a train-mode run also stores w_avg after its update). The released StyleConv
has no ``noise_mode='none'`` branch (it fails on an unbound name), so 'none' ran as 'const'
with every ``noise_strength`` set to 0, which adds +-0: StyleGAN2's 'none'. D ran in eval mode
on ``discriminator_inputs(256)`` (batch 2); ``mapping_train`` holds G.mapping's output in train
mode for a fixed z at psi 0.5 and the updated ``w_avg``. Only outputs are stored; the 'about'
string repeats this.

The recording comes from another process and possibly another CPU, so every comparison uses
a tolerance (``mat_kernels.testing.TOLERANCES``): oneDNN and the BLAS pick other kernels and
summation orders on another instruction set. Up to the window-attention blocks our forward
follows the official op sequence; the attention's different (but equivalent) op grouping
leaves ~3e-4 absolute differences on outputs of magnitude ~200 after ~30 layers of random
weights. A wrong Bernoulli map or noise draw changes the hole pixels by units.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mat_kernels.models import Discriminator, Generator
from mat_kernels.testing import assert_close

from ._parity import G_RUNS, SUBSAMPLE, discriminator_inputs, parity_batch, parity_state_dict

RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "official_model_outputs.pt"
RUNS = {run[0]: run[1:] for run in G_RUNS}


@pytest.fixture(scope="module")
def recorded():
    rec = torch.load(RECORDING, weights_only=True)
    assert "d273d89" in rec["about"]
    return rec


_nets = {}


def generator(res=256):
    if res not in _nets:
        g = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3).eval()
        g.load_state_dict(parity_state_dict(g.state_dict()), strict=True)
        _nets[res] = g
    return _nets[res]


@pytest.fixture(scope="module")
def G():
    return generator(256)


@pytest.fixture(scope="module")
def D():
    d = Discriminator(c_dim=0, img_resolution=256, img_channels=3).eval()
    d.load_state_dict(parity_state_dict(d.state_dict()), strict=True)
    return d


@pytest.fixture(scope="module")
def inputs():
    return parity_batch(256, 1)


_cache = {}


def run_g(G, name, memory_format=torch.contiguous_format):
    """The recorded call (seeded right before it), under no_grad, w_avg restored afterwards;
    returns ((image, stage-1 image), w_avg after the call). Cached per module run."""
    key = (name, memory_format)
    if key not in _cache:
        res, batch, psi, mode, train, seed = RUNS[name]
        image, mask, z = parity_batch(res, batch)
        image, mask = image.contiguous(memory_format=memory_format), mask.contiguous(memory_format=memory_format)
        w_avg = G.mapping.w_avg.clone()
        G.train(train)
        try:
            torch.manual_seed(seed)
            with torch.no_grad():
                out = G(image, mask, z, None, truncation_psi=psi, noise_mode=mode, return_stg1=True)
            _cache[key] = out, G.mapping.w_avg.clone()
        finally:
            G.eval()
            G.mapping.w_avg.copy_(w_avg)
    return _cache[key]


def check_run(G, recorded, name, memory_format=torch.contiguous_format):
    res, batch, *_ = RUNS[name]
    image, mask, _ = parity_batch(res, batch)
    (out, out_stg1), w_avg_after = run_g(G, name, memory_format)
    rec = recorded[name]
    assert_close(out_stg1[SUBSAMPLE], rec["img_stg1"], "model", "fwd", torch.float32, name=f"{name} stage 1")
    assert_close(out[SUBSAMPLE], rec["img"], "model", "fwd", torch.float32, name=f"{name} final")
    if "w_avg_after" in rec:
        assert_close(w_avg_after, rec["w_avg_after"], "mapping", "fwd", torch.float32, name=f"{name} w_avg",
                     scale=rec["w_avg_after"].abs().max())
    # Known pixels are copied from the input exactly, in both stages.
    known = mask.expand_as(image).bool()
    assert torch.equal(out[known], image[known]) and torch.equal(out_stg1[known], image[known])
    assert not torch.equal(out[~known], image[~known])


RUNS_256 = [run[0] for run in G_RUNS if run[1] == 256]


@pytest.mark.parametrize("name", RUNS_256)
def test_generator_matches_official(G, recorded, name):
    """Batch 1, 2 and 3, psi 1 and 0.5, noise const/random/none, eval and train mode: the
    Bernoulli maps and the noise follow the official draws at every batch size."""
    check_run(G, recorded, name)


@pytest.mark.parametrize("name", ["b2_psi1_random", pytest.param("b1_psi1_const", marks=pytest.mark.extended)])
def test_generator_matches_official_with_channels_last_inputs(G, recorded, name):
    """channels_last inputs draw the same maps (the official code's own layouts at the draws do
    not depend on the input's memory format either)."""
    check_run(G, recorded, name, torch.channels_last)


@pytest.mark.extended
def test_generator_512_matches_official(recorded):
    name = "512_b2_psi05_random"
    check_run(generator(512), recorded, name)
    _nets.pop(512)


def test_discriminator_matches_official(D, recorded):
    with torch.no_grad():
        logit, logit_stg1 = D(*discriminator_inputs(256), None)
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
        # Recorded on another machine: fp32 rounding over the mapping's depth (see the table).
        for name, got, expected in (("ws", ws, rec["ws"]), ("w_avg", mapping.w_avg, rec["w_avg_after"])):
            assert_close(got, expected, "mapping", "fwd", torch.float32, name=name, scale=expected.abs().max())
    finally:
        mapping.eval()
        mapping.w_avg.copy_(w_avg)


def test_generator_forward_backward_deterministic(G, D, inputs):
    """Forward with autograd gives the recorded-seed no-grad run (same seed, const noise), and
    gradients reach every parameter of G and D, finite. On CPU the no-grad run of backend auto
    takes the inference fast path and the autograd run the official op sequence: the same function,
    so they agree within the fast path's bound; on the reference backend they agree bit for bit."""
    image, mask, z = inputs
    (expected, expected_stg1), _ = run_g(G, "b1_psi1_const")
    G.requires_grad_(True)
    D.requires_grad_(True)
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    torch.manual_seed(RUNS["b1_psi1_const"][-1])
    out, out_stg1 = G(image, mask, z, None, noise_mode="const", return_stg1=True)
    assert_close(out, expected, "fast_path", "fwd", torch.float32, "image")
    assert_close(out_stg1, expected_stg1, "fast_path", "fwd", torch.float32, "stage-1 image")
    G.set_backend("reference")
    try:
        with torch.no_grad():
            torch.manual_seed(RUNS["b1_psi1_const"][-1])
            ref_no_grad = G(image, mask, z, None, noise_mode="const", return_stg1=True)
        torch.manual_seed(RUNS["b1_psi1_const"][-1])
        ref_grad = G(image, mask, z, None, noise_mode="const", return_stg1=True)
        assert all(torch.equal(a, b) for a, b in zip(ref_grad, ref_no_grad))
    finally:
        G.set_backend("auto")
    logit, logit_stg1 = D(out, mask, out_stg1, None)
    (logit.sum() + logit_stg1.sum()).backward()
    for net_name, net in (("G", G), ("D", D)):
        for name, p in net.named_parameters():
            assert p.grad is not None, f"{net_name}.{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{net_name}.{name} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{net_name}.{name} has an all-zero gradient"
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
