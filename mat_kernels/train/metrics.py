"""Inpainting metrics as MAT reports them.

Per-image pixel metrics on batched (B, C, H, W) tensors, one value per image, computed in float64:

- ``l1``, ``mse`` (``l2``): mean over C·H·W of |x − y| and (x − y)².
- ``psnr(x, y, data_range)``: 10·log10(R² / MSE) (= 20·log10(R/√MSE)), +inf when MSE = 0.
- ``ssim(x, y, data_range)``: 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, population
  (biased) local variances, per channel, **valid** filtering (no padded border), mean over
  channels and pixels. Valid filtering is what both the official evaluation (cv2.filter2D then a
  5-pixel crop on every side) and ``skimage.metrics.structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=R, channel_axis=...)`` (reflect-padded
  filtering then the same crop) compute, so the three agree. Images need H, W >= 11.

The official numbers use 8-bit images: ``psnr(a, b, data_range=255)`` on uint8 tensors, or
``data_range=1.0`` on images /255 (equal); L1 is reported on images /255.

Distribution metrics, with weights supplied locally (nothing is downloaded at run time):

- FID, P-IDS, U-IDS: NVIDIA's TorchScript Inception-v3 ``inception-2015-12-05.pt`` (the file the
  official code uses), loaded with ``torch.jit.load`` so no torchvision or torch-fidelity is
  needed; 2048-d pool features on uint8 images; mean and population covariance in float64;
  FID via the eigenvalues of √Σ₁ Σ₂ √Σ₁ (Tr √(Σ₁Σ₂) without a complex sqrtm). P-IDS/U-IDS with
  scikit-learn's ``LinearSVC(dual=False)``, imported lazily.
- LPIPS (v0.1): the ``lpips`` package's linear-layer files (``weights/v0.1/{alex,vgg}.pth``, shipped
  inside its wheel) on top of an AlexNet / VGG16 trunk built here with torchvision's parameter
  names, reading torchvision's ImageNet weight files. The ``lpips`` package itself imports
  torchvision, which cannot be installed beside a CPU-only torch pin, so it is only used as the
  place the linear layers come from (found without importing it).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .weights import find_weight_file

__all__ = ["l1", "mse", "l2", "psnr", "ssim", "gaussian_window",
           "FeatureStats", "frechet_distance", "ids_scores", "InceptionFeatures", "find_inception_weights",
           "fid_from_features", "LPIPS", "to_uint8"]

PathLike = Union[str, os.PathLike]


def _pair(x: torch.Tensor, y: torch.Tensor, name: str = "x, y"):
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: expected tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"{name}: expected two (B, C, H, W) tensors of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x.double(), y.double()


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) mean |x − y| per image (float64)."""
    x, y = _pair(x, y)
    return (x - y).abs().mean(dim=(1, 2, 3))


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) mean (x − y)² per image (float64)."""
    x, y = _pair(x, y)
    return (x - y).square().mean(dim=(1, 2, 3))


l2 = mse


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B,) PSNR in dB per image, +inf where the images are equal."""
    if not data_range > 0:
        raise ValueError(f"data_range: expected a positive number, got {data_range!r}")
    err = mse(x, y)
    return 10.0 * torch.log10(data_range ** 2 / err)  # err = 0 gives +inf, like the official


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """(size, size) normalised Gaussian, the outer product of the 1-D kernel (cv2.getGaussianKernel)."""
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-r.square() / (2 * sigma * sigma))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """(B,) SSIM per image: Gaussian-weighted, valid region only, mean over channels and pixels."""
    if not data_range > 0:
        raise ValueError(f"data_range: expected a positive number, got {data_range!r}")
    x, y = _pair(x, y)
    B, C, H, W = x.shape
    if H < win_size or W < win_size:
        raise ValueError(f"x, y: SSIM needs H, W >= {win_size}, got {H}x{W}")
    w = gaussian_window(win_size, sigma).to(x.device).expand(C, 1, win_size, win_size)

    def filt(t):
        return F.conv2d(t, w, groups=C)  # valid: (B, C, H-10, W-10)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x.square()
    var_y = filt(y * y) - mu_y.square()
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    return (num / den).mean(dim=(1, 2, 3))


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 as the in-training metrics do: ((x+1)·127.5).clamp(0,255).round()."""
    return ((img.float() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# FID / P-IDS / U-IDS
class FeatureStats:
    """Running float64 mean / population covariance of feature rows, optionally keeping them all."""

    def __init__(self, capture_all: bool = False):
        self.capture_all = capture_all
        self.n = 0
        self.sum = None
        self.sum_outer = None
        self.rows = []

    def append(self, feats: Union[torch.Tensor, np.ndarray]) -> None:
        f = np.asarray(feats.detach().cpu() if isinstance(feats, torch.Tensor) else feats, dtype=np.float64)
        if f.ndim != 2:
            raise ValueError(f"feats: expected (N, D) features, got shape {f.shape}")
        if self.sum is None:
            self.sum = np.zeros(f.shape[1])
            self.sum_outer = np.zeros((f.shape[1], f.shape[1]))
        elif f.shape[1] != self.sum.shape[0]:
            raise ValueError(f"feats: expected {self.sum.shape[0]} features per row, got {f.shape[1]}")
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.sum_outer += f.T @ f
        if self.capture_all:
            self.rows.append(f.astype(np.float32))

    def mean_cov(self) -> Tuple[np.ndarray, np.ndarray]:
        if self.n == 0:
            raise ValueError("no features were appended")
        mean = self.sum / self.n
        return mean, self.sum_outer / self.n - np.outer(mean, mean)

    def all(self) -> np.ndarray:
        if not self.capture_all:
            raise ValueError("capture_all=False: the features were not kept")
        return np.concatenate(self.rows)


def _sym_sqrt(a: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((a + a.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2·√(Σ₁Σ₂)) in float64.

    Tr √(Σ₁Σ₂) is the sum of square roots of the eigenvalues of √Σ₁ Σ₂ √Σ₁ (a similar, symmetric
    PSD matrix), which equals the real part of the trace of scipy's sqrtm(Σ₁Σ₂) used officially.
    """
    mu1, mu2 = (torch.as_tensor(np.asarray(m), dtype=torch.float64) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(np.asarray(s), dtype=torch.float64) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"mu/sigma: inconsistent shapes {tuple(mu1.shape)}, {tuple(s1.shape)}, "
                         f"{tuple(mu2.shape)}, {tuple(s2.shape)}")
    r1 = _sym_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt)


