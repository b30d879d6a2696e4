"""Image and mask file I/O for inference, and the conversions between files and network tensors.

Conventions (as in the official ``generate_image.py`` for 8-bit RGB files):
- images enter the network as ``x / 127.5 - 1`` in (1, 3, H, W) float32 (``x / 32767.5 - 1``
  for 16-bit pixels); grayscale is replicated to three channels;
- masks are grayscale / 255 (/ 65535 for 16-bit masks), **not** thresholded, white (1) = known,
  black (0) = hole;
- outputs leave the network through ``round(x * 127.5 + 127.5)`` clamped to [0, 255] (16-bit:
  ``round(x * 32767.5 + 32767.5)`` clamped to [0, 65535]).

Every PIL mode is either converted or refused with a ValueError naming the file
(:func:`decode_image` lists what happens to each); what is written back is described in
:func:`output_pixels`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

PathLike = Union[str, os.PathLike]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

__all__ = ["IMAGE_EXTS", "Picture", "list_images", "image_size", "decode_image", "load_image", "read_image",
           "read_mask", "output_pixels", "write_png", "image_to_tensor", "mask_to_tensor", "tensor_to_image",
           "tensor_to_uint8"]

GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def list_images(folder: PathLike) -> List[Path]:
    """Image files directly inside ``folder``, sorted by file name (the official pairing order)."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                  key=lambda p: p.name)


def image_size(path: PathLike, mask: bool = False) -> Tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels. Raises ValueError for
    a file PIL cannot open and, unless ``mask``, for a mode :func:`decode_image` refuses
    whatever its pixels (float; masks may be float in [0, 1])."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.mode == "F" and not mask:
                raise ValueError(_float_refusal(path))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {os.fspath(path)!r}: {exc}") from None
    return h, w


@dataclass
class Picture:
    """An image file as the network sees it, and what is needed to write the result back.

    rgb: (H, W, 3) uint8, or uint16 for 16-bit greyscale files (the grey value in all three).
    alpha: (H, W) uint8 when the file has transparency (alpha channel or a transparent
        palette entry / colour), else None.
    note: a caveat for the user, e.g. 16-bit colour that PIL decodes to 8 bits; else None.
    """
    rgb: np.ndarray
    alpha: Optional[np.ndarray] = None
    note: Optional[str] = None

    @property
    def greyscale16(self) -> bool:
        return self.rgb.dtype == np.uint16


def _float_refusal(name) -> str:
    return (f"{os.fspath(name)}: 32-bit float pixels (PIL mode F) have no defined white level; "
            f"convert the image to 8- or 16-bit first")


