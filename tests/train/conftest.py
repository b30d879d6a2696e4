"""Fixtures for the training tests: a tiny generated image dataset and a random VGG19 file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mat_kernels.train.losses import VGG19Features


@pytest.fixture(scope="session")
def image_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    train, val = root / "train", root / "val"
    (train / "sub").mkdir(parents=True)
    val.mkdir()
    # mixed sizes (some smaller than the 32 px crop: reflect padding), one grayscale, nested folder
    for i, (h, w) in enumerate([(40, 48), (32, 32), (20, 50), (36, 30), (64, 40), (33, 33)]):
        arr = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        d = train / "sub" if i % 2 else train
        img = Image.fromarray(arr[:, :, 0], "L") if i == 3 else Image.fromarray(arr)
        img.save(d / f"img{i}.png")
    for i in range(3):
        Image.fromarray(rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)).save(val / f"v{i}.png")
    return train, val


@pytest.fixture(scope="session")
def vgg_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbbb3f4.pth"
    torch.save(VGG19Features("conv5_4").state_dict(), path)
    return path