def ids_scores(real_feats, fake_feats) -> Tuple[float, float]:
    """(P-IDS, U-IDS) as in the official evaluation, with rows of real/fake paired by index.

    A LinearSVC(dual=False) is fit on [real; fake] with labels 1/0. U-IDS = its error rate on the
    same set; P-IDS = fraction of pairs i with decision(fake_i) > decision(real_i).
    """
    try:
        import sklearn.svm
    except ImportError as exc:
        raise ImportError("P-IDS/U-IDS need scikit-learn (pip install scikit-learn)") from exc
    real = np.asarray(real_feats, dtype=np.float32)
    fake = np.asarray(fake_feats, dtype=np.float32)
    if real.ndim != 2 or real.shape != fake.shape:
        raise ValueError(f"real_feats, fake_feats: expected two (N, D) arrays of equal shape, got {real.shape}, {fake.shape}")
    svm = sklearn.svm.LinearSVC(dual=False)
    inputs = np.concatenate([real, fake])
    targets = np.array([1] * len(real) + [0] * len(fake))
    svm.fit(inputs, targets)
    uids = 1 - svm.score(inputs, targets)
    pids = np.mean(svm.decision_function(fake) > svm.decision_function(real))
    return float(pids), float(uids)


INCEPTION_FILENAME = "inception-2015-12-05.pt"


def find_inception_weights(path: Optional[PathLike] = None) -> str:
    """NVIDIA's TorchScript Inception file: ``path``, ``$MAT_KERNELS_INCEPTION``, or torch hub's folder."""
    return find_weight_file(path, arg="path", env="MAT_KERNELS_INCEPTION", filename=INCEPTION_FILENAME,
                            what="Inception weights for FID/P-IDS/U-IDS",
                            source="NVIDIA's TorchScript (StyleGAN2-ADA metrics) file")

class InceptionFeatures:
    """2048-d Inception pool features of uint8 (B, 3, H, W) images (resized inside the TorchScript)."""

    def __init__(self, path: Optional[PathLike] = None, device: Union[str, torch.device] = "cpu"):
        self.path = find_inception_weights(path)
        self.net = torch.jit.load(self.path, map_location=device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        return self.net(images.to(self.device), return_features=True)


def fid_from_features(real_feats, fake_feats) -> float:
    """FID between two (N, D) feature sets."""
    a, b = FeatureStats(), FeatureStats()
    a.append(real_feats)
    b.append(fake_feats)
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


# ---------------------------------------------------------------------------------------------
# LPIPS
_LPIPS_TRUNKS = {
    # trunk: (torchvision weight file, layer list, slice ends (exclusive), channels)
    "alex": ("alexnet-owt-7be5be79.pth", "alex", (2, 5, 8, 10, 12), (64, 192, 384, 256, 256)),
    "vgg": ("vgg16-397923af.pth", "vgg16", (4, 9, 16, 23, 30), (64, 128, 256, 512, 512)),
}


def _trunk_layers(kind: str):
    if kind == "alex":
        return [nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
                nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1),
                nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU()]
    layers, c = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return layers


