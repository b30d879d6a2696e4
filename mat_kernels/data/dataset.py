"""Image-folder dataset for MAT training, deterministic per (seed, epoch, index).

Each item is read with PIL (grayscale replicated to RGB, alpha dropped), padded at the bottom/right
only with cv2's BORDER_REFLECT rule (edge pixel repeated: ``fedcba|abcdef|fedcba``) when a side is
shorter than ``resolution``, randomly cropped to ``resolution``², optionally mirrored (``mirror=True``
doubles the dataset with flipped copies, as the official ``--mirror``), and paired with a fresh
``random_mask`` (MAT's free-form generator). The crop offsets and the mask come from one
``np.random.RandomState`` seeded from (seed, epoch, index), so an item never depends on worker
processes, on what was read before, or on the global RNG: resuming at any step replays the same
data. (The official loader draws crop offsets from Python's ``random`` and masks from numpy's
global RNG, so its stream depends on worker scheduling.)

``StepSampler`` yields the (epoch, index) keys of a run in order: per epoch a permutation seeded
from (seed, epoch); global sample position p = step·batch + k; rank r of W takes the positions
k in [r·batch/W, (r+1)·batch/W) of each step. It can start at any step.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .holes import MaskFolder, check_mask_args, random_mask
from .images import load_image as read_picture

__all__ = ["list_image_files", "load_image", "reflect_pad_bottom_right", "ImageFolderMaskDataset", "StepSampler",
           "item_rng"]


def list_image_files(root: Union[str, os.PathLike]) -> List[str]:
    """Image files under ``root`` (recursively), sorted by relative path (official order)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"path: image folder {os.fspath(root)!r} does not exist")
    Image.init()
    exts = {e.lower() for e in Image.EXTENSION}
    rel = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
                 if os.path.splitext(f)[1].lower() in exts)
    if not rel:
        raise FileNotFoundError(f"path: no image files found in {os.fspath(root)!r}")
    return [os.path.join(root, r) for r in rel]


