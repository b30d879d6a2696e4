"""Inpainting one image with a MAT generator at any size: ``--fit`` pad, resize or crop (one
window per hole region), the generator's dtype and compilation. :mod:`mat_kernels.cli.inpaint`
(``mat-inpaint``) is the command line around it and describes each mode."""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .data import images as io

__all__ = ["FIT_MODES", "NOISE_MODES", "CROP_MARGIN", "AUTO_PAD_FACTOR", "DTYPES", "prepare_generator", "choose_fit",
           "inpaint_array", "hole_regions", "crop_windows"]

FIT_MODES = ("auto", "pad", "resize", "crop")
CROP_MARGIN = 128  # px of context around each hole region with --fit crop (IOPaint's default)
AUTO_PAD_FACTOR = 2  # --fit auto pads images up to this many times R per side, crops larger ones
NOISE_MODES = ("const", "random", "none")


def _reflect_pad(arr: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    if not (top or bottom or left or right):
        return arr
    pads = ((top, bottom), (left, right)) + ((0, 0),) * (arr.ndim - 2)
    # numpy repeats the reflection when a pad is wider than the image.
    mode = "reflect" if min(arr.shape[:2]) > 1 else "edge"
    return np.pad(arr, pads, mode=mode)


def _centre_pads(size: int, target: int) -> Tuple[int, int]:
    extra = target - size
    return extra // 2, extra - extra // 2


def _run(G, image: torch.Tensor, mask: torch.Tensor, z: torch.Tensor, truncation: float, noise_mode: str):
    c = torch.zeros(image.shape[0], G.c_dim, device=image.device)
    with torch.no_grad():
        # float32 out whatever G computes in (half weights return half images)
        return G(image, mask, z, c, truncation_psi=truncation, noise_mode=noise_mode).float()


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def prepare_generator(G, dtype: str = "fp32", compile: bool = False):
    """G converted to ``dtype`` ("fp32", "bf16", "fp16": weights and activations) and, with
    ``compile``, wrapped by ``torch.compile`` (default inductor backend)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    G = G.to(DTYPES[dtype])
    return torch.compile(G) if compile else G


def choose_fit(H: int, W: int, R: int) -> str:
    """What ``--fit auto`` does for an H x W image and a network of resolution R: 'pad' up to
    AUTO_PAD_FACTOR * R per side (one pass at the image's own scale), 'crop' above (one R x R pass
    per hole region, so a small hole in a large photo costs one network call)."""
    return "pad" if max(H, W) <= AUTO_PAD_FACTOR * R else "crop"


def inpaint_array(G, image: np.ndarray, mask: np.ndarray, z: torch.Tensor, *, fit: str = "pad",
                  truncation: float = 1.0, noise_mode: str = "const",
                  crop_margin: int = CROP_MARGIN) -> np.ndarray:
    """Inpaint one image.

    Args:
        G: generator with ``img_resolution`` R and ``c_dim``; called as
            ``G(img, mask, z, c, truncation_psi=, noise_mode=)`` on (1, 3, h, w) / (1, 1, h, w)
            with h, w multiples of R.
        image: (H, W, 3) uint8 or uint16. mask: (H, W) float in [0, 1], 1 = known.
        z: (1, z_dim) float32 on G's device.
        fit: 'pad', 'resize', 'crop' or 'auto' (see the module docstring and :func:`choose_fit`).
        crop_margin: context around each hole region with 'crop', in pixels.
    Returns:
        (H, W, 3) of ``image``'s dtype; pixels with mask == 1 equal ``image`` exactly.
    """
    if fit not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    H, W = mask.shape
    if image.shape[:2] != (H, W):
        raise ValueError(f"mask is {W}x{H} but the image is {image.shape[1]}x{image.shape[0]}")
    R = int(G.img_resolution)
    device = z.device
    if fit == "auto":
        fit = choose_fit(H, W, R)
    if fit == "crop":
        return _inpaint_crops(G, image, mask, z, truncation=truncation, noise_mode=noise_mode,
                              margin=crop_margin)
    if fit == "pad" or (H, W) == (R, R):
        Hp, Wp = math.ceil(H / R) * R, math.ceil(W / R) * R
        (t, b), (l, r) = _centre_pads(H, Hp), _centre_pads(W, Wp)
        img_p = io.image_to_tensor(_reflect_pad(image, t, b, l, r), device)
        mask_p = io.mask_to_tensor(_reflect_pad(mask, t, b, l, r), device)
        if (Hp, Wp) != (R, R) and noise_mode == "const":
            noise_mode = "random"  # the constant noise maps only exist at R x R
        out = _run(G, img_p, mask_p, z, truncation, noise_mode)[..., t:t + H, l:l + W]
    else:
        S = max(H, W)
        (t, b), (l, r) = _centre_pads(H, S), _centre_pads(W, S)
        img_s = io.image_to_tensor(_reflect_pad(image, t, b, l, r), device)
        mask_s = io.mask_to_tensor(_reflect_pad(mask, t, b, l, r), device)
        img_r = F.interpolate(img_s, size=(R, R), mode="bicubic", align_corners=False,
                              antialias=S > R).clamp(-1, 1)
        # A low-resolution pixel is only as known as the least known pixel it covers, so thin
        # holes never vanish when downscaling (their content would otherwise leak through).
        mask_r = -F.adaptive_max_pool2d(-mask_s, (R, R))
        out_r = _run(G, img_r, mask_r, z, truncation, noise_mode)
        out_s = F.interpolate(out_r, size=(S, S), mode="bicubic", align_corners=False, antialias=S < R)
        out = out_s[..., t:t + H, l:l + W]
        m = io.mask_to_tensor(mask, device)
        out = io.image_to_tensor(image, device) * m + out * (1 - m)
    result = io.tensor_to_image(out, image.dtype)
    known = mask >= 1.0
    result[known] = image[known]  # bit-exact known pixels whatever the float round trip did
    return result


def hole_regions(mask: np.ndarray, margin: int, cell: int = 8) -> Tuple[np.ndarray, List[Tuple[int, int, int, int]]]:
    """The hole regions of ``mask`` (H, W), 1 = known, and their boxes.

    Hole pixels (mask < 1) are grouped on a grid of ``cell`` x ``cell`` blocks: blocks holding a
    hole pixel that touch (8-connectivity) form one region, and regions whose boxes grown by
    ``margin`` overlap are merged. Returns (owner, boxes): owner (H, W) int32 gives each hole
    pixel its region's index (-1 for known pixels), boxes[i] = (top, bottom, left, right) of
    region i's hole pixels grown by ``margin`` and clipped to the image.
    """
    H, W = mask.shape
    hole = mask < 1.0
    gh, gw = -(-H // cell), -(-W // cell)
    padded = np.zeros((gh * cell, gw * cell), bool)
    padded[:H, :W] = hole
    cells = padded.reshape(gh, cell, gw, cell).any(axis=(1, 3))
    label = np.full((gh, gw), -1, np.int64)
    n = 0
    for start in zip(*np.nonzero(cells)):
        if label[start] >= 0:
            continue
        label[start] = n
        stack = [start]
        while stack:
            i, j = stack.pop()
            for a in (i - 1, i, i + 1):
                for b in (j - 1, j, j + 1):
                    if 0 <= a < gh and 0 <= b < gw and cells[a, b] and label[a, b] < 0:
                        label[a, b] = n
                        stack.append((a, b))
        n += 1
    owner = np.where(hole, np.repeat(np.repeat(label, cell, 0), cell, 1)[:H, :W], -1).astype(np.int32)
    boxes = []
    for k in range(n):
        ys, xs = np.nonzero(owner == k)
        boxes.append([ys.min(), ys.max() + 1, xs.min(), xs.max() + 1])
    group = list(range(n))
    merged = True
    while merged:  # merge regions whose grown boxes overlap until none do
        merged = False
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                A, B = boxes[a], boxes[b]
                if (A[0] - margin < B[1] + margin and B[0] - margin < A[1] + margin
                        and A[2] - margin < B[3] + margin and B[2] - margin < A[3] + margin):
                    boxes[a] = [min(A[0], B[0]), max(A[1], B[1]), min(A[2], B[2]), max(A[3], B[3])]
                    del boxes[b]
                    group = [a if g == b else (g - 1 if g > b else g) for g in group]
                    merged = True
                    break
            if merged:
                break
    if n:
        owner = np.where(owner >= 0, np.asarray(group, np.int32)[np.maximum(owner, 0)], -1).astype(np.int32)
    boxes = [(max(t - margin, 0), min(b + margin, H), max(l - margin, 0), min(r + margin, W))
             for t, b, l, r in boxes]
    return owner, boxes


def _window(lo: int, hi: int, size: int, limit: int) -> Tuple[int, int]:
    """A span of ``size`` (at most ``limit``) covering [lo, hi), centred on it, inside [0, limit)."""
    size = min(size, limit)
    start = min(max((lo + hi - size) // 2, 0), limit - size)
    return start, start + size


def crop_windows(mask: np.ndarray, R: int, margin: int = CROP_MARGIN):
    """What ``--fit crop`` runs: (owner, [(region, (top, bottom, left, right)), ...]). Each
    window holds its region's box (hole pixels plus ``margin``): R x R at the photo's own scale
    when the box fits (less where the photo is smaller), else the smallest square around the box
    (clipped to the photo), which the network sees resized to R x R."""
    H, W = mask.shape
    owner, boxes = hole_regions(mask, margin)
    windows = []
    for k, (t, b, l, r) in enumerate(boxes):
        side = max(R, b - t, r - l)
        (wt, wb), (wl, wr) = _window(t, b, side, H), _window(l, r, side, W)
        windows.append((k, (wt, wb, wl, wr)))
    return owner, windows


def _inpaint_crops(G, image: np.ndarray, mask: np.ndarray, z: torch.Tensor, *, truncation: float,
                   noise_mode: str, margin: int) -> np.ndarray:
    """--fit crop: one network pass per hole region, on its window (see :func:`crop_windows`).

    A window is inpainted with 'pad' when it is R x R or smaller (at the photo's own scale) and
    with 'resize' when larger (only hole pixels are taken from the resized result). Only the
    region's own hole pixels are pasted back. Holes of other regions inside a window are holes
    to the network too (their pixels are unknown) until their own region is done, after which
    later windows see them filled.
    """
    R = int(G.img_resolution)
    owner, windows = crop_windows(mask, R, margin)
    result = image.copy()
    mask_now = mask.astype(np.float32, copy=True)
    for k, (t, b, l, r) in windows:
        sub_img, sub_mask = result[t:b, l:r], mask_now[t:b, l:r]
        big = (b - t) > R or (r - l) > R
        out = inpaint_array(G, sub_img, sub_mask, z, fit="resize" if big else "pad",
                            truncation=truncation, noise_mode=noise_mode)
        mine = owner[t:b, l:r] == k
        result[t:b, l:r][mine] = out[mine]
        mask_now[t:b, l:r][mine] = 1.0
    known = mask >= 1.0
    result[known] = image[known]
    return result
