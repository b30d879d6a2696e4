"""torch.compile (inductor) of the whole generator at 256 against eager (extended: compiling G
takes minutes on a CI CPU). The Bernoulli maps come from inductor's eager-compatible RNG
(``fallback_random``) so the two runs draw the same maps."""
from __future__ import annotations

import time

import pytest
import torch
import torch._inductor.config as inductor_config

from mat_kernels.models import Discriminator, Generator
from mat_kernels.testing import assert_relative_l2



@pytest.mark.extended
def test_compiled_generator_and_discriminator_match_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    G, D = Generator(512, 0, 512, 256, 3).eval(), Discriminator(0, 256, 3).eval()
    img = torch.rand(1, 3, 256, 256) * 2 - 1
    mask = torch.ones(1, 1, 256, 256)
    mask[..., 24:232, 40:200] = 0
    z = torch.randn(1, 512)
    with torch.no_grad(), inductor_config.patch(fallback_random=True):
        torch.manual_seed(1)
        ref = G(img, mask, z, noise_mode="const", return_stg1=True)
        t0 = time.perf_counter()
        torch.manual_seed(1)
        out = torch.compile(G)(img, mask, z, noise_mode="const", return_stg1=True)
        print(f"compile + first call of G at 256: {time.perf_counter() - t0:.0f} s")
        ref_d = torch.cat(D(img, mask, ref[1]))
        out_d = torch.cat(torch.compile(D)(img, mask, ref[1]))
    assert_relative_l2(out[0], ref[0], "compiled", "fwd", torch.float32, "image")
    assert_relative_l2(out[1], ref[1], "compiled", "fwd", torch.float32, "stage-1 image")
    assert_relative_l2(out_d, ref_d, "compiled", "fwd", torch.float32, "logits")