def load_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """(H, W, 3) uint8 for training: every mode decoded as :func:`mat_kernels.data.images.decode_image`
    does (CMYK, palette, 16-bit greyscale, ... ; float images refused), alpha dropped, and 16-bit
    greyscale rounded to 8 bits (``round(v / 257)``, so 65535 is 255), since the training pipeline
    and its augmentations work on 8-bit images as the official one does."""
    rgb = read_picture(path).rgb
    if rgb.dtype == np.uint16:
        rgb = np.rint(rgb / 257.0).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def _reflect_index(n: int, size: int) -> np.ndarray:
    # cv2.BORDER_REFLECT continued periodically (period 2n): 0..n-1, n-1..0, 0..n-1, ...
    i = np.arange(size) % (2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def reflect_pad_bottom_right(img: np.ndarray, min_size: int) -> np.ndarray:
    """Pad (H, W, C) at the bottom/right to at least min_size with cv2.BORDER_REFLECT semantics."""
    H, W = img.shape[:2]
    if H >= min_size and W >= min_size:
        return img
    rows = _reflect_index(H, max(H, min_size))
    cols = _reflect_index(W, max(W, min_size))
    return img[rows][:, cols]


def item_rng(seed: int, epoch: int, index: int) -> np.random.RandomState:
    """The RandomState that decides one item's crop and mask."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(1)[0]
    return np.random.RandomState(state)


class ImageFolderMaskDataset(torch.utils.data.Dataset):
    """Images from a folder with MAT's random crops and free-form masks.

    Args:
        path: folder of images (searched recursively). resolution: crop size.
        hole_range, mask_variant: passed to ``random_mask``.
        mirror: double the dataset with horizontally flipped copies (index >= n flips image index−n).
        seed: base seed of every item's RNG.
        crop: 'random' (training) or 'center'.
        mask_folder: read masks from this folder (paired by sorted index, modulo its length)
            instead of generating them; mask_threshold as in ``masks.load_mask``.
        max_images: use only the first max_images files (sorted).

    ``dataset[(epoch, index)]`` (or ``dataset[index]``, epoch 0) returns
    ``(image uint8 (3, R, R), mask float32 (1, R, R))`` with 1 = known, 0 = hole.
    """

    def __init__(self, path: Union[str, os.PathLike], resolution: int, hole_range: Sequence[float] = (0.0, 1.0),
                 mask_variant: str = "auto", mirror: bool = False, seed: int = 0, crop: str = "random",
                 mask_folder: Optional[Union[str, os.PathLike]] = None, mask_threshold: Optional[float] = None,
                 max_images: Optional[int] = None):
        if not isinstance(resolution, int) or resolution < 2:
            raise ValueError(f"resolution: expected an integer >= 2, got {resolution!r}")
        if crop not in ("random", "center"):
            raise ValueError(f"crop: expected 'random' or 'center', got {crop!r}")
        self.files = list_image_files(path)
        if max_images is not None:
            if max_images < 1:
                raise ValueError(f"max_images: expected a positive integer, got {max_images!r}")
            self.files = self.files[:max_images]
        self.resolution = resolution
        self.hole_range = tuple(hole_range)
        self.mask_variant = mask_variant
        self.mirror = bool(mirror)
        self.seed = int(seed)
        self.crop = crop
        self.masks = MaskFolder(mask_folder, mask_threshold) if mask_folder is not None else None
        if self.masks is None:
            check_mask_args(resolution, self.hole_range, mask_variant)  # fail here, not in a worker

    def __len__(self) -> int:
        return len(self.files) * (2 if self.mirror else 1)

    @property
    def num_raw_images(self) -> int:
        return len(self.files)

    def __getitem__(self, key: Union[int, Tuple[int, int]]):
        epoch, index = (0, key) if not isinstance(key, (tuple, list)) else (int(key[0]), int(key[1]))
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        flip = index >= len(self.files)
        img = load_image(self.files[index - len(self.files) if flip else index])
        R = self.resolution
        img = reflect_pad_bottom_right(img, R)
        rng = item_rng(self.seed, epoch, index)
        H, W = img.shape[:2]
        if self.crop == "random":
            top = int(rng.randint(0, H - R + 1))   # rows first, like the official loader
            left = int(rng.randint(0, W - R + 1))
        else:
            top, left = (H - R) // 2, (W - R) // 2
        img = img[top:top + R, left:left + R]
        if flip:
            img = img[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        if self.masks is not None:
            mask = self.masks[index % len(self.masks)]
            if mask.shape[1:] != (R, R):
                raise ValueError(f"mask_folder: mask {self.masks.files[index % len(self.masks)]!r} has size "
                                 f"{mask.shape[1:]}, expected {(R, R)}")
        else:
            mask = random_mask(R, self.hole_range, variant=self.mask_variant, rng=rng)
        return image, torch.from_numpy(np.ascontiguousarray(mask))


class StepSampler(torch.utils.data.Sampler):
    """Infinite stream of (epoch, index) keys for one rank, starting at ``start_step``.

    Args:
        n: dataset length. batch: global batch size (all ranks). rank, world_size: this process.
        seed: permutation seed. start_step: first step to yield (for resume). shuffle: permute epochs.
    """

    def __init__(self, n: int, batch: int, rank: int = 0, world_size: int = 1, seed: int = 0, start_step: int = 0,
                 shuffle: bool = True):
        if n < 1:
            raise ValueError(f"n: empty dataset")
        if batch % world_size != 0:
            raise ValueError(f"batch: {batch} is not divisible by world_size {world_size}")
        self.n, self.batch, self.rank, self.world = n, batch, rank, world_size
        self.per_rank = batch // world_size
        self.seed, self.start_step, self.shuffle = seed, start_step, shuffle
        self._perm_cache = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            if len(self._perm_cache) > 4:
                self._perm_cache.clear()
            if self.shuffle:
                rs = np.random.RandomState(np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch, 0x5A]).generate_state(1)[0])
                self._perm_cache[epoch] = rs.permutation(self.n)
            else:
                self._perm_cache[epoch] = np.arange(self.n)
        return self._perm_cache[epoch]

    def keys_for_step(self, step: int) -> List[Tuple[int, int]]:
        out = []
        for k in range(self.rank * self.per_rank, (self.rank + 1) * self.per_rank):
            pos = step * self.batch + k
            epoch = pos // self.n
            out.append((epoch, int(self._perm(epoch)[pos % self.n])))
        return out

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        step = self.start_step
        while True:
            yield from self.keys_for_step(step)
            step += 1