def _lpips_lin_file(net: str, lin_path: Optional[PathLike]) -> str:
    if lin_path is not None:
        if os.path.isfile(lin_path):
            return os.fspath(lin_path)
        raise FileNotFoundError(f"lin_path: LPIPS linear-layer file {os.fspath(lin_path)!r} does not exist")
    tried = []
    env = os.environ.get("MAT_KERNELS_LPIPS_LIN")
    if env:
        if os.path.isfile(env):
            return env
        tried.append(f"$MAT_KERNELS_LPIPS_LIN={env}")
    spec = importlib.util.find_spec("lpips")  # locates the package without importing it (it imports torchvision)
    if spec is not None and spec.origin:
        f = os.path.join(os.path.dirname(spec.origin), "weights", "v0.1", f"{net}.pth")
        if os.path.isfile(f):
            return f
        tried.append(f)
    else:
        tried.append("the lpips package (not installed)")
    raise FileNotFoundError(
        f"LPIPS linear layers weights/v0.1/{net}.pth not found (looked at: {', '.join(tried)}). Nothing is "
        f"downloaded: `pip install --no-deps lpips` (its wheel ships the file) or point MAT_KERNELS_LPIPS_LIN "
        f"(or lin_path) at it.")


def _lpips_trunk_file(net: str, trunk_path: Optional[PathLike]) -> str:
    return find_weight_file(trunk_path, arg="trunk_path", env="MAT_KERNELS_LPIPS_TRUNK",
                            filename=_LPIPS_TRUNKS[net][0], what=f"LPIPS {net} trunk weights",
                            source="torchvision's ImageNet file")

class LPIPS(nn.Module):
    """LPIPS v0.1 distance, per image. forward(x, y): (B, 3, H, W) in [-1, 1] -> (B,).

    Args:
        net: 'alex' (what MAT reports) or 'vgg'.
        lin_path: the lpips linear-layer file (default: $MAT_KERNELS_LPIPS_LIN, else the file shipped in
            an installed ``lpips`` package). trunk_path: torchvision's AlexNet/VGG16 ImageNet weights
            (default: $MAT_KERNELS_LPIPS_TRUNK, else torch hub's checkpoint folder).
    """

    def __init__(self, net: str = "alex", lin_path: Optional[PathLike] = None, trunk_path: Optional[PathLike] = None):
        super().__init__()
        if net not in _LPIPS_TRUNKS:
            raise ValueError(f"net: expected 'alex' or 'vgg', got {net!r}")
        _, _, ends, chans = _LPIPS_TRUNKS[net]
        lin_file = _lpips_lin_file(net, lin_path)
        trunk_file = _lpips_trunk_file(net, trunk_path)
        self.features = nn.Sequential(*_trunk_layers(net)[:ends[-1]])
        self.ends = ends
        trunk = torch.load(trunk_file, map_location="cpu", weights_only=True)
        own = self.features.state_dict()
        missing = [f"features.{k}" for k in own if f"features.{k}" not in trunk]
        if missing:
            raise KeyError(f"trunk_path: {trunk_file!r} is not torchvision's {net} state dict; missing {missing[:4]}")
        self.features.load_state_dict({k: trunk[f"features.{k}"] for k in own})
        lins = torch.load(lin_file, map_location="cpu", weights_only=True)
        try:
            ws = [lins[f"lin{i}.model.1.weight"] for i in range(5)]
        except KeyError as exc:
            raise KeyError(f"lin_path: {lin_file!r} is not an lpips v0.1 linear-layer file ({exc})") from None
        for i, (w, c) in enumerate(zip(ws, chans)):
            if tuple(w.shape) != (1, c, 1, 1):
                raise ValueError(f"lin_path: lin{i} has shape {tuple(w.shape)}, expected {(1, c, 1, 1)} for net={net!r}")
            self.register_buffer(f"lin{i}", w.float())
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def _feats(self, x):
        x = (x - self.shift) / self.scale
        out, start = [], 0
        for end in self.ends:
            for layer in self.features[start:end]:
                x = layer(x)
            out.append(x)
            start = end
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x, y: expected (B, 3, H, W) of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        total = 0
        for i, (fx, fy) in enumerate(zip(self._feats(x.float()), self._feats(y.float()))):
            nx = fx / (fx.square().sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.square().sum(1, keepdim=True).sqrt() + 1e-10)
            d = F.conv2d((nx - ny).square(), getattr(self, f"lin{i}"))
            total = total + d.mean(dim=(2, 3))
        return total.flatten()
