"""MAT's losses: logistic GAN terms, R1, style mixing, perceptual/style/reconstruction losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mat_kernels.train.losses import (VGG19_FILENAME, VGG19_LAYER_INDEX, PerceptualLoss, TwoStageLoss, VGG19Features,
                                discriminator_logistic_loss, find_vgg19_weights, generator_logistic_loss,
                                gram_matrix, load_vgg19_features, r1_penalty, reconstruction_loss, style_loss,
                                style_mix_ws)


# ----------------------------------------------------------------------------- tiny stand-ins
class TinyMapping(nn.Module):
    def __init__(self, z_dim=4, num_ws=5):
        super().__init__()
        self.fc = nn.Linear(z_dim, z_dim)
        self.num_ws = num_ws
        self.calls = []

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        self.calls.append(skip_w_avg_update)
        return (self.fc(z) * truncation_psi).unsqueeze(1).repeat(1, self.num_ws, 1) \
            + torch.arange(self.num_ws, dtype=z.dtype).view(1, -1, 1)


class TinySynthesis(nn.Module):
    def __init__(self, w_dim=4):
        super().__init__()
        self.a = nn.Parameter(torch.randn(3, w_dim) * 0.1)
        self.b = nn.Parameter(torch.randn(3) * 0.1)

    def forward(self, img, mask, ws, noise_mode="random", return_stg1=False):
        style = ws.mean(1) @ self.a.t()                          # (B, 3)
        raw = torch.tanh(img * 0.5 + style[:, :, None, None] + self.b[None, :, None, None])
        out = img * mask + raw * (1 - mask)
        stg1 = img * mask + torch.tanh(raw * 1.5) * (1 - mask)
        return (out, stg1) if return_stg1 else out


class TinyD(nn.Module):
    """logit = Σ w ⊙ x² + <v, mask> (per sample), stage-1 logit = Σ u ⊙ x_s1³."""

    def __init__(self, shape=(3, 4, 4)):
        super().__init__()
        self.w = nn.Parameter(torch.randn(*shape) * 0.1)
        self.u = nn.Parameter(torch.randn(*shape) * 0.1)
        self.v = nn.Parameter(torch.randn(1, *shape[1:]) * 0.1)

    def forward(self, img, mask, img_stg1, c):
        logit = (self.w * img.square()).sum([1, 2, 3]) + (self.v * mask).sum([1, 2, 3])
        logit_s1 = (self.u * img_stg1.pow(3)).sum([1, 2, 3])
        return logit.unsqueeze(1), logit_s1.unsqueeze(1)


def _batch(B=3):
    g = torch.Generator().manual_seed(1)
    img = torch.rand(B, 3, 4, 4, generator=g) * 2 - 1
    mask = (torch.rand(B, 1, 4, 4, generator=g) > 0.5).float()
    z = torch.randn(B, 4, generator=g)
    c = torch.zeros(B, 0)
    return img, mask, z, c


# ----------------------------------------------------------------------------- elementary terms
def test_logistic_losses_hand_values():
    logits = torch.tensor([[0.0], [math.log(3.0)], [-math.log(3.0)]])
    torch.testing.assert_close(generator_logistic_loss(logits),
                               torch.tensor([[math.log(2)], [math.log(4 / 3)], [math.log(4)]]))
    d = discriminator_logistic_loss(real_logits=logits, fake_logits=-logits)
    torch.testing.assert_close(d, 2 * generator_logistic_loss(logits))
    torch.testing.assert_close(discriminator_logistic_loss(None, logits),
                               torch.tensor([[math.log(2)], [math.log(4)], [math.log(4 / 3)]]))


def test_r1_matches_closed_form_and_its_param_gradient():
    D = TinyD()
    img, mask, _, c = _batch()
    real = img.clone().requires_grad_(True)
    logit, _ = D(real, mask, img, c)
    pen = r1_penalty(logit, real)
    # d logit / d x = 2 w x  ->  penalty = Σ 4 w² x²,  d penalty / d w = 8 w x² (summed over batch)
    expected = (4 * D.w.detach().square() * img.square()).sum([1, 2, 3])
    torch.testing.assert_close(pen, expected)
    pen.sum().backward()
    torch.testing.assert_close(D.w.grad, (8 * D.w.detach() * img.square()).sum(0))


def test_gram_style_and_reconstruction_hand_values():
    x = torch.tensor([[[[1.0, 2.0]], [[0.0, -1.0]]]])  # (1, 2, 1, 2)
    torch.testing.assert_close(gram_matrix(x), torch.tensor([[[5.0, -2.0], [-2.0, 1.0]]]) / 4)
    y = torch.zeros_like(x)
    torch.testing.assert_close(style_loss({"a": x}, {"a": y}, {"a": 2.0}), torch.tensor(2 * (5 + 2 + 2 + 1) / 4 / 4))
    a = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]]])
    b = torch.zeros_like(a)
    m = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    torch.testing.assert_close(reconstruction_loss(a, b), torch.tensor(3.5 / 4))
    torch.testing.assert_close(reconstruction_loss(a, b, kind="l2"), torch.tensor(5.25 / 4))
    # holes weighted 6, known 1: (1·1 + 6·2 + 6·0.5 + 1·0) / 4
    torch.testing.assert_close(reconstruction_loss(a, b, m, hole_weight=6.0), torch.tensor(16.0 / 4))
    with pytest.raises(ValueError, match="mask"):
        reconstruction_loss(a, b, m[:, :, :1])
    with pytest.raises(ValueError, match="kind"):
        reconstruction_loss(a, b, kind="l3")


def test_style_mixing_draw_order_and_values():
    torch.manual_seed(123)
    M = TinyMapping()
    z = torch.randn(2, 4)
    ws = M(z, None)
    for seed in range(6):
        torch.manual_seed(seed)
        cutoff = torch.empty([], dtype=torch.int64).random_(1, 5)
        coin = torch.rand([])
        z2 = torch.randn_like(z)
        expected = ws.clone()
        cut = int(cutoff) if coin < 0.5 else 5
        expected[:, cut:] = M(z2, None)[:, cut:]
        after = torch.rand([])
        torch.manual_seed(seed)
        M.calls.clear()
        got = style_mix_ws(M, ws, z, None, prob=0.5)
        assert M.calls == [True], "second mapping pass always runs, without w_avg update"
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert torch.rand([]) == after, "style mixing must consume exactly cutoff, coin, randn_like(z)"
    assert style_mix_ws(M, ws, z, None, prob=0.0) is ws


# ----------------------------------------------------------------------------- two-stage loss phases
def _loss(pcp=None, **kw):
    torch.manual_seed(0)
    G_map, G_syn, D = TinyMapping(), TinySynthesis(), TinyD()
    return TwoStageLoss(G_map, G_syn, D, pcp=pcp, **kw), G_map, G_syn, D


def _grads(mods):
    return [p.grad.clone() if p.grad is not None else None for m in mods for p in m.parameters()]


def test_gmain_gradients_equal_manual_objective():
    class L1Pcp(nn.Module):  # stands in for the VGG loss: any differentiable scalar works
        def forward(self, x, y):
            return (x - y.detach()).abs().mean()

    loss, G_map, G_syn, D = _loss(pcp=L1Pcp(), style_mixing_prob=0.5, pcp_ratio=0.3, truncation_psi=0.7)
    img, mask, z, c = _batch()
    D.requires_grad_(False)
    torch.manual_seed(5)
    loss.accumulate_gradients("Gmain", img, mask, c, z, c, gain=2.0)
    got = _grads([G_map, G_syn])

    for p in list(G_map.parameters()) + list(G_syn.parameters()):
        p.grad = None
    torch.manual_seed(5)
    ws = style_mix_ws(G_map, G_map(z, c, truncation_psi=0.7), z, c, 0.5, 0.7)
    fake, fake1 = G_syn(img, mask, ws, return_stg1=True)
    l, l1 = D(fake, mask, fake1, c)
    total = F.softplus(-l) + F.softplus(-l1) + 0.3 * (fake - img).abs().mean()
    (total.mean() * 2.0).backward()
    for a, b in zip(got, _grads([G_map, G_syn])):
        torch.testing.assert_close(a, b)
    assert all(p.grad is None for p in D.parameters())


def test_dmain_stage1_branch_sees_reals_and_matches_manual():
    loss, G_map, G_syn, D = _loss(style_mixing_prob=0.0, pcp_ratio=0.0)
    img, mask, z, c = _batch()
    G_map.requires_grad_(False)
    G_syn.requires_grad_(False)
    torch.manual_seed(2)
    stats = loss.accumulate_gradients("Dmain", img, mask, c, z, c, gain=1.0)
    got = _grads([D])
    for p in D.parameters():
        p.grad = None
    fake, fake1 = G_syn(img, mask, G_map(z, c), return_stg1=True)
    lf, lf1 = D(fake, mask, fake1, c)
    lr, lr1 = D(img, mask, img, c)  # the stage-1 branch's "real" is the real image
    (F.softplus(lf) + F.softplus(lf1) + F.softplus(-lr) + F.softplus(-lr1)).mean().backward()
    for a, b in zip(got, _grads([D])):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(stats["scores/real_s1"], lr1.detach())


def test_dreg_r1_on_both_branches_matches_closed_form():
    loss, G_map, G_syn, D = _loss(style_mixing_prob=0.0, pcp_ratio=0.0, r1_gamma=10.0)
    img, mask, z, c = _batch()
    stats = loss.accumulate_gradients("Dreg", img, mask, c, z, c, gain=16.0)
    w, u = D.w.detach(), D.u.detach()
    r1 = (4 * w.square() * img.square()).sum([1, 2, 3])           # ∂(Σ w x²)/∂x = 2 w x
    r1_s1 = (9 * u.square() * img.pow(4)).sum([1, 2, 3])           # ∂(Σ u x³)/∂x = 3 u x²
    torch.testing.assert_close(stats["D/r1"], r1)
    torch.testing.assert_close(stats["D/r1_s1"], r1_s1)
    # gradient of 16 · mean(γ/2 · (r1 + r1_s1)) w.r.t. w and u; mask weight v gets exactly zero
    torch.testing.assert_close(D.w.grad, 16 * 5 * (8 * w * img.square()).mean(0))
    torch.testing.assert_close(D.u.grad, 16 * 5 * (18 * u * img.pow(4)).mean(0))
    torch.testing.assert_close(D.v.grad, torch.zeros_like(D.v))
    assert loss.accumulate_gradients("Greg", img, mask, c, z, c) == {}
    with pytest.raises(ValueError, match="phase"):
        loss.accumulate_gradients("Gboth", img, mask, c, z, c)


# ----------------------------------------------------------------------------- VGG19 perceptual loss
@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    torch.manual_seed(0)
    net = VGG19Features("pool5")
    for m in net.modules():
        if isinstance(m, nn.Conv2d):  # He init keeps deep activations O(1) so both layers matter
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.normal_(m.bias, std=0.1)
    state = dict(net.state_dict())
    state["classifier.0.weight"] = torch.zeros(2, 2)  # full torchvision files also hold the classifier
    path = tmp_path_factory.mktemp("vgg") / VGG19_FILENAME
    torch.save(state, path)
    return path


def test_vgg19_layout_matches_torchvision_names():
    names = list(VGG19Features("pool5").state_dict())
    convs = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert names == [f"features.{i}.{k}" for i in convs for k in ("weight", "bias")]
    assert VGG19_LAYER_INDEX["conv4_4"] == 25 and VGG19_LAYER_INDEX["conv5_4"] == 34


def _manual_features(state, x):
    """conv4_4 and conv5_4 (pre-ReLU) by an explicit walk over torchvision's layer indices."""
    pools, out = {4, 9, 18, 27}, {}
    for i in range(35):
        if i in pools:
            x = F.max_pool2d(x, 2, 2)
        elif f"features.{i}.weight" in state:
            x = F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1)
            if i == 25:
                out["conv4_4"] = x
            if i == 34:
                out["conv5_4"] = x
        else:
            x = F.relu(x)
    return out


