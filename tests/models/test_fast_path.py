"""The whole generator at 256 on CPU with the sdpa backend and the layers' CPU fast path
(mat_kernels/nn/fast_conv.py) against the reference backend (the official op sequence): fp32
within the fp32 bound, bf16 autocast within the bf16 bound, and a seed gives the same image."""
from __future__ import annotations

import pytest
import torch

from mat_kernels.models import Generator
from mat_kernels.testing import assert_close


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    G = Generator(512, 0, 512, 256, 3).eval()
    with torch.no_grad():  # non-zero biases and noise strengths, so that their folding is exercised
        for name, p in G.named_parameters():
            if name.endswith("bias") or name.endswith("noise_strength"):
                p.add_(0.1 * torch.randn_like(p))
    img = torch.rand(1, 3, 256, 256) * 2 - 1
    mask = torch.ones(1, 1, 256, 256)
    mask[..., 24:232, 40:200] = 0
    z = torch.randn(1, 512)
    return G, (img, mask, z)


def _run(G, inputs, backend, noise_mode="random", seed=3, amp=False):
    G.set_backend(backend)
    torch.manual_seed(seed)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        return G(*inputs, noise_mode=noise_mode, return_stg1=True)


def test_generator_on_sdpa_matches_the_reference_fp32_and_bf16(setup):
    G, inputs = setup
    ref = _run(G, inputs, "reference")
    out = _run(G, inputs, "sdpa")
    assert_close(out[0], ref[0], "fast_path", "fwd", torch.float32, "image")
    assert_close(out[1], ref[1], "fast_path", "fwd", torch.float32, "stage-1 image")
    assert out[0].is_contiguous()
    again = _run(G, inputs, "sdpa")
    assert torch.equal(again[0], out[0]) and torch.equal(again[1], out[1])  # same seed, same image
    amp = _run(G, inputs, "sdpa", amp=True)
    assert_close(amp[0], ref[0], "G", "fwd", torch.bfloat16, "image")
    assert_close(amp[1], ref[1], "G_stg1", "fwd", torch.bfloat16, "stage-1 image")


def test_auto_fast_path_keeps_the_const_noise_and_input_pixels(setup):
    G, inputs = setup
    ref = _run(G, inputs, "reference", noise_mode="const")
    out = _run(G, inputs, "auto", noise_mode="const")
    assert_close(out[0], ref[0], "fast_path", "fwd", torch.float32, "image")
    img, mask, _ = inputs
    known = mask.bool().expand_as(img)
    assert torch.equal(out[0][known], img[known])  # known pixels copied exactly
