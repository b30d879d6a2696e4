"""Image and mask file I/O for inference, and the conversions between files and network tensors.

Conventions (as in the official ``generate_image.py``):
- images are read as uint8 RGB (grayscale replicated, alpha dropped) and enter the network as
  ``x / 127.5 - 1`` in (1, 3, H, W) float32;
- masks are grayscale / 255 (**not** thresholded), white (1) = known, black (0) = hole;
- outputs leave the network through ``round(x * 127.5 + 127.5)`` clamped to [0, 255].
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

PathLike = Union[str, os.PathLike]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

__all__ = ["IMAGE_EXTS", "list_images", "image_size", "read_image", "read_mask", "write_png",
           "image_to_tensor", "mask_to_tensor", "tensor_to_uint8"]


def list_images(folder: PathLike) -> List[Path]:
    """Image files directly inside ``folder``, sorted by file name (the official pairing order)."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                  key=lambda p: p.name)


def image_size(path: PathLike) -> Tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {os.fspath(path)!r}: {exc}") from None
    return h, w


def read_image(path: PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB. Grayscale is replicated to three channels, alpha is dropped (the
    official code keeps the first three channels), palette images are expanded."""
    try:
        with Image.open(path) as im:
            im = im if im.mode == "RGB" else im.convert("RGB")
            return np.array(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {os.fspath(path)!r}: {exc}") from None


def read_mask(path: PathLike, invert: bool = False) -> np.ndarray:
    """(H, W) float32 in [0, 1]: grayscale / 255, 1 = known, 0 = hole (``invert`` swaps them).

    Values are not thresholded (a grey pixel blends input and generated content, as in the
    official code). Colour masks use PIL's ITU-R 601-2 luma, alpha is ignored.
    """
    try:
        with Image.open(path) as im:
            m = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read mask {os.fspath(path)!r}: {exc}") from None
    return 1.0 - m if invert else m


def write_png(path: PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array as PNG."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    Image.fromarray(image, "RGB").save(path, format="PNG")


def image_to_tensor(image: np.ndarray, device="cpu") -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1] (``x / 127.5 - 1``)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    return (x.permute(2, 0, 1).float() / 127.5 - 1).unsqueeze(0)


def mask_to_tensor(mask: np.ndarray, device="cpu") -> torch.Tensor:
    """(H, W) float in [0, 1] -> (1, 1, H, W) float32."""
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(device)[None, None]


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [-1, 1] -> (H, W, 3) uint8 via ``round(x * 127.5 + 127.5)``."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be (1, C, H, W), got {tuple(x.shape)}")
    y = (x[0].permute(1, 2, 0) * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
    return y.cpu().numpy()
