"""Record the official MAT TwoStageLoss / PerceptualLoss on the tiny stand-in networks.

Not a test: run once by hand where the official repository is available, to (re)write
tests/fixtures/official_two_stage_loss.pt, which test_official_parity.py compares against.

    PYTHONPATH=<official MAT checkout>:<stubs>:<this repo> python tests/train/record_official_loss.py

<official MAT checkout> provides losses/, torch_utils/, dnnlib/. torchvision is not installable
beside the CPU torch pin, so <stubs> must provide ``torchvision.models.vgg.vgg19(pretrained)``
returning mat_kernels.train.losses.VGG19Features('pool5') with the weights passed in $FAKE_VGG (and an
empty ``requests`` module for dnnlib). The inputs are regenerated from seeds by ``make_inputs``.
"""
from __future__ import annotations

import os

import torch

from mat_kernels.train.losses import VGG19Features
from mat_kernels.train import TrainConfig
from tests.train import tiny_models

PHASES = (("Gmain", 1.0), ("Dmain", 1.0), ("Dreg", 16.0))
LOSS_KW = dict(style_mixing_prob=0.5, r1_gamma=10.0, truncation_psi=0.5, pcp_ratio=0.1)


def make_inputs():
    cfg = TrainConfig(data="x", z_dim=16, w_dim=16, resolution=32)
    torch.manual_seed(0)
    G, D = tiny_models.build(cfg)
    g = torch.Generator().manual_seed(1)
    img = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    mask = (torch.rand(4, 1, 32, 32, generator=g) > 0.5).float()
    return G, D, img, mask, torch.zeros(4, 0)


def make_vgg_and_pair():
    torch.manual_seed(0)
    vgg = VGG19Features("pool5")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    return vgg, x, y


def run_phases(make_loss, G, D, img, mask, c, official: bool):
    """Per phase and seed: the trained net's gradients, G's buffers and the next torch.rand draw."""
    out = {}
    loss = make_loss(G, D)
    for phase, gain in PHASES:
        for seed in range(2):
            for m in (G, D):
                m.requires_grad_(False)
                m.zero_grad(set_to_none=True)
            target = G if phase.startswith("G") else D
            target.requires_grad_(True)
            torch.manual_seed(seed)
            z = torch.randn(4, 16)
            if official:
                loss.accumulate_gradients(phase, img, mask, c, z, c, sync=True, gain=gain)
            else:
                loss.accumulate_gradients(phase, img, mask, c, z, c, gain=gain)
            rec = {f"grad.{n}": p.grad.clone() for n, p in target.named_parameters()}
            rec.update({f"buffer.{n}": b.clone() for n, b in G.named_buffers()})
            rec["next_rand"] = torch.rand([])
            out[f"{phase}.{seed}"] = rec
    return out


def main():
    import losses.loss as official_loss
    from losses.pcp import PerceptualLoss as OfficialPCP

    vgg, x, y = make_vgg_and_pair()   # the official loss builds its VGG from these weights
    path = "/tmp/_record_vgg.pth"
    torch.save(vgg.state_dict(), path)
    os.environ["FAKE_VGG"] = path
    G, D, img, mask, c = make_inputs()
    phases = run_phases(lambda g, d: official_loss.TwoStageLoss("cpu", g.mapping, g.synthesis, d, **LOSS_KW),
                        G, D, img, mask, c, official=True)
    pcp, style = OfficialPCP(layer_weights=dict(conv4_4=1 / 4, conv5_4=1 / 2), use_style_loss=True)(x, y)
    out = {"phases": phases, "pcp": pcp.detach(), "style": style.detach(), "torch": str(torch.__version__)}
    dst = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "official_two_stage_loss.pt")
    torch.save(out, dst)
    print("wrote", dst)


if __name__ == "__main__":
    main()
