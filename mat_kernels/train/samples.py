"""Sample grids of ``mat-train``: one row per image, labelled columns (input | output | ground truth)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["COLUMNS", "labelled_grid"]

COLUMNS = ("input", "output", "ground truth")
_SHORT = {"input": "in", "output": "out", "ground truth": "real"}


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)   # scalable with FreeType (Pillow >= 10.1)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _header(width: int, labels: Sequence[str]) -> np.ndarray:
    """(h, len(labels) * width, 3) uint8: each label centred over its column, black on white.
    The font shrinks to fit the column; labels that still do not fit are abbreviated."""
    from PIL import Image, ImageDraw
    size = max(8, min(16, width // 10))
    font = _font(size)
    while size > 6 and max(font.getlength(t) for t in labels) > width - 2:
        size -= 1
        font = _font(size)
    if max(font.getlength(t) for t in labels) > width - 2:
        labels = [_SHORT.get(t, t) for t in labels]
    h = size + 6
    img = Image.new("RGB", (width * len(labels), h), "white")
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(labels):
        x = i * width + (width - font.getlength(text)) / 2
        draw.text((max(x, i * width), 2), text, fill="black", font=font)
    return np.asarray(img)


def labelled_grid(rows: np.ndarray, labels: Sequence[str] = COLUMNS) -> np.ndarray:
    """(N, H, len(labels) * W, 3) uint8 rows -> one (header + N * H, len(labels) * W, 3) image
    with a header row naming the columns."""
    if rows.ndim != 4 or rows.shape[-1] != 3 or rows.shape[2] % len(labels):
        raise ValueError(f"rows: expected (N, H, {len(labels)} * W, 3) uint8, got {tuple(rows.shape)}")
    body = rows.reshape(-1, rows.shape[2], 3)
    return np.concatenate([_header(rows.shape[2] // len(labels), labels), body], axis=0)
