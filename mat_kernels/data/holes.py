"""MAT's free-form training masks and mask files.

Convention everywhere: float32, **1 = known pixel, 0 = hole**.

``random_mask(s)`` reproduces ``datasets/mask_generator_{256,512}[_small].RandomMask`` draw for
draw: rectangles, then brush strokes rasterised with PIL's ``ImageDraw`` (the exact pixels depend
on PIL's line/ellipse rasteriser), two discarded ``random()`` calls per stroke, the two whole-map
flips, and rejection of masks whose hole ratio is not strictly inside ``hole_range``. The only
difference from the official function is where random numbers come from:

- ``rng=None`` (default): a fresh ``np.random.RandomState(seed)``, so a call is reproducible on its
  own and touches no global state;
- ``rng=<RandomState or Generator>``: draws from it (a ``Generator``'s stream differs from a
  ``RandomState``'s, but the order of draws is the same);
- ``rng="global"`` (or ``official_random_mask``): numpy's global RNG, in the official order, so
  ``np.random.seed(k); official_random_mask(512)`` equals the official ``RandomMask(512)`` after
  ``np.random.seed(k)``.
"""
from __future__ import annotations

import math
import os
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["MASK_VARIANTS", "random_mask", "official_random_mask", "batch_random_mask",
           "RandomMask", "BatchRandomMask", "check_mask_args", "load_mask", "list_mask_files", "MaskFolder"]

# variant -> (max tries of s/2 boxes, max tries of s boxes, max brush strokes), scaled by coef.
# randint(n) draws 0..n-1, so (5, 3, 9) means up to 4 small boxes, 2 large boxes, 8 strokes.
MASK_VARIANTS = {
    "512": (5, 3, 9),
    "256": (4, 2, 8),
    "512_small": (3, 2, 4),
    "256_small": (2, 2, 3),
}

# Brush-stroke constants of RandomBrush (identical in all four variants).
_MIN_VERTEX, _MAX_VERTEX = 4, 18
_MEAN_ANGLE = 2 * math.pi / 5
_ANGLE_RANGE = 2 * math.pi / 15
_MIN_WIDTH, _MAX_WIDTH = 12, 48

RngLike = Union[None, str, np.random.RandomState, np.random.Generator]


class _Draws:
    """The four numpy draws the generator uses, over RandomState, Generator or the global RNG."""

    def __init__(self, rng):
        if isinstance(rng, np.random.Generator):
            self.randint = rng.integers         # same [low, high) semantics as RandomState.randint
        else:                                   # RandomState or the np.random module itself
            self.randint = rng.randint
        self.uniform = rng.uniform
        self.normal = rng.normal
        self.random = rng.random


def _resolve_rng(rng: RngLike, seed: int) -> _Draws:
    if rng is None:
        return _Draws(np.random.RandomState(seed))
    if isinstance(rng, str):
        if rng != "global":
            raise ValueError(f"rng: expected None, 'global', a numpy RandomState or Generator; got {rng!r}")
        return _Draws(np.random)
    if isinstance(rng, (np.random.RandomState, np.random.Generator)):
        return _Draws(rng)
    raise TypeError(f"rng: expected None, 'global', a numpy RandomState or Generator; got {type(rng).__name__}")


def _resolve_variant(variant: str, s: int) -> Tuple[int, int, int]:
    if variant == "auto":
        # dataset_256.py uses mask_generator_256, dataset_512.py mask_generator_512.
        variant = "256" if s <= 256 else "512"
    if variant not in MASK_VARIANTS:
        raise ValueError(f"variant: expected 'auto' or one of {sorted(MASK_VARIANTS)}, got {variant!r}")
    return MASK_VARIANTS[variant]