def test_perceptual_loss_value_matches_manual(vgg_file, monkeypatch):
    monkeypatch.setenv("MAT_KERNELS_VGG19", str(vgg_file))
    pcp = PerceptualLoss()  # official defaults, weights found through the env var
    assert find_vgg19_weights() == str(vgg_file)
    torch.manual_seed(3)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    state = torch.load(vgg_file, weights_only=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    fx = _manual_features(state, ((x + 1) / 2 - mean) / std)
    fy = _manual_features(state, ((y + 1) / 2 - mean) / std)
    assert (fx["conv4_4"] < 0).any(), "features are taken before the ReLU"
    expected = 0.25 * (fx["conv4_4"] - fy["conv4_4"]).abs().mean() + 0.5 * (fx["conv5_4"] - fy["conv5_4"]).abs().mean()
    torch.testing.assert_close(pcp(x, y), expected)
    p, s = pcp.losses(x, y)
    torch.testing.assert_close(p, expected)
    exp_style = sum(w * (gram_matrix(fx[k]) - gram_matrix(fy[k])).abs().mean()
                    for k, w in (("conv4_4", 0.25), ("conv5_4", 0.5)))
    torch.testing.assert_close(s, exp_style)
    # gradient flows to x only, the VGG is frozen
    xg = x.clone().requires_grad_(True)
    pcp(xg, y).backward()
    assert xg.grad.abs().sum() > 0 and all(p.grad is None for p in pcp.parameters())
    assert torch.equal(pcp(y, y), torch.zeros(()))


def test_vgg_missing_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MAT_KERNELS_VGG19", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    with pytest.raises(FileNotFoundError, match=VGG19_FILENAME.replace(".", r"\.")) as e:
        PerceptualLoss()
    assert "MAT_KERNELS_VGG19" in str(e.value) and str(tmp_path / "torchhome") in str(e.value)
    with pytest.raises(FileNotFoundError, match="vgg_path"):
        load_vgg19_features(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(KeyError, match="missing"):
        load_vgg19_features(bad)
