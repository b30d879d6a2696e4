"""Image-folder dataset: reflect padding, crops, mirror, masks, determinism; the step sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mat_kernels.data import (ImageFolderMaskDataset, StepSampler, list_image_files, load_image,
                              reflect_pad_bottom_right)


def test_reflect_pad_is_cv2_border_reflect_bottom_right():
    row = np.array([[1, 2, 3]], np.uint8)[..., None]
    # cv2.BORDER_REFLECT: fedcba|abcdefgh|hgfedcb (edge repeated), continued periodically
    assert reflect_pad_bottom_right(row, 9)[0, :, 0].tolist() == [1, 2, 3, 3, 2, 1, 1, 2, 3]
    col = np.arange(4, dtype=np.uint8).reshape(4, 1, 1)
    out = reflect_pad_bottom_right(col, 6)
    assert out.shape == (6, 6, 1)
    assert out[:, 0, 0].tolist() == [0, 1, 2, 3, 3, 2]
    assert (out == out[:, :1]).all()  # width 1: the one column repeated
    big = np.zeros((10, 12, 3), np.uint8)
    assert reflect_pad_bottom_right(big, 8) is big


def test_listing_and_loading(tmp_path):
    (tmp_path / "b").mkdir()
    Image.fromarray(np.full((4, 5), 7, np.uint8), "L").save(tmp_path / "b" / "g.png")
    Image.fromarray(np.zeros((4, 5, 4), np.uint8), "RGBA").save(tmp_path / "a.png")
    (tmp_path / "x.txt").write_text("no")
    files = list_image_files(tmp_path)
    assert [f[len(str(tmp_path)) + 1:] for f in files] == ["a.png", "b/g.png"]
    g = load_image(files[1])
    assert g.shape == (4, 5, 3) and (g == 7).all()
    assert load_image(files[0]).shape == (4, 5, 3)
    with pytest.raises(FileNotFoundError, match="path"):
        list_image_files(tmp_path / "none")


def test_training_images_of_every_mode_are_8_bit_rgb(tmp_path):
    """16-bit greyscale is rounded to 8 bits (it used to turn white: convert("RGB") clips I;16),
    CMYK and palette go through PIL's RGB conversion, float images are refused naming the file."""
    grey16 = np.array([[0, 257 * 7, 65535, 1000]], np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")  # a 16-bit greyscale PNG
    out = load_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 7, 255, 4] and (out == out[..., :1]).all()
    cmyk = Image.new("CMYK", (3, 2), (0, 255, 0, 0))
    cmyk.save(tmp_path / "c.tif")
    assert (load_image(tmp_path / "c.tif") == np.asarray(cmyk.convert("RGB"))).all()
    Image.fromarray(np.ones((2, 2), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match="f.tif"):
        load_image(tmp_path / "f.tif")


@pytest.fixture
def folder(tmp_path):
    rng = np.random.RandomState(0)
    for i, (h, w) in enumerate([(40, 48), (20, 50), (32, 32)]):
        Image.fromarray(rng.randint(0, 256, (h, w, 3)).astype(np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


def test_items_are_deterministic_per_seed_epoch_index(folder):
    ds = ImageFolderMaskDataset(folder, 32, mirror=True, seed=5)
    assert len(ds) == 6 and ds.num_raw_images == 3
    img, mask = ds[(2, 1)]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)
    assert mask.dtype == torch.float32 and mask.shape == (1, 32, 32)
    img2, mask2 = ImageFolderMaskDataset(folder, 32, mirror=True, seed=5)[(2, 1)]
    assert torch.equal(img, img2) and torch.equal(mask, mask2)
    others = [ds[(3, 1)], ImageFolderMaskDataset(folder, 32, mirror=True, seed=6)[(2, 1)]]
    assert all(not torch.equal(mask, m) for _, m in others)
    # the 20x50 image is reflect-padded at the bottom to 32 rows, then cropped
    raw = reflect_pad_bottom_right(load_image(ds.files[1]), 32)
    crops = {raw[:, x:x + 32].transpose(2, 0, 1).tobytes() for x in range(50 - 32 + 1)}
    assert img.numpy().tobytes() in crops
    # mirrored copy of item 1 is item 4: same crop/mask RNG keys differ, but its pixels come from a flip
    flipped, _ = ds[(0, 4)]
    crops_f = {raw[:, x:x + 32][:, ::-1].transpose(2, 0, 1).tobytes() for x in range(19)}
    assert flipped.numpy().tobytes() in crops_f
    # masks are MAT's generator (binary, hole ratio in (0, 1))
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and 0 < 1 - mask.mean() < 1


def test_center_crop_and_mask_folder(folder, tmp_path_factory):
    mdir = tmp_path_factory.mktemp("masks")
    m = (np.arange(32 * 32).reshape(32, 32) % 255).astype(np.uint8)
    Image.fromarray(m, "L").save(mdir / "m0.png")
    ds = ImageFolderMaskDataset(folder, 32, crop="center", mask_folder=mdir)
    img, mask = ds[0]
    raw = load_image(ds.files[0])
    assert torch.equal(img, torch.from_numpy(raw[4:36, 8:40].transpose(2, 0, 1).copy()))
    np.testing.assert_array_equal(mask[0].numpy(), m / np.float32(255))
    with pytest.raises(ValueError, match="crop"):
        ImageFolderMaskDataset(folder, 32, crop="middle")
    with pytest.raises(ValueError, match="hole_range"):
        ImageFolderMaskDataset(folder, 32, hole_range=(0.0, 0.1))
    with pytest.raises(IndexError):
        ds[3]


def test_step_sampler_partitions_global_batches():
    n, batch, world = 5, 4, 2
    samplers = [StepSampler(n, batch, r, world, seed=1) for r in range(world)]
    for step in range(6):
        keys = [k for s in samplers for k in s.keys_for_step(step)]
        assert len(keys) == batch
        for pos, (epoch, idx) in enumerate(keys):
            assert epoch == (step * batch + pos) // n
    # each epoch visits every index exactly once across ranks
    seen = {}
    for step in range(5):  # 20 samples = 4 epochs
        for s in samplers:
            for e, i in s.keys_for_step(step):
                seen.setdefault(e, []).append(i)
    assert all(sorted(v) == list(range(n)) for v in seen.values())
    it = iter(StepSampler(n, batch, 1, world, seed=1, start_step=3))
    assert [next(it) for _ in range(4)] == samplers[1].keys_for_step(3) + samplers[1].keys_for_step(4)
    with pytest.raises(ValueError, match="batch"):
        StepSampler(n, 3, 0, 2)
