"""mat_kernels.data.images: every PIL mode is decoded exactly or refused, and written back in a
format that keeps the known pixels (issue #15: 16-bit greyscale came out pure white)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mat_kernels.data import images as io

H, W = 6, 10


def _base_rgb(seed=0):
    return np.random.RandomState(seed).randint(0, 256, (H, W, 3), dtype=np.uint8)


def _grey16(seed=1):
    g = np.random.RandomState(seed).randint(0, 65536, (H, W)).astype(np.uint16)
    g[0, 0], g[0, 1] = 0, 65535  # the ends of the range, where an 8-bit clip shows
    return g


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel PNG (grey, grey+alpha, RGB or RGBA), which PIL cannot write."""
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


# mode -> (how to make it from the base RGB image, a file format that holds it or None)
EIGHT_BIT = {
    "1": ("TIFF",), "L": ("PNG",), "P": ("PNG",), "RGB": ("PNG",), "RGBX": ("TIFF",), "CMYK": ("JPEG",),
    "YCbCr": ("TIFF",), "LAB": ("TIFF",), "HSV": (None,),
}
WITH_ALPHA = {"LA": ("PNG",), "PA": ("TIFF",), "RGBA": ("PNG",), "RGBa": (None,), "La": (None,)}


def _in_mode(mode: str) -> Image.Image:
    rgba = np.concatenate([_base_rgb(), np.random.RandomState(2).randint(0, 256, (H, W, 1), dtype=np.uint8)], 2)
    base = Image.fromarray(rgba if mode in WITH_ALPHA else rgba[..., :3])
    if mode == "La":
        return base.convert("LA").convert("La")
    if mode == "PA":
        return base.convert("P").convert("PA")
    return base.convert(mode)


def _through_file(im: Image.Image, fmt, tmp_path: Path) -> Image.Image:
    if fmt is None:
        return im
    path = tmp_path / f"x.{fmt.lower()}"
    im.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    reopened = Image.open(path)
    reopened.load()
    return reopened


@pytest.mark.parametrize("mode", sorted(EIGHT_BIT))
def test_eight_bit_modes_decode_to_pils_rgb(mode, tmp_path):
    im = _through_file(_in_mode(mode), EIGHT_BIT[mode][0], tmp_path)
    pic = io.decode_image(im)
    assert pic.rgb.dtype == np.uint8 and pic.rgb.shape == (H, W, 3) and pic.alpha is None and pic.note is None
    assert np.array_equal(pic.rgb, np.asarray(im.convert("RGB")))
    if im.mode in ("L", "1"):
        assert np.array_equal(pic.rgb, np.repeat(np.asarray(im.convert("L"))[..., None], 3, axis=2))
    if im.mode == "RGB":
        assert np.array_equal(pic.rgb, _base_rgb())


@pytest.mark.parametrize("mode", sorted(WITH_ALPHA))
def test_alpha_modes_keep_alpha(mode, tmp_path):
    im = _through_file(_in_mode(mode), WITH_ALPHA[mode][0], tmp_path)
    pic = io.decode_image(im)
    straight = np.asarray((im.convert("LA") if im.mode == "La" else im).convert("RGBA"))
    assert pic.rgb.dtype == np.uint8 and pic.alpha is not None
    assert np.array_equal(pic.rgb, straight[..., :3]) and np.array_equal(pic.alpha, straight[..., 3])


def test_transparent_palette_entry_becomes_alpha(tmp_path):
    im = Image.fromarray(_base_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    index = np.asarray(im)
    im.info["transparency"] = int(index[0, 0])
    im = _through_file(im, "PNG", tmp_path)
    pic = io.decode_image(im)
    assert np.array_equal(pic.alpha == 0, index == index[0, 0])
    assert np.array_equal(pic.rgb, np.asarray(im.convert("RGBA"))[..., :3])


@pytest.mark.parametrize("mode,fmt", [("I;16", "PNG"), ("I;16B", "PNG"), ("I;16B", "TIFF"), ("I;16L", "TIFF"),
                                      ("I;16N", None), ("I", "TIFF")])
def test_sixteen_bit_greyscale_is_kept(mode, fmt, tmp_path):
    g = _grey16()
    # built from bytes: PIL's convert() between 16-bit modes clips at 255
    order = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "=i4"}[mode]
    im = Image.frombytes(mode, (W, H), g.astype(order).tobytes())
    im = _through_file(im, fmt, tmp_path)
    pic = io.decode_image(im)
    assert pic.rgb.dtype == np.uint16 and pic.greyscale16 and pic.alpha is None
    assert all(np.array_equal(pic.rgb[..., c], g) for c in range(3))


