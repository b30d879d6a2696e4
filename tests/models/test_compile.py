"""torch.compile (inductor, default settings: nothing patched) of the whole generator at 256
against eager, same seed, batch 1 and 2 (extended: compiling G takes minutes on a CI CPU). The
Bernoulli maps and the noise come from the eager RNG compiled or not (mat_kernels.nn.draws)."""
from __future__ import annotations

import time

import pytest
import torch

from mat_kernels.models import Discriminator, Generator
from mat_kernels.testing import assert_close


@pytest.mark.extended
@pytest.mark.parametrize("batch,noise_mode", [(1, "const"), (2, "random")])
def test_compiled_generator_and_discriminator_match_eager(batch, noise_mode):
    torch._dynamo.reset()
    torch.manual_seed(0)
    G, D = Generator(512, 0, 512, 256, 3).eval(), Discriminator(0, 256, 3).eval()
    with torch.no_grad():
        for m in G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.1)   # 0 at init: the noise would not show
    img = torch.rand(batch, 3, 256, 256) * 2 - 1
    mask = torch.ones(batch, 1, 256, 256)
    mask[..., 24:232, 40:200] = 0
    z = torch.randn(batch, 512)
    with torch.no_grad():
        torch.manual_seed(1)
        ref = G(img, mask, z, noise_mode=noise_mode, return_stg1=True)
        ref_next = torch.rand(4)
        t0 = time.perf_counter()
        torch.manual_seed(1)
        out = torch.compile(G)(img, mask, z, noise_mode=noise_mode, return_stg1=True)
        out_next = torch.rand(4)
        print(f"compile + first call of G at 256: {time.perf_counter() - t0:.0f} s")
        ref_d = torch.cat(D(img, mask, ref[1]))
        out_d = torch.cat(torch.compile(D)(img, mask, ref[1]))
    assert torch.equal(out_next, ref_next), "the compiled generator left the RNG at another position"
    assert_close(out[0], ref[0], "compiled", "fwd", torch.float32, "image")
    assert_close(out[1], ref[1], "compiled", "fwd", torch.float32, "stage-1 image")
    assert_close(out_d, ref_d, "compiled", "fwd", torch.float32, "logits")