def _rawmode(im: Image.Image) -> str:
    """The pixel layout the file stores (from the decoder tiles; empty once loaded)."""
    for tile in getattr(im, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
        if isinstance(raw, str):
            return raw
    return ""


def decode_image(im: Image.Image, name: str = "image") -> Picture:
    """Decode an open PIL image (any mode) into a :class:`Picture`.

    - 8-bit modes (1, L, P, RGB, RGBX, CMYK, YCbCr, LAB, HSV): PIL's conversion to RGB (CMYK,
      YCbCr, LAB and HSV are not RGB, so their known pixels are kept as that conversion).
    - transparency (LA, La, PA, RGBA, RGBa, P/L/RGB with a transparent entry): PIL's
      conversion to straight RGBA; colour as above, alpha kept in ``alpha``.
    - 16-bit greyscale (I;16, I;16L, I;16B, I;16N, and mode I with values in 0..65535): kept at
      16 bits in a uint16 ``rgb``. Mode I values outside 0..65535 are refused.
    - 32-bit float (F): refused (no white level). A mode PIL cannot convert: refused.
    - 16-bit colour files (RGB/RGBA PNG or TIFF at 16 bits per channel): PIL only decodes them to
      8 bits (their high byte); they are processed at 8 bits and ``note`` says so.
    """
    mode = im.mode
    if mode == "F":
        raise ValueError(_float_refusal(name))
    if mode in GREY16_MODES or mode == "I":
        grey = np.asarray(im)
        if mode == "I" and grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise ValueError(f"{name}: 32-bit integer pixels (PIL mode I) outside 0..65535 "
                             f"(got {grey.min()}..{grey.max()}); only 16-bit values are understood")
        grey = grey.astype(np.uint16)
        return Picture(np.repeat(grey[..., None], 3, axis=2))
    note = None
    if ";16" in _rawmode(im):
        note = (f"{name}: 16-bit colour, which PIL decodes to 8 bits per channel (the high byte); "
                f"it is inpainted and written at 8 bits")
    has_alpha = mode in ALPHA_MODES or "transparency" in im.info
    target = "RGBA" if has_alpha else "RGB"
    try:
        if mode == "La":  # premultiplied: PIL converts it to straight LA only
            im = im.convert("LA")
        arr = np.asarray(im if im.mode == target else im.convert(target), dtype=np.uint8)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{name}: cannot convert PIL mode {mode} to {target}: {exc}") from None
    return Picture(np.ascontiguousarray(arr[..., :3]), arr[..., 3].copy() if has_alpha else None, note)


def load_image(path: PathLike) -> Picture:
    """Read an image file as a :class:`Picture` (see :func:`decode_image`)."""
    try:
        with Image.open(path) as im:
            return decode_image(im, os.fspath(path))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {os.fspath(path)!r}: {exc}") from None


def read_image(path: PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB, or uint16 for 16-bit greyscale files; alpha is dropped (use
    :func:`load_image` to keep it). See :func:`decode_image` for every mode."""
    return load_image(path).rgb


def read_mask(path: PathLike, invert: bool = False) -> np.ndarray:
    """(H, W) float32 in [0, 1]: grayscale / 255 (/ 65535 for 16-bit masks; mode F as is when in
    [0, 1]), 1 = known, 0 = hole (``invert`` swaps them).

    Values are not thresholded (a grey pixel blends input and generated content, as in the
    official code). Colour masks use PIL's ITU-R 601-2 luma, alpha is ignored.
    """
    name = os.fspath(path)
    try:
        with Image.open(path) as im:
            if im.mode in GREY16_MODES or im.mode == "I":
                m = np.asarray(im).astype(np.float64)
                scale = 65535.0
            elif im.mode == "F":
                m, scale = np.asarray(im).astype(np.float64), 1.0
            else:
                m = np.asarray((im.convert("LA") if im.mode == "La" else im).convert("L"), dtype=np.float64)
                scale = 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read mask {name!r}: {exc}") from None
    if m.size and not (m.min() >= 0 and m.max() <= scale):
        raise ValueError(f"mask {name!r}: PIL mode {im.mode} values must lie in [0, {scale:g}], got "
                         f"[{m.min():g}, {m.max():g}]")
    m = (m / scale).astype(np.float32)
    return 1.0 - m if invert else m


def output_pixels(picture: Picture, result: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What is written for ``picture`` inpainted as ``result`` ((H, W, 3), ``picture.rgb``'s dtype)
    under ``mask`` ((H, W) in [0, 1], 1 = known).

    - 16-bit greyscale files: (H, W) uint16, the luma (ITU-R 601-2, as PIL's L) of the
      result; known pixels equal the file's exactly.
    - files with transparency: (H, W, 4) uint8 RGBA; alpha is the file's where the mask is 1,
      opaque where it is 0 (generated content is opaque), blended in between.
    - otherwise the (H, W, 3) result itself.
    """
    known = mask >= 1.0
    if picture.greyscale16:
        grey = np.rint(result.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
        grey = np.clip(grey, 0, 65535).astype(np.uint16)
        grey[known] = picture.rgb[..., 0][known]
        return grey
    if picture.alpha is None:
        return result
    alpha = np.rint(mask * picture.alpha + (1.0 - mask) * 255.0).clip(0, 255).astype(np.uint8)
    alpha[known] = picture.alpha[known]
    return np.concatenate([result, alpha[..., None]], axis=2)


def write_png(path: PathLike, image: np.ndarray) -> None:
    """Write as PNG: (H, W, 3) uint8 (RGB), (H, W, 4) uint8 (RGBA) or (H, W) uint16 (16-bit
    greyscale)."""
    shapes = {(3, np.dtype(np.uint8)): "RGB", (4, np.dtype(np.uint8)): "RGBA", (2, np.dtype(np.uint16)): "I;16"}
    key = (image.shape[2] if image.ndim == 3 else image.ndim, image.dtype) if isinstance(image, np.ndarray) else None
    if key not in shapes:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be (H, W, 3) or (H, W, 4) uint8, or (H, W) uint16, got {got}")
    im = Image.fromarray(np.ascontiguousarray(image))
    if im.mode != shapes[key]:  # pragma: no cover - PIL's array mapping is fixed
        raise ValueError(f"PIL made a {im.mode} image from {key}, expected {shapes[key]}")
    im.save(path, format="PNG")


def _half_range(dtype) -> float:
    if dtype == np.uint8:
        return 127.5
    if dtype == np.uint16:
        return 32767.5
    raise ValueError(f"image must be uint8 or uint16, got {dtype}")


def image_to_tensor(image: np.ndarray, device="cpu") -> torch.Tensor:
    """(H, W, 3) uint8 or uint16 -> (1, 3, H, W) float32 in [-1, 1] (``x / 127.5 - 1``, 16-bit
    ``x / 32767.5 - 1``)."""
    half = _half_range(image.dtype)
    x = torch.from_numpy(np.ascontiguousarray(image).astype(np.float32)).to(device)
    return (x.permute(2, 0, 1) / half - 1).unsqueeze(0)


def mask_to_tensor(mask: np.ndarray, device="cpu") -> torch.Tensor:
    """(H, W) float in [0, 1] -> (1, 1, H, W) float32."""
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(device)[None, None]


def tensor_to_image(x: torch.Tensor, dtype=np.uint8) -> np.ndarray:
    """(1, 3, H, W) float in [-1, 1] -> (H, W, 3) ``dtype`` (uint8 or uint16) via
    ``round(x * half + half)`` clamped to the dtype's range (half = 127.5 or 32767.5)."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be (1, C, H, W), got {tuple(x.shape)}")
    half = _half_range(np.dtype(dtype))
    y = (x[0].permute(1, 2, 0).float() * half + half).round().clamp(0, 2 * half)
    return y.cpu().numpy().astype(dtype)


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [-1, 1] -> (H, W, 3) uint8 via ``round(x * 127.5 + 127.5)``."""
    return tensor_to_image(x, np.uint8)