def _brush(draws: _Draws, max_tries: int, s: int) -> np.ndarray:
    """RandomBrush: (s, s) uint8 map, 1 where a stroke was painted."""
    average_radius = math.sqrt(s * s + s * s) / 8
    canvas = Image.new("L", (s, s), 0)
    for _ in range(draws.randint(max_tries)):
        num_vertex = draws.randint(_MIN_VERTEX, _MAX_VERTEX)
        angle_min = _MEAN_ANGLE - draws.uniform(0, _ANGLE_RANGE)
        angle_max = _MEAN_ANGLE + draws.uniform(0, _ANGLE_RANGE)
        angles = []
        for i in range(num_vertex):
            a = draws.uniform(angle_min, angle_max)
            angles.append(2 * math.pi - a if i % 2 == 0 else a)
        # x is drawn before y; both bounds are s because the canvas is square.
        vertices = [(int(draws.randint(0, s)), int(draws.randint(0, s)))]
        for i in range(num_vertex):
            # scale is floor(R / 2): the official code uses floor division on a float.
            r = np.clip(draws.normal(loc=average_radius, scale=average_radius // 2), 0, 2 * average_radius)
            new_x = np.clip(vertices[-1][0] + r * math.cos(angles[i]), 0, s)
            new_y = np.clip(vertices[-1][1] + r * math.sin(angles[i]), 0, s)
            vertices.append((int(new_x), int(new_y)))
        draw = ImageDraw.Draw(canvas)
        width = int(draws.uniform(_MIN_WIDTH, _MAX_WIDTH))
        draw.line(vertices, fill=1, width=width)
        half = width // 2
        for vx, vy in vertices:
            draw.ellipse((vx - half, vy - half, vx + half, vy + half), fill=1)
        # The official code computes two PIL transposes here and throws the results away; the two
        # draws still advance the stream, so they are kept to stay in step with it.
        draws.random()
        draws.random()
    brush = np.asarray(canvas, np.uint8)
    if draws.random() > 0.5:
        brush = np.flip(brush, 0)
    if draws.random() > 0.5:
        brush = np.flip(brush, 1)
    return brush


def check_mask_args(s: int, hole_range: Sequence[float], variant: str) -> Tuple[int, int, int]:
    """Validate random_mask's arguments; returns the scaled (small box, large box, stroke) max tries."""
    if not isinstance(s, (int, np.integer)) or s < 2:
        raise ValueError(f"s: expected an integer side length >= 2, got {s!r}")
    if len(hole_range) != 2 or not (0.0 <= hole_range[0] < hole_range[1] <= 1.0):
        raise ValueError(f"hole_range: expected (lo, hi) with 0 <= lo < hi <= 1, got {tuple(hole_range)!r}")
    small_tries, large_tries, brush_tries = _resolve_variant(variant, int(s))
    coef = min(hole_range[0] + hole_range[1], 1.0)
    tries = (int(small_tries * coef), int(large_tries * coef), int(brush_tries * coef))
    if min(tries) < 1:
        # The official code would call randint(0) here and crash.
        raise ValueError(f"hole_range: lo + hi = {coef:.3g} leaves no boxes or strokes for variant "
                         f"{variant!r} (max tries {tries}); use a larger range")
    return tries


def random_mask(s: int, hole_range: Sequence[float] = (0.0, 1.0), *, variant: str = "auto",
                rng: RngLike = None, seed: int = 0) -> np.ndarray:
    """One free-form mask as MAT trains with.

    Args:
        s: side length in pixels.
        hole_range: (lo, hi); masks are redrawn until lo < hole ratio < hi (strict, so an all-known
            mask is never returned). ``lo + hi`` below 1 also scales down the numbers of boxes and
            strokes (``coef``), as in the official code.
        variant: '512', '256', '512_small', '256_small' (which official file's constants), or
            'auto': '256' for s <= 256, else '512'.
        rng: see the module docstring. seed: used only when rng is None.

    Returns:
        (1, s, s) float32 numpy array, 1 = known, 0 = hole.
    """
    tries = check_mask_args(s, hole_range, variant)
    s = int(s)
    draws = _resolve_rng(rng, seed)
    lo, hi = hole_range
    while True:
        mask = np.ones((s, s), np.uint8)
        for max_tries, max_size in ((tries[0], s // 2), (tries[1], s)):
            for _ in range(draws.randint(max_tries)):
                w, h = draws.randint(max_size), draws.randint(max_size)
                ww, hh = w // 2, h // 2
                x, y = draws.randint(-ww, s - w + ww), draws.randint(-hh, s - h + hh)
                mask[max(y, 0):min(y + h, s), max(x, 0):min(x + w, s)] = 0
        mask = np.logical_and(mask, 1 - _brush(draws, tries[2], s))
        hole_ratio = 1 - np.mean(mask)
        if hole_ratio <= lo or hole_ratio >= hi:
            continue  # rejected; the stream keeps advancing
        return mask[np.newaxis].astype(np.float32)


def official_random_mask(s: int, hole_range: Sequence[float] = (0.0, 1.0), variant: str = "auto") -> np.ndarray:
    """``random_mask`` drawing from numpy's global RNG in the official order."""
    return random_mask(s, hole_range, variant=variant, rng="global")


def batch_random_mask(batch_size: int, s: int, hole_range: Sequence[float] = (0.0, 1.0), *,
                      variant: str = "auto", rng: RngLike = None, seed: int = 0) -> np.ndarray:
    """(batch_size, 1, s, s) float32 masks drawn one after the other from the same stream."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if rng is None:
        rng = np.random.RandomState(seed)  # one stream for the whole batch, not `seed` per mask
    return np.stack([random_mask(s, hole_range, variant=variant, rng=rng) for _ in range(batch_size)])


# Official names, drawing from the global RNG exactly like the released code.
def RandomMask(s, hole_range=(0, 1)):  # noqa: N802 (official name)
    """Official-name alias: ``official_random_mask(s, hole_range)``."""
    return official_random_mask(s, hole_range)


def BatchRandomMask(batch_size, s, hole_range=(0, 1)):  # noqa: N802 (official name)
    """Official-name alias drawing from numpy's global RNG."""
    return batch_random_mask(batch_size, s, hole_range, rng="global")


# ---------------------------------------------------------------------------------------------
# Mask files
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def load_mask(path: Union[str, os.PathLike], threshold: Optional[float] = None) -> np.ndarray:
    """Read a mask image as (1, H, W) float32: grayscale / 255, white (255) = known, black = hole.

    Like the official ``generate_image.py`` the values are *not* thresholded by default (a grey
    pixel stays fractional). ``threshold=t`` returns ``(value > t)`` as 0/1 instead.
    Colour images are converted with PIL's ITU-R 601-2 luma (the same weights as cv2's
    grayscale read; rounding of mid-tones may differ by one level).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: mask file {os.fspath(path)!r} does not exist")
    with Image.open(path) as im:
        gray = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    if threshold is not None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold: expected a value in [0, 1), got {threshold!r}")
        gray = (gray > threshold).astype(np.float32)
    return gray[np.newaxis]


def list_mask_files(folder: Union[str, os.PathLike]) -> List[str]:
    """Image files directly inside ``folder``, sorted by name (the official pairing order)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder: mask folder {os.fspath(folder)!r} does not exist")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(_IMAGE_EXTS))
    if not names:
        raise FileNotFoundError(f"folder: no mask images ({', '.join(_IMAGE_EXTS)}) in {os.fspath(folder)!r}")
    return [os.path.join(folder, f) for f in names]


class MaskFolder:
    """Masks read from a folder, paired with images by sorted index.

    ``MaskFolder(folder)[i]`` is the (1, H, W) float32 mask of the i-th file in name order.
    """

    def __init__(self, folder: Union[str, os.PathLike], threshold: Optional[float] = None):
        self.files = list_mask_files(folder)
        self.threshold = threshold

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> np.ndarray:
        return load_mask(self.files[idx], self.threshold)

    def __iter__(self) -> Iterable[np.ndarray]:
        return (self[i] for i in range(len(self)))