def test_png16_helper_writes_what_pil_reads_as_16_bit_grey():
    g = _grey16()
    im = Image.open(__import__("io").BytesIO(png16(g)))
    assert im.mode == "I;16" and np.array_equal(np.asarray(im), g)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_sixteen_bit_colour_is_read_at_eight_bits_with_a_note(channels, tmp_path):
    a = np.random.RandomState(3).randint(0, 65536, (H, W, channels)).astype(np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(png16(a))
    pic = io.load_image(path)
    assert pic.rgb.dtype == np.uint8 and "16-bit colour" in pic.note and str(path) in pic.note
    high = (a >> 8).astype(np.uint8)
    colour = np.repeat(high[..., :1], 3, axis=2) if channels == 2 else high[..., :3]
    assert np.array_equal(pic.rgb, colour)
    if channels in (2, 4):
        assert np.array_equal(pic.alpha, high[..., -1])


def test_refused_modes_say_why(tmp_path):
    f = Image.fromarray(np.random.RandomState(0).rand(H, W).astype(np.float32))
    path = tmp_path / "float.tif"
    f.save(path)
    assert f.mode == "F"
    for call in (lambda: io.decode_image(f, "float.tif"), lambda: io.load_image(path), lambda: io.image_size(path)):
        with pytest.raises(ValueError, match=r"float.tif: 32-bit float pixels \(PIL mode F\) have no defined white"):
            call()
    big = Image.fromarray(np.full((H, W), 70000, np.int32))
    with pytest.raises(ValueError, match=r"x.tif: 32-bit integer pixels \(PIL mode I\) outside 0..65535"):
        io.decode_image(big, "x.tif")


def test_sixteen_bit_masks(tmp_path):
    g = np.full((H, W), 65535, np.uint16)
    g[2:4, 3:7] = 0
    g[0, 0] = 32768
    path = tmp_path / "m16.png"
    Image.fromarray(g).save(path)
    m = io.read_mask(path)
    assert m.dtype == np.float32 and np.array_equal(m == 1, g == 65535) and np.array_equal(m == 0, g == 0)
    assert abs(m[0, 0] - 32768 / 65535) < 1e-7
    f = Image.fromarray(np.where(g == 65535, 1.0, 0.0).astype(np.float32))
    f.save(tmp_path / "mf.tif")
    assert np.array_equal(io.read_mask(tmp_path / "mf.tif") == 1, g == 65535)
    Image.fromarray(np.full((H, W), 2.0, np.float32)).save(tmp_path / "bad.tif")
    with pytest.raises(ValueError, match=r"bad.tif.*values must lie in \[0, 1\]"):
        io.read_mask(tmp_path / "bad.tif")


def test_sixteen_bit_tensor_round_trip_is_exact():
    g = _grey16()
    rgb = np.repeat(g[..., None], 3, axis=2)
    x = io.image_to_tensor(rgb)
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert np.array_equal(io.tensor_to_image(x, np.uint16), rgb)
    assert np.array_equal(io.tensor_to_uint8(io.image_to_tensor(_base_rgb())), _base_rgb())
    with pytest.raises(ValueError, match="uint8 or uint16"):
        io.image_to_tensor(rgb.astype(np.int32))


def test_output_pixels_keep_known_pixels_and_alpha():
    mask = np.ones((H, W), np.float32)
    mask[1:3, 2:5], mask[4, 4] = 0, 0.5
    known = mask == 1
    fill16 = np.full((H, W, 3), 1000, np.uint16)
    pic16 = io.Picture(np.repeat(_grey16()[..., None], 3, axis=2))
    out = io.output_pixels(pic16, np.where(known[..., None], pic16.rgb, fill16), mask)
    assert out.dtype == np.uint16 and out.shape == (H, W)
    assert np.array_equal(out[known], _grey16()[known]) and np.all(out[mask == 0] == 1000)
    alpha = np.random.RandomState(4).randint(0, 256, (H, W), dtype=np.uint8)
    pic = io.Picture(_base_rgb(), alpha)
    out = io.output_pixels(pic, _base_rgb(), mask)
    assert out.shape == (H, W, 4) and np.array_equal(out[..., :3], _base_rgb())
    assert np.array_equal(out[..., 3][known], alpha[known]) and np.all(out[..., 3][mask == 0] == 255)
    assert out[4, 4, 3] == round(0.5 * alpha[4, 4] + 0.5 * 255)
    assert io.output_pixels(io.Picture(_base_rgb()), _base_rgb(), mask) is not None


@pytest.mark.parametrize("arr", [np.zeros((H, W, 3), np.uint8), np.zeros((H, W, 4), np.uint8),
                                 np.zeros((H, W), np.uint16)])
def test_write_png_modes(arr, tmp_path):
    io.write_png(tmp_path / "o.png", arr + 7)
    back = Image.open(tmp_path / "o.png")
    assert back.mode == {3: "RGB", 4: "RGBA", 2: "I;16"}[arr.shape[2] if arr.ndim == 3 else 2]
    assert np.array_equal(np.asarray(back), arr + 7)
    with pytest.raises(ValueError, match="image must be"):
        io.write_png(tmp_path / "bad.png", np.zeros((H, W, 3), np.uint16))
