"""mat-inpaint: size handling, pairing, exact known pixels, errors, and one real end-to-end run.

Most tests use a tiny stand-in generator (same call signature and size rule as the real one:
heights and widths must be multiples of ``img_resolution``) so that the I/O and size logic run
in milliseconds; ``test_end_to_end_real_generator`` runs a random-init 256 MAT generator saved in
this package's format through the whole command.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mat_kernels import checkpoint as ckpt
from mat_kernels.data import images as io
from mat_kernels import inpaint as ip
from mat_kernels.cli import inpaint

FILL = 0.25
FILL_U8 = int(round(FILL * 127.5 + 127.5))  # 159


class FakeG(nn.Module):
    """Fills holes with a constant; records every call."""

    def __init__(self, R=16, z_dim=4):
        super().__init__()
        self.img_resolution, self.z_dim, self.c_dim = R, z_dim, 0
        self.calls = []

    def forward(self, img, mask, z, c, truncation_psi=1, noise_mode="random"):
        H, W = img.shape[-2:]
        assert H % self.img_resolution == 0 and W % self.img_resolution == 0, (H, W)
        assert mask.shape == (1, 1, H, W) and c.shape == (1, 0)
        self.calls.append(dict(shape=(H, W), mask=mask.clone(), z=z.clone(), noise_mode=noise_mode,
                               psi=truncation_psi))
        return img * mask + FILL * (1 - mask)


def _rand_image(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def _block_mask(h, w):
    m = np.ones((h, w), np.float32)
    m[h // 4: h // 4 + max(h // 2, 1), w // 3: w // 3 + max(w // 3, 1)] = 0
    return m


# ----------------------------------------------------------------------------------------------
# inpaint_array: size policies
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w", [(16, 16), (20, 37), (5, 3), (48, 16), (1, 40)])
def test_fit_pad(h, w):
    G = FakeG(R=16)
    image, mask = _rand_image(h, w), _block_mask(h, w)
    out = ip.inpaint_array(G, image, mask, torch.zeros(1, 4), fit="pad", noise_mode="const")
    assert out.shape == image.shape and out.dtype == np.uint8
    known = mask == 1
    assert np.array_equal(out[known], image[known])
    assert np.all(out[~known] == FILL_U8)
    (call,) = G.calls
    Hp, Wp = -(-h // 16) * 16, -(-w // 16) * 16
    assert call["shape"] == (Hp, Wp)
    # Constant noise maps exist only at R x R: other padded sizes run with random noise.
    assert call["noise_mode"] == ("const" if (Hp, Wp) == (16, 16) else "random")


@pytest.mark.parametrize("h,w", [(20, 37), (64, 40), (9, 9)])
def test_fit_resize(h, w):
    G = FakeG(R=16)
    image, mask = _rand_image(h, w), _block_mask(h, w)
    mask[:, w - 2] = 0  # a one-pixel hole line: must stay a hole after downscaling
    out = ip.inpaint_array(G, image, mask, torch.zeros(1, 4), fit="resize", noise_mode="const")
    assert out.shape == image.shape
    known = mask == 1
    assert np.array_equal(out[known], image[known])
    (call,) = G.calls
    assert call["shape"] == (16, 16) and call["noise_mode"] == "const"
    # Centre square padding then resize: the line's column must be fully unknown at 16 x 16.
    S = max(h, w)
    left = (S - w) // 2
    col = int((left + w - 2) * 16 / S)
    top, bottom = (S - h) // 2, (S - h) // 2 + h
    rows = slice(int(top * 16 / S) + 1, max(int(bottom * 16 / S) - 1, int(top * 16 / S) + 2))
    assert torch.all(call["mask"][0, 0, rows, col] == 0)


def _holes(h, w, boxes):
    m = np.ones((h, w), np.float32)
    for t, b, l, r in boxes:
        m[t:b, l:r] = 0
    return m


def test_choose_fit_pads_up_to_twice_r_and_crops_above():
    assert ip.choose_fit(1024, 1024, 512) == "pad"
    assert ip.choose_fit(1080, 1920, 512) == "crop"
    assert ip.choose_fit(32, 33, 16) == "crop"


@pytest.mark.parametrize("case, boxes, n_windows", [
    ("several holes", [(10, 14, 10, 14), (70, 75, 80, 86), (40, 44, 150, 153)], 3),
    ("holes at the borders", [(0, 5, 0, 7), (95, 100, 190, 200), (0, 100, 100, 101)], 3),
    ("a hole larger than R", [(20, 80, 30, 120)], 1),
    ("near holes merge", [(40, 44, 40, 44), (40, 44, 49, 52)], 1),
])
def test_fit_crop_fills_every_hole_and_keeps_known_pixels(case, boxes, n_windows):
    R, margin = 16, 2
    G = FakeG(R=R)
    H, W = 100, 200
    image = np.random.RandomState(1).randint(100, 256, (H, W, 3)).astype(np.uint8)
    mask = _holes(H, W, boxes)
    hole = mask < 1
    image[hole] = 0  # what the network must never see, nor leave
    owner, windows = ip.crop_windows(mask, R, margin)
    assert len(windows) == n_windows, case
    out = ip.inpaint_array(G, image, mask, torch.zeros(1, 4), fit="crop", crop_margin=margin)
    assert np.array_equal(out[~hole], image[~hole])
    assert np.all(out[hole] > 50), "a hole pixel was not filled"
    assert len(G.calls) == n_windows and all(c["shape"] == (R, R) for c in G.calls)
    for k, (t, b, l, r) in windows:
        assert 0 <= t < b <= H and 0 <= l < r <= W
        ys, xs = np.nonzero(owner == k)
        assert t <= ys.min() and ys.max() < b and l <= xs.min() and xs.max() < r  # its holes are inside
        big = max(b - t, r - l) > R
        assert (b - t, r - l) == ((max(b - t, r - l),) * 2 if big else (min(R, H), min(R, W)))
    assert np.all((owner >= 0) == hole)


def test_fit_crop_windows_at_the_photos_scale_see_only_known_pixels_as_known():
    R = 32
    G = FakeG(R=R)
    mask = _holes(64, 64, [(10, 12, 10, 12), (10, 12, 24, 26)])   # two regions, margin 0
    image = _rand_image(64, 64)
    owner, windows = ip.crop_windows(mask, R, 0)
    assert len(windows) == 2
    ip.inpaint_array(G, image, mask, torch.zeros(1, 4), fit="crop", crop_margin=0)
    first, second = G.calls
    # The first window holds both holes: the second region's hole is a hole there too.
    t, b, l, r = windows[0][1]
    assert np.array_equal(first["mask"][0, 0].numpy(), mask[t:b, l:r])
    # The second window sees the first region's filled pixels as known.
    t, b, l, r = windows[1][1]
    want = mask[t:b, l:r].copy()
    want[owner[t:b, l:r] == windows[0][0]] = 1
    assert np.array_equal(second["mask"][0, 0].numpy(), want)


def test_cli_auto_fit_crops_large_photos_and_says_so(fake_loader, tmp_path, capsys):
    G, _, ck = fake_loader
    image = _rand_image(40, 90)
    mask = _holes(40, 90, [(5, 9, 5, 9), (30, 35, 70, 80)])
    _write(tmp_path / "a.png", image)
    _run_one(ck, tmp_path / "a.png", mask, tmp_path / "out", "--crop-margin", "2")
    assert "a.png (1/1, 90x40, auto: crop, 2 windows)" in capsys.readouterr().err
    assert [c["shape"] for c in G.calls] == [(16, 16), (16, 16)]
    assert "--crop-margin: must be 0 or more" in _one_line_error(capsys, [
        "--checkpoint", str(ck), "--image", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
        "--crop-margin", "-1"])


def test_fit_crop_with_the_real_generator():
    """Two hole regions of a 300 x 700 photo through the real 256 generator, one of them larger
    than R (resized window): known pixels exact, every hole pixel written by the network."""
    from mat_kernels.models import Generator
    torch.manual_seed(12)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3).eval()
    image = _rand_image(300, 700, seed=2)
    mask = _holes(300, 700, [(0, 40, 20, 90), (60, 290, 380, 690)])
    hole = mask < 1
    image[hole] = 0
    torch.manual_seed(240)
    out = ip.inpaint_array(G, image, mask, torch.randn(1, 512), fit="crop", crop_margin=16)
    assert np.array_equal(out[~hole], image[~hole])
    assert (out[hole] != 0).any(axis=-1).mean() > 0.99


def test_fit_crop_of_a_photo_without_holes_runs_nothing():
    G = FakeG(R=16)
    image = _rand_image(40, 50)
    out = ip.inpaint_array(G, image, np.ones((40, 50), np.float32), torch.zeros(1, 4), fit="crop")
    assert np.array_equal(out, image) and G.calls == []


def test_fit_resize_deep_hole_value():
    G = FakeG(R=16)
    image = _rand_image(64, 64)
    mask = np.ones((64, 64), np.float32)
    mask[8:56, 8:56] = 0
    out = ip.inpaint_array(G, image, mask, torch.zeros(1, 4), fit="resize")
    assert np.all(np.abs(out[20:44, 20:44].astype(int) - FILL_U8) <= 1)


def test_grey_mask_blends_and_white_is_exact():
    G = FakeG(R=16)
    image = _rand_image(16, 16)
    mask = np.full((16, 16), 0.5, np.float32)
    mask[:8] = 1.0
    out = ip.inpaint_array(G, image, mask, torch.zeros(1, 4))
    assert np.array_equal(out[:8], image[:8])
    want = np.round((image[8:] / 127.5 - 1) * 0.5 * 127.5 + FILL * 0.5 * 127.5 + 127.5)
    assert np.max(np.abs(out[8:].astype(int) - want.astype(int))) <= 1


def test_inpaint_array_rejects_mismatch():
    with pytest.raises(ValueError, match="mask is 5x4 but the image is 6x4"):
        ip.inpaint_array(FakeG(), _rand_image(4, 6), np.ones((4, 5), np.float32), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="fit must be one of"):
        ip.inpaint_array(FakeG(), _rand_image(4, 6), np.ones((4, 6), np.float32), torch.zeros(1, 4), fit="tile")


# ----------------------------------------------------------------------------------------------
# The command with the stand-in generator
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def fake_loader(monkeypatch, tmp_path):
    G = FakeG(R=16)
    seen = {}

    def load(path, *, device="cpu", which="G_ema", resolution=None):
        seen.update(path=Path(path), device=device, resolution=resolution)
        return G

    monkeypatch.setattr(inpaint, "load_generator", load)
    ck = tmp_path / "model.json"
    ck.write_text("{}")
    return G, seen, ck


def _write(path: Path, arr: np.ndarray, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)


def test_cli_folder(fake_loader, tmp_path):
    G, seen, ck = fake_loader
    imgs, msks, out = tmp_path / "img", tmp_path / "msk", tmp_path / "out"
    sizes = {"a.png": (16, 16), "b.jpg": (20, 37), "c.png": (33, 17)}
    originals = {}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        arr = _rand_image(h, w, seed=i)
        _write(imgs / name, arr)
        originals[name] = io.read_image(imgs / name)  # jpg: compare against what was decoded
        # Mask names differ from image names: pairing is by sorted order.
        _write(msks / f"m{i}.png", (_block_mask(h, w) * 255).astype(np.uint8), "L")
    gray = (np.arange(16 * 16, dtype=np.uint8).reshape(16, 16))
    _write(imgs / "d.png", gray, "L")
    _write(msks / "m3.png", (_block_mask(16, 16) * 255).astype(np.uint8), "L")
    assert inpaint.main(["--checkpoint", str(ck), "--image", str(imgs), "--mask", str(msks),
                         "--out", str(out), "--device", "cpu", "--seed", "3", "--truncation", "0.5",
                         "--fit", "pad"]) == 0
    assert seen["path"] == ck and seen["resolution"] is None
    assert len(G.calls) == 4 and all(c["psi"] == 0.5 for c in G.calls)
    for i, name in enumerate(list(sizes) + ["d.png"]):
        res = np.array(Image.open(out / (Path(name).stem + ".png")))
        src = originals.get(name, np.repeat(gray[..., None], 3, axis=2))
        assert res.shape == src.shape
        mask = io.read_mask(msks / f"m{i}.png")
        known = mask == 1
        assert np.array_equal(res[known], src[known])
        assert np.all(res[~known] == FILL_U8)
    # z follows the official order: numpy randn(1, z_dim) per image after seeding once.
    rs = np.random.RandomState(3)
    for call in G.calls:
        assert torch.equal(call["z"], torch.from_numpy(rs.randn(1, 4)).float())


def test_cli_single_file_invert_and_python_m(fake_loader, tmp_path):
    G, _, ck = fake_loader
    image = _rand_image(16, 16)
    _write(tmp_path / "x.png", image)
    hole_white = ((1 - _block_mask(16, 16)) * 255).astype(np.uint8)
    _write(tmp_path / "xm.png", hole_white, "L")
    inpaint.main(["--checkpoint", str(ck), "--image", str(tmp_path / "x.png"), "--mask",
                  str(tmp_path / "xm.png"), "--invert-mask", "--out", str(tmp_path / "o")])
    res = np.array(Image.open(tmp_path / "o" / "x.png"))
    known = _block_mask(16, 16) == 1
    assert np.array_equal(res[known], image[known]) and np.all(res[~known] == FILL_U8)


def test_cli_random_masks_are_seeded(fake_loader, tmp_path):
    G, _, ck = fake_loader
    for i in range(2):
        _write(tmp_path / "img" / f"{i}.png", _rand_image(16, 16, seed=i))
    runs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        inpaint.main(["--checkpoint", str(ck), "--image", str(tmp_path / "img"), "--out", str(out),
                      "--save-masks"])
        runs.append([np.array(Image.open(out / f"{i}.png")) for i in range(2)])
        masks = [np.array(Image.open(out / "masks" / f"{i}.png"))[..., 0] for i in range(2)]
        for i in range(2):
            hole = masks[i] == 0
            assert hole.any() and not hole.all()
            assert np.all(runs[-1][i][hole] == FILL_U8)
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def _error(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        inpaint.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_cli_errors(fake_loader, tmp_path, capsys):
    _, _, ck = fake_loader
    _write(tmp_path / "img" / "a.png", _rand_image(16, 16))
    _write(tmp_path / "img" / "b.png", _rand_image(16, 20))
    _write(tmp_path / "msk" / "a.png", np.full((16, 16), 255, np.uint8), "L")
    base = ["--checkpoint", str(ck), "--out", str(tmp_path / "o")]
    err = _error(capsys, base + ["--image", str(tmp_path / "nope.png")])
    assert "--image" in err and "does not exist" in err
    err = _error(capsys, base + ["--image", str(tmp_path / "img"), "--mask", str(tmp_path / "nomask")])
    assert "--mask" in err and "does not exist" in err
    err = _error(capsys, base + ["--image", str(tmp_path / "img"), "--mask", str(tmp_path / "msk")])
    assert "1 masks" in err and "2 images" in err
    err = _error(capsys, base + ["--image", str(tmp_path / "img"), "--mask", str(tmp_path / "msk" / "a.png")])
    assert "folder of masks with a folder of images" in err
    err = _error(capsys, base + ["--image", str(tmp_path / "img" / "b.png"), "--mask", str(tmp_path / "msk" / "a.png")])
    assert "a.png is 16x16 but b.png is 20x16" in err
    err = _error(capsys, ["--checkpoint", str(tmp_path / "none.pkl"), "--image", str(tmp_path / "img"),
                          "--out", str(tmp_path / "o")])
    assert "--checkpoint" in err and "does not exist" in err
    err = _error(capsys, base + ["--image", str(tmp_path / "img"), "--fit", "stretch"])
    assert "--fit" in err
    err = _error(capsys, base + ["--image", str(tmp_path / "img"), "--resolution", "300"])
    assert "--resolution" in err
    err = _error(capsys, base + ["--image", str(tmp_path / "img"), "--truncation", "nan"])
    assert "--truncation" in err
    _write(tmp_path / "img" / "a.jpg", _rand_image(16, 16))
    err = _error(capsys, base + ["--image", str(tmp_path / "img")])
    assert "would both be written to a.png" in err
    (tmp_path / "img" / "a.jpg").unlink()
    err = _error(capsys, base[:2] + ["--out", str(tmp_path / "img"), "--image", str(tmp_path / "img")])
    assert "would overwrite its input" in err
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image")
    err = _error(capsys, base + ["--image", str(tmp_path / "img")])
    assert "--image: cannot read image" in err and "broken.png" in err


def test_cli_bad_checkpoint_is_a_clear_error(tmp_path, capsys):
    _write(tmp_path / "a.png", _rand_image(16, 16))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x03cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    err = _error(capsys, ["--checkpoint", str(bad), "--image", str(tmp_path / "a.png"), "--out",
                          str(tmp_path / "o"), "--device", "cpu"])
    assert "--checkpoint" in err and "refusing to load global 'os.system'" in err


def test_python_m_help():
    r = subprocess.run([sys.executable, "-m", "mat_kernels.cli.inpaint", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0
    for opt in ("--checkpoint", "--image", "--mask", "--invert-mask", "--out", "--resolution", "--seed",
                "--truncation", "--noise-mode", "--fit", "--device"):
        assert opt in r.stdout
    assert "reflect-pads" in r.stdout


# ----------------------------------------------------------------------------------------------
# The real generator, end to end
# ----------------------------------------------------------------------------------------------


def test_end_to_end_real_generator(tmp_path):
    from mat_kernels.models import Generator
    torch.manual_seed(11)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3).eval()
    cfg = ckpt.save_checkpoint(tmp_path / "ckpt" / "mat256", G)
    image = _rand_image(256, 256, seed=4)
    mask = np.ones((256, 256), np.uint8) * 255
    mask[60:200, 30:140] = 0
    mask[10:20, 200:250] = 128  # grey: blended, not thresholded
    _write(tmp_path / "in" / "photo.jpg", image)
    decoded = io.read_image(tmp_path / "in" / "photo.jpg")
    _write(tmp_path / "in_mask" / "photo.png", mask, "L")
    assert inpaint.main(["--checkpoint", str(cfg), "--image", str(tmp_path / "in"), "--mask",
                         str(tmp_path / "in_mask"), "--out", str(tmp_path / "out"), "--device", "cpu",
                         "--resolution", "256"]) == 0
    res = np.array(Image.open(tmp_path / "out" / "photo.png"))
    assert res.shape == (256, 256, 3) and res.dtype == np.uint8
    known = mask == 255
    assert np.array_equal(res[known], decoded[known])
    assert np.any(res[mask == 0] != decoded[mask == 0])
    # Same numbers as the official pipeline: seed 240 once, z = numpy randn, const noise.
    np.random.seed(240)
    torch.manual_seed(240)
    z = torch.from_numpy(np.random.randn(1, 512)).float()
    with torch.no_grad():
        want = G(io.image_to_tensor(decoded), io.mask_to_tensor(mask / 255.0), z, torch.zeros(1, 0),
                 truncation_psi=1, noise_mode="const")
    want = io.tensor_to_uint8(want)
    want[known] = decoded[known]
    assert np.array_equal(res, want)


@pytest.mark.extended
@pytest.mark.parametrize("fit", ["pad", "resize"])
def test_real_generator_other_sizes(tmp_path, fit):
    """A 200 x 300 image through the real 256 generator: pad runs a 256 x 512 forward."""
    from mat_kernels.models import Generator
    torch.manual_seed(12)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3).eval()
    cfg = ckpt.save_checkpoint(tmp_path / "mat256", G)
    image = _rand_image(200, 300, seed=5)
    mask = np.full((200, 300), 255, np.uint8)
    mask[50:150, 100:200] = 0
    _write(tmp_path / "a.png", image)
    _write(tmp_path / "am.png", mask, "L")
    assert inpaint.main(["--checkpoint", str(cfg), "--image", str(tmp_path / "a.png"), "--mask",
                         str(tmp_path / "am.png"), "--out", str(tmp_path / "out"), "--fit", fit,
                         "--device", "cpu"]) == 0
    res = np.array(Image.open(tmp_path / "out" / "a.png"))
    assert res.shape == image.shape
    known = mask == 255
    assert np.array_equal(res[known], image[known])
    assert np.any(res[~known] != image[~known])


@pytest.mark.extended
def test_compiled_command_writes_the_eager_image(tmp_path):
    """``--compile`` and eager on the same image and seed write the same PNG within one level:
    the Bernoulli maps are the eager ones under inductor's default settings (compiling the
    generator takes minutes on a CPU)."""
    from mat_kernels.models import Generator
    torch.manual_seed(13)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3).eval()
    cfg = ckpt.save_checkpoint(tmp_path / "mat256", G)
    _write(tmp_path / "in" / "a.png", _rand_image(256, 256, seed=6))
    mask = np.ones((256, 256), np.uint8) * 255
    mask[30:230, 40:200] = 0
    _write(tmp_path / "m" / "a.png", mask, "L")
    outs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        torch._dynamo.reset()
        assert inpaint.main(["--checkpoint", str(cfg), "--image", str(tmp_path / "in"), "--mask", str(tmp_path / "m"),
                             "--out", str(tmp_path / name), "--device", "cpu", "--seed", "240"] + extra) == 0
        outs[name] = np.array(Image.open(tmp_path / name / "a.png")).astype(np.int16)
    diff = np.abs(outs["compiled"] - outs["eager"])
    assert diff.max() <= 1, f"{int((diff > 1).sum())} pixel values differ by more than one level (max {diff.max()})"
    assert np.any(outs["eager"][mask == 0] != np.array(Image.open(tmp_path / "in" / "a.png"))[mask == 0])


def test_cli_dtype_and_compile_reach_the_generator(fake_loader, tmp_path, monkeypatch, capsys):
    G, _, ck = fake_loader
    compiled = []
    monkeypatch.setattr(inpaint.torch, "compile", lambda m: compiled.append(m) or m)
    _write(tmp_path / "img" / "a.png", _rand_image(16, 16))
    _write(tmp_path / "msk" / "a.png", (_block_mask(16, 16) * 255).astype(np.uint8), "L")
    args = ["--checkpoint", str(ck), "--image", str(tmp_path / "img"), "--mask", str(tmp_path / "msk"),
            "--device", "cpu"]
    G.register_buffer("probe", torch.zeros(1))
    assert inpaint.main(args + ["--out", str(tmp_path / "o1"), "--dtype", "bf16", "--compile"]) == 0
    assert compiled == [G] and G.probe.dtype == torch.bfloat16
    assert _error(capsys, args + ["--out", str(tmp_path / "o2"), "--dtype", "fp64"])


def test_real_generator_bf16_weights_close_to_fp32(tmp_path):
    from mat_kernels.models import Generator
    from mat_kernels.testing import assert_close
    torch.manual_seed(11)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3).eval()
    cfg = ckpt.save_checkpoint(tmp_path / "mat256", G)
    image = _rand_image(256, 256, seed=5)
    _write(tmp_path / "in" / "a.png", image)
    mask = np.ones((256, 256), np.uint8) * 255
    mask[40:220, 50:180] = 0
    _write(tmp_path / "m" / "a.png", mask, "L")
    outs = {}
    for dtype in ("fp32", "bf16"):
        assert inpaint.main(["--checkpoint", str(cfg), "--image", str(tmp_path / "in"), "--mask", str(tmp_path / "m"),
                             "--out", str(tmp_path / dtype), "--device", "cpu", "--dtype", dtype]) == 0
        outs[dtype] = torch.from_numpy(np.array(Image.open(tmp_path / dtype / "a.png"))).double()
    # the whole image, as the bound is defined (known pixels are equal in both)
    assert_close(outs["bf16"] / 127.5 - 1, outs["fp32"] / 127.5 - 1, "G_weights", "fwd", torch.bfloat16)
    known = torch.from_numpy(mask == 255)
    assert torch.equal(outs["bf16"][known], outs["fp32"][known])


# ----------------------------------------------------------------------------------------------
# Pixel formats through the command (issue #15)
# ----------------------------------------------------------------------------------------------

FILL_U16 = int(round(FILL * 32767.5 + 32767.5))  # 40959


def _run_one(ck, image_path: Path, mask: np.ndarray, out: Path, *extra):
    _write(image_path.parent / "m.png", (mask * 255).astype(np.uint8), "L")
    assert inpaint.main(["--checkpoint", str(ck), "--image", str(image_path), "--mask",
                         str(image_path.parent / "m.png"), "--out", str(out), "--device", "cpu", *extra]) == 0
    return Image.open(out / (image_path.stem + ".png"))


def test_cli_sixteen_bit_grey_png_stays_sixteen_bit(fake_loader, tmp_path):
    """The reported bug: a 16-bit greyscale PNG came out pure white (255) in its known region."""
    _, _, ck = fake_loader
    g = np.random.RandomState(0).randint(0, 65536, (20, 37)).astype(np.uint16)
    (tmp_path / "in").mkdir()
    Image.fromarray(g).save(tmp_path / "in" / "gray16.png")
    mask = _block_mask(20, 37)
    out = _run_one(ck, tmp_path / "in" / "gray16.png", mask, tmp_path / "out", "--fit", "pad")
    res = np.asarray(out)
    assert out.mode == "I;16" and res.shape == g.shape
    known = mask == 1
    assert np.array_equal(res[known], g[known])
    assert np.all(res[~known] == FILL_U16)


def _pil_file(mode: str, path: Path) -> Image.Image:
    rs = np.random.RandomState(1)
    rgba = rs.randint(0, 256, (16, 20, 4), dtype=np.uint8)
    if mode in ("I;16B", "I"):
        g = rs.randint(0, 65536, (16, 20))
        im = Image.frombytes(mode, (20, 16), g.astype(">u2" if mode == "I;16B" else "=i4").tobytes())
    elif mode == "P+transparency":
        im = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=6)
        im.info["transparency"] = int(np.asarray(im)[0, 0])
    elif mode in ("RGBA", "LA"):
        im = Image.fromarray(rgba).convert(mode)
    else:
        im = Image.fromarray(rgba[..., :3]).convert(mode)
    im.save(path)
    return Image.open(path)


@pytest.mark.parametrize("mode,ext", [("1", "tif"), ("L", "png"), ("LA", "png"), ("P+transparency", "png"),
                                      ("RGBA", "png"), ("CMYK", "jpg"), ("YCbCr", "tif"), ("LAB", "tif"),
                                      ("I;16B", "tif"), ("I", "tif")])
def test_cli_modes_keep_known_pixels(fake_loader, tmp_path, mode, ext):
    _, _, ck = fake_loader
    (tmp_path / "in").mkdir()
    src = _pil_file(mode, tmp_path / "in" / f"x.{ext}")
    mask = _block_mask(16, 20)
    known = mask == 1
    out = _run_one(ck, tmp_path / "in" / f"x.{ext}", mask, tmp_path / "out")
    res = np.asarray(out)
    if mode in ("I;16B", "I"):
        assert out.mode == "I;16"
        assert np.array_equal(res[known], np.asarray(src).astype(np.uint16)[known])
        assert np.all(res[~known] == FILL_U16)
    elif mode in ("LA", "P+transparency", "RGBA"):
        want = np.asarray(src.convert("RGBA"))
        assert out.mode == "RGBA" and np.array_equal(res[known], want[known])
        assert np.all(res[~known][:, :3] == FILL_U8) and np.all(res[~known][:, 3] == 255)
        if mode == "P+transparency":
            assert (want[..., 3] == 0).any()
    else:  # not RGB in the file: known pixels are PIL's RGB conversion
        want = np.asarray(src.convert("RGB"))
        assert out.mode == "RGB" and np.array_equal(res[known], want[known])
        assert np.all(res[~known] == FILL_U8)


def test_cli_sixteen_bit_colour_warns_and_writes_eight_bit(fake_loader, tmp_path, capsys):
    from tests.data.test_images import png16
    _, _, ck = fake_loader
    a = np.random.RandomState(2).randint(0, 65536, (16, 20, 3)).astype(np.uint16)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "deep.png").write_bytes(png16(a))
    mask = _block_mask(16, 20)
    res = np.asarray(_run_one(ck, tmp_path / "in" / "deep.png", mask, tmp_path / "out", "--quiet"))
    assert res.dtype == np.uint8 and np.array_equal(res[mask == 1], (a >> 8).astype(np.uint8)[mask == 1])
    err = capsys.readouterr().err
    assert "mat-inpaint: warning: " in err and "deep.png: 16-bit colour" in err and "8 bits" in err


# ----------------------------------------------------------------------------------------------
# One-line errors (exit status 2, no traceback)
# ----------------------------------------------------------------------------------------------


def _one_line_error(capsys, argv) -> str:
    err = _error(capsys, argv)
    assert "Traceback" not in err
    lines = err.rstrip("\n").splitlines()
    assert lines[-1].startswith("mat-inpaint: error: ")  # the usage lines come first
    assert sum("error:" in line for line in lines) == 1
    return lines[-1][len("mat-inpaint: error: "):]


def test_cli_out_that_is_a_file_is_a_one_line_error(fake_loader, tmp_path, capsys):
    _, _, ck = fake_loader
    _write(tmp_path / "a.png", _rand_image(16, 16))
    (tmp_path / "taken.png").write_bytes(b"x")
    base = ["--checkpoint", str(ck), "--image", str(tmp_path / "a.png")]
    msg = _one_line_error(capsys, base + ["--out", str(tmp_path / "taken.png")])
    assert msg.startswith(f"--out: {tmp_path / 'taken.png'} is an existing file; --out names a folder")
    msg = _one_line_error(capsys, base + ["--out", str(tmp_path / "taken.png" / "sub")])
    assert msg.startswith("--out: cannot create") and "taken.png" in msg


def test_cli_float_image_is_a_one_line_error(fake_loader, tmp_path, capsys):
    _, _, ck = fake_loader
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((16, 16), np.float32)).save(tmp_path / "in" / "f.tif")
    msg = _one_line_error(capsys, ["--checkpoint", str(ck), "--image", str(tmp_path / "in"), "--out",
                                   str(tmp_path / "o")])
    assert msg.startswith("--image: ") and "f.tif: 32-bit float pixels (PIL mode F)" in msg
    # a float mask has a white level (1.0): accepted
    image = _rand_image(16, 16)
    _write(tmp_path / "ok" / "a.png", image)
    Image.fromarray(_block_mask(16, 16)).save(tmp_path / "fm.tif")
    assert inpaint.main(["--checkpoint", str(ck), "--image", str(tmp_path / "ok" / "a.png"), "--mask",
                         str(tmp_path / "fm.tif"), "--out", str(tmp_path / "o2"), "--quiet"]) == 0
    res = np.asarray(Image.open(tmp_path / "o2" / "a.png"))
    known = _block_mask(16, 16) == 1
    assert np.array_equal(res[known], image[known]) and np.all(res[~known] == FILL_U8)


class OpsG(FakeG):
    """A stand-in that runs a real op with the backend set by set_backend, as the real G does."""

    backend = "auto"

    def set_backend(self, name):
        self.backend = name
        return self

    def forward(self, img, mask, *args, **kwargs):
        import mat_kernels
        mat_kernels.partial_conv_mask_update(mask, kernel_size=3, backend=self.backend)
        return super().forward(img, mask, *args, **kwargs)


def test_cli_backend_that_cannot_run_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(inpaint, "load_generator", lambda *a, **k: OpsG(R=16))
    (tmp_path / "model.json").write_text("{}")
    _write(tmp_path / "a.png", _rand_image(16, 16))
    argv = ["--checkpoint", str(tmp_path / "model.json"), "--image", str(tmp_path / "a.png"), "--out",
            str(tmp_path / "o"), "--device", "cpu"]
    msg = _one_line_error(capsys, argv + ["--backend", "cuda"])
    assert msg.startswith("--backend cuda: backend 'cuda' cannot run partial_conv_mask_update here (cuda: ")
    assert "needs CUDA tensors, got cpu" in msg and "reference" in msg and "can run it" in msg
    assert inpaint.main(argv + ["--backend", "reference"]) == 0


def test_cli_truncated_checkpoint_is_a_one_line_error(tmp_path, capsys):
    _write(tmp_path / "a.png", _rand_image(16, 16))
    torch.save({"G_ema": {"w": torch.zeros(1000)}}, tmp_path / "cut.pth")
    data = (tmp_path / "cut.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    msg = _one_line_error(capsys, ["--checkpoint", str(tmp_path / "cut.pth"), "--image", str(tmp_path / "a.png"),
                                   "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert msg.startswith(f"--checkpoint: {tmp_path / 'cut.pth'}: cannot read the checkpoint")
    assert "truncated" in msg


def test_cli_forced_triton_on_cpu_exits_2_without_traceback(tmp_path):
    """The reported case, in a real process: --backend triton on a CPU-only run (no
    TRITON_INTERPRET) used to end in a 40-line traceback."""
    import os
    from mat_kernels.models import Generator
    if torch.cuda.is_available():
        pytest.skip("triton can run here: the error needs a machine without CUDA")
    torch.manual_seed(0)
    cfg = ckpt.save_checkpoint(tmp_path / "g128", Generator(512, 0, 512, 128, 3))
    _write(tmp_path / "a.png", _rand_image(128, 128))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "mat_kernels.cli.inpaint", "--checkpoint", str(cfg), "--image",
                        str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--backend", "triton", "--quiet"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("mat-inpaint: error: --backend triton: backend 'triton' cannot run ")
    assert "needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got cpu" in last
    assert "reference and sdpa can run it" in last


# ----------------------------------------------------------------------------------------------
# Loading message, progress and summary
# ----------------------------------------------------------------------------------------------


def test_cli_reports_loading_progress_and_summary(fake_loader, tmp_path, capsys):
    _, _, ck = fake_loader
    for i in range(2):
        _write(tmp_path / "img" / f"{i}.png", _rand_image(16, 16, seed=i))
    out = tmp_path / "out"
    assert inpaint.main(["--checkpoint", str(ck), "--image", str(tmp_path / "img"), "--out", str(out),
                         "--save-masks"]) == 0
    cap = capsys.readouterr()
    assert f"mat-inpaint: loading {ck} on cpu ..." in cap.err and "mat-inpaint: loaded the 16x16 generator in" in cap.err
    assert "1.png (2/2, 16x16, auto: pad): 100%" in cap.err
    assert f"mat-inpaint: wrote 2 images to {out}{__import__('os').sep} in " in cap.out and " s per image)" in cap.out
    assert f"wrote the random masks to {out / 'masks'}" in cap.out
    assert inpaint.main(["--checkpoint", str(ck), "--image", str(tmp_path / "img" / "0.png"), "--out",
                         str(tmp_path / "out1"), "--quiet"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""
    assert (tmp_path / "out1" / "0.png").exists()
    _write(tmp_path / "m.png", np.full((16, 16), 255, np.uint8), "L")
    assert inpaint.main(["--checkpoint", str(ck), "--image", str(tmp_path / "img" / "0.png"), "--mask",
                         str(tmp_path / "m.png"), "--out", str(tmp_path / "out2"), "--save-masks"]) == 0
    assert "--save-masks: nothing to save, the masks come from --mask" in capsys.readouterr().err


def test_progress_advances_inside_an_image():
    """The bar moves with G's layers during a forward, so a single slow image shows progress."""

    class Layered(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
            self.seen = []

        def forward(self, x):
            for layer in (self.a, self.b, self.c, self.a):  # a runs twice: 4 calls for 3 layers
                x = layer(x)
                self.seen.append(report.bar.n)
            return x

    G = Layered()
    report = inpaint._Reporter(quiet=False)
    report.start(G, n_images=2, hooks=True)
    try:
        assert report.per_image == 3 and report.bar.total == 6  # estimated from the layers
        for i in range(2):
            report.image(i, f"{i}.png")
            G(torch.zeros(1, 3, 2, 2))
            report.image_done(i)
        assert report.per_image == 4 and report.bar.total == 8 and report.bar.n == 8
        assert G.seen[:4] == [1, 2, 2, 2]  # capped below the image's share until it is done
        assert G.seen[4:] == [5, 6, 7, 7]
    finally:
        report.close()
    assert not G.a._forward_hooks
