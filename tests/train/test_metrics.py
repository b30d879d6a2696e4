"""Pixel metrics vs scikit-image, FID/IDS math on synthetic features, Inception/LPIPS weight handling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mat_kernels.train import metrics as M

# scikit-image, scipy and scikit-learn are test dependencies (setup.py extras "test"): a missing one
# is an error here, not a skip.
import scipy.linalg as scipy_linalg  # noqa: E402
import skimage.metrics as skimage_metrics  # noqa: E402


def _images(seed=0, B=3, C=3, H=24, W=29, noise=40):
    rng = np.random.RandomState(seed)
    a = rng.randint(0, 256, size=(B, C, H, W)).astype(np.uint8)
    b = np.clip(a.astype(np.int32) + rng.randint(-noise, noise + 1, size=a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_l1_mse_psnr_vs_skimage():
    a, b = _images()
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for i in range(a.shape[0]):
        x, y = a[i].astype(np.float64), b[i].astype(np.float64)
        assert M.l1(ta, tb)[i].item() == pytest.approx(np.abs(x - y).mean(), rel=1e-12)
        assert M.mse(ta, tb)[i].item() == pytest.approx(skimage_metrics.mean_squared_error(x, y), rel=1e-12)
        exp = skimage_metrics.peak_signal_noise_ratio(a[i], b[i], data_range=255)
        assert M.psnr(ta, tb, data_range=255)[i].item() == pytest.approx(exp, rel=1e-12)
        # the same in [0, 1]
        assert M.psnr(ta.double() / 255.0, tb.double() / 255.0)[i].item() == pytest.approx(exp, rel=1e-9)
        # official formula 20·log10(255/√MSE)
        assert M.psnr(ta, tb, 255)[i].item() == pytest.approx(20 * math.log10(255 / math.sqrt(((x - y) ** 2).mean())))
    assert torch.isinf(M.psnr(ta, ta)).all()
    assert M.l2 is M.mse


@pytest.mark.parametrize("data_range,scale", [(255, 1.0), (1.0, 1 / 255.0)])
def test_ssim_vs_skimage(data_range, scale):
    a, b = _images(seed=1, B=2, H=32, W=27, noise=30)
    got = M.ssim(torch.from_numpy(a).double() * scale, torch.from_numpy(b).double() * scale, data_range=data_range)
    for i in range(a.shape[0]):
        exp = skimage_metrics.structural_similarity(
            a[i].astype(np.float64) * scale, b[i].astype(np.float64) * scale, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=data_range, channel_axis=0)
        assert got[i].item() == pytest.approx(exp, abs=1e-10)
    assert 0.2 < got.min() < got.max() < 0.99
    torch.testing.assert_close(M.ssim(torch.from_numpy(a), torch.from_numpy(a), 255), torch.ones(2, dtype=torch.float64))


def test_ssim_matches_official_crop_formula():
    # official: filter with the 11x11 Gaussian (any border rule), crop 5 px per side, C = (k·255)².
    a, b = _images(seed=2, B=1, C=1, H=20, W=20)
    x, y = torch.from_numpy(a).double(), torch.from_numpy(b).double()
    w = M.gaussian_window().view(1, 1, 11, 11)

    def filt(t):
        return F.conv2d(F.pad(t, (5, 5, 5, 5), mode="reflect"), w)[..., 5:-5, 5:-5]

    mx, my = filt(x), filt(y)
    sx, sy, sxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    exp = (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sx + sy + c2))).mean()
    assert M.ssim(x, y, 255).item() == pytest.approx(exp.item(), abs=1e-12)


def test_pixel_metric_errors():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="x, y"):
        M.l1(x, torch.zeros(1, 3, 8, 7))
    with pytest.raises(ValueError, match="SSIM needs"):
        M.ssim(x, x)
    with pytest.raises(ValueError, match="data_range"):
        M.psnr(x, x, data_range=0)
    assert M.to_uint8(torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0])).tolist() == [0, 0, 128, 255, 255]


def test_frechet_distance_vs_scipy_and_closed_forms():
    rng = np.random.RandomState(0)
    f1 = rng.randn(300, 16) @ rng.randn(16, 16) * 0.3
    f2 = rng.randn(300, 16) @ rng.randn(16, 16) * 0.3 + 0.5
    s1, s2 = M.FeatureStats(), M.FeatureStats()
    for chunk in np.array_split(f1, 4):
        s1.append(torch.from_numpy(chunk))
    s2.append(f2)
    mu1, c1 = s1.mean_cov()
    mu2, c2 = s2.mean_cov()
    np.testing.assert_allclose(c1, np.cov(f1, rowvar=False, bias=True), atol=1e-10)
    # official formula with scipy's sqrtm
    s = scipy_linalg.sqrtm(c1 @ c2)
    exp = np.real(np.square(mu1 - mu2).sum() + np.trace(c1 + c2 - 2 * s))
    assert M.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(exp, rel=1e-8)
    assert M.fid_from_features(f1, f2) == pytest.approx(exp, rel=1e-8)
    assert abs(M.frechet_distance(mu1, c1, mu1, c1)) < 1e-9
    assert M.frechet_distance(mu1, c1, mu1 + 2.0, c1) == pytest.approx(4.0 * 16, rel=1e-9)
    # two isotropic Gaussians: Tr(a I + b I − 2 √(ab) I) = d (√a − √b)²
    d = 16
    assert M.frechet_distance(np.zeros(d), 4 * np.eye(d), np.zeros(d), np.eye(d)) == pytest.approx(d * 1.0)


def test_ids_scores():
    rng = np.random.RandomState(0)
    real = rng.randn(200, 8).astype(np.float32)
    # identical features: every pair has equal decisions -> P-IDS = 0, exactly one of each pair wrong
    pids, uids = M.ids_scores(real, real.copy())
    assert pids == 0.0 and uids == pytest.approx(0.5)
    # well separated: the SVM is always right and fakes always score lower
    pids, uids = M.ids_scores(real + 10, real - 10)
    assert pids == 0.0 and uids == 0.0
    # same distribution, independent draws: the classifier is near chance, P-IDS near 1/2
    pids, uids = M.ids_scores(real, rng.randn(200, 8))
    assert 0.25 < pids < 0.75 and 0.2 < uids < 0.6
    with pytest.raises(ValueError, match="real_feats"):
        M.ids_scores(real, real[:10])


class _FakeInception(nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = x.float().mean(dim=(2, 3))
        return torch.cat([f, f.square()], 1) if return_features else f


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # NVIDIA's file is TorchScript
def test_inception_loading_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MAT_KERNELS_INCEPTION", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt") as e:
        M.InceptionFeatures()
    assert "MAT_KERNELS_INCEPTION" in str(e.value)
    path = tmp_path / "inc.pt"
    torch.jit.script(_FakeInception()).save(str(path))
    monkeypatch.setenv("MAT_KERNELS_INCEPTION", str(path))
    det = M.InceptionFeatures()
    imgs = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    f = det(imgs)
    assert f.shape == (2, 6)
    torch.testing.assert_close(f[:, :3], imgs.float().mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="uint8"):
        det(imgs.float())


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    trunk = nn.Sequential(*M._trunk_layers("alex"))
    state = {f"features.{k}": v for k, v in trunk.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(1)
    torch.save(state, d / "alexnet-owt-7be5be79.pth")
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(lins, d / "alex.pth")
    return d / "alexnet-owt-7be5be79.pth", d / "alex.pth", state, lins


def test_lpips_matches_manual(lpips_files):
    trunk_path, lin_path, state, lins = lpips_files
    net = M.LPIPS("alex", lin_path=lin_path, trunk_path=trunk_path)
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)

    def feats(t):
        t = (t - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        out = []
        t = F.relu(F.conv2d(t, state["features.0.weight"], state["features.0.bias"], stride=4, padding=2)); out.append(t)
        t = F.relu(F.conv2d(F.max_pool2d(t, 3, 2), state["features.3.weight"], state["features.3.bias"], padding=2)); out.append(t)
        t = F.relu(F.conv2d(F.max_pool2d(t, 3, 2), state["features.6.weight"], state["features.6.bias"], padding=1)); out.append(t)
        t = F.relu(F.conv2d(t, state["features.8.weight"], state["features.8.bias"], padding=1)); out.append(t)
        t = F.relu(F.conv2d(t, state["features.10.weight"], state["features.10.bias"], padding=1)); out.append(t)
        return out

    exp = 0
    for i, (a, b) in enumerate(zip(feats(x), feats(y))):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        exp = exp + ((a - b) ** 2 * lins[f"lin{i}.model.1.weight"].view(1, -1, 1, 1)).sum(1).mean(dim=(1, 2))
    got = net(x, y)
    torch.testing.assert_close(got, exp)
    assert (got > 0).all() and torch.equal(net(x, x), torch.zeros(2))


def test_lpips_missing_files(tmp_path, monkeypatch, lpips_files):
    trunk_path, lin_path, _, _ = lpips_files
    monkeypatch.delenv("MAT_KERNELS_LPIPS_LIN", raising=False)
    monkeypatch.delenv("MAT_KERNELS_LPIPS_TRUNK", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        M.LPIPS("alex", lin_path=lin_path)
    with pytest.raises(FileNotFoundError, match="lin_path"):
        M.LPIPS("alex", lin_path=tmp_path / "none.pth", trunk_path=trunk_path)
    with pytest.raises(ValueError, match="net"):
        M.LPIPS("squeeze")
    with pytest.raises(ValueError, match="lin0"):
        M.LPIPS("alex", lin_path=_bad_lin(tmp_path), trunk_path=trunk_path)


def _bad_lin(tmp_path):
    p = tmp_path / "bad_lin.pth"
    torch.save({f"lin{i}.model.1.weight": torch.zeros(1, 3, 1, 1) for i in range(5)}, p)
    return p
