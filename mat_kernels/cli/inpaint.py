"""``mat-inpaint``: fill the holes of images with a MAT generator (the official generate_image.py,
made safe and size-robust).

    mat-inpaint --checkpoint Places_512_FullData.pkl --image photos/ --mask masks/ --out results/

What it does, per image (sorted by file name, paired with the masks by sorted file name):
  read the image and its mask (grayscale / 255, or / 65535 at 16 bits; white = keep, black =
  fill, not thresholded), run the generator, write ``<out>/<input stem>.png`` of the input's
  size. Pixels whose mask is pure white are copied from the input bit for bit.

Pixel formats (``mat_kernels.data.images.decode_image`` / ``output_pixels``): 8-bit images of
any PIL mode are converted to RGB and written as 8-bit RGB PNG; 16-bit greyscale images stay
16-bit (the network sees x / 32767.5 - 1) and are written as 16-bit greyscale PNG; images with
transparency are written as RGBA with their alpha kept where the mask is white and opaque in
the holes. 16-bit colour files, which PIL only decodes to 8 bits, are processed at 8 bits with
a warning; 32-bit float images are refused.

Messages: loading and a progress bar go to stderr, the summary (what was written where) to
stdout; ``--quiet`` keeps only warnings and errors. Every error is one line
(``mat-inpaint: error: ...``, exit status 2).

Randomness follows the official script: ``--seed`` seeds Python, numpy and torch once; then per
image a random mask is drawn if none is given (numpy), z = numpy randn(1, z_dim), and the forward
draws its dropout maps (and 'random' noise) from torch.

Sizes (``--fit``): the network only accepts heights and widths that are multiples of its
resolution R (256 or 512; the official script crashes otherwise).
  auto (default): pad for images of at most 2R per side, crop above (the choice is shown in the
      progress line).
  pad: reflect-pad image and mask to the next multiples of R, run the network fully
      convolutionally at the image's own scale (like the official code for multiples of 512),
      crop back. An R x R image goes through unchanged. Padded sizes other than R x R force
      noise_mode 'random' (the constant noise maps are R x R; the official script does the same).
  resize: reflect-pad to a square, resize to R x R, run, resize the result back and paste it into
      the holes at full resolution. Constant cost per image and the scale the network was
      trained at; generated content is softer when the image is much larger than R.
  crop: for large photos with small holes (as IOPaint does by default). The holes are grouped
      into regions (touching holes form one; regions whose boxes grown by --crop-margin overlap
      are merged); each region's box plus the margin goes through the network as one R x R window
      at the photo's own scale, or, when the box is larger than R, as the smallest square around
      it resized to R x R, with only hole pixels pasted back. Cost: one R x R pass per region,
      whatever the photo's size. Each hole pixel is filled once, by its region's window; holes of
      regions not yet done are holes to the network too.

CPU: the default (fp32 weights, eager, backend auto) is the fastest path measured here whose
error is within the fp32 tolerance. On a CPU with AVX2/AVX-512 kernels, auto runs window attention
on sdpa and the convolutions on the inference fast path: 2.9 s per 512x512 image against 5.4 s for
the official code and 5.2 s for --backend reference (relative L2 3.5e-6 from the official output;
2 cores of a Xeon with AVX-512 and AMX, torch 2.13; benchmarks/results/cpu-official-side-by-side-512.json).
--dtype bf16 is faster where the CPU has bf16 instructions (AVX-512 BF16 / AMX: 1.1 s there) at
2% to 6% relative error (two measurements on different inputs), outside the fp32 tolerance; on CPUs without them it can be slower.
--compile saved another 10% there (2.4 s per image) after a 140 s compile per image size: it pays
off only for many images of one size.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data import images as io
from ..backends import NoBackendError
from ..checkpoint import CheckpointError, load_generator
from ..inpaint import (CROP_MARGIN, DTYPES, FIT_MODES, NOISE_MODES, choose_fit, crop_windows, inpaint_array,
                       prepare_generator)

PROG = "mat-inpaint"


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose ``cleanup`` runs before an error is printed (it takes the
    progress bar down, so that the error is the last line)."""

    def cleanup(self) -> None:
        pass

    def error(self, message):
        self.cleanup()
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Inpaint images with a MAT generator (official .pkl, state-dict .pth/.pt, or "
                    "mat_kernels safetensors+JSON checkpoints; nothing from the checkpoint is "
                    "executed).",
        epilog="Image sizes: the network needs multiples of its resolution R. --fit auto (default) "
               "pads images of at most 2R per side and crops larger ones (the progress line says "
               "which). --fit pad reflect-pads to the next multiples of R, runs at the image's own "
               "scale and crops back (R x R images are processed exactly as by the official "
               "script); --fit resize pads to a square, resizes to R x R and pastes the upscaled "
               "result into the holes; --fit crop runs one R x R window per hole region (plus "
               "--crop-margin of context) at the photo's own scale, resized down only when the "
               "region is larger than R, and pastes back only hole pixels. "
               "Outputs always have the input's size and keep pure-white-mask pixels bit-exact "
               "(16-bit greyscale in, 16-bit greyscale PNG out; alpha is kept).",
    )
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="official .pkl, .pth/.pt state dict, or mat_kernels .safetensors/.json/dir")
    p.add_argument("--image", required=True, metavar="PATH", help="an image file or a folder of images")
    p.add_argument("--mask", metavar="PATH",
                   help="a mask file (with --image FILE) or a folder of masks paired with the images "
                        "by sorted file name; white = keep, black = fill, grey blends. Default: a "
                        "random free-form mask per image (mat_kernels.data.holes.RandomMask)")
    p.add_argument("--invert-mask", action="store_true", help="masks are white = fill, black = keep")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--resolution", type=int, default=None,
                   help="the network's resolution; default: read from the checkpoint (512 for the "
                        "released Places/CelebA-HQ-512 models). If given it must match")
    p.add_argument("--seed", type=int, default=240, help="random seed (default: 240, as the official script)")
    p.add_argument("--truncation", type=float, default=1.0, help="truncation psi (default: 1)")
    p.add_argument("--noise-mode", choices=NOISE_MODES, default="const",
                   help="StyleGAN noise (default: const; the official script forces 'random' unless "
                        "--resolution is 512, pass --noise-mode random to reproduce that at 256)")
    p.add_argument("--fit", choices=FIT_MODES, default="auto",
                   help="how to handle other sizes (default auto: pad up to 2R per side, crop above; see below)")
    p.add_argument("--crop-margin", type=int, default=CROP_MARGIN, metavar="PX",
                   help=f"context around each hole region with --fit crop (default {CROP_MARGIN}, IOPaint's)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--backend", default="auto",
                   help="kernel backend for attention / mask updates: auto, reference, sdpa, triton, cuda")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                   help="weights and activations: fp32 (default: on CPU the fastest path within the "
                        "fp32 tolerance), bf16 (on CPUs with AVX-512 BF16/AMX about 2.5x faster at "
                        "2-6%% relative error) or fp16 (for CUDA; slow on CPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the generator (inductor); the first image of each size compiles "
                        "(about 2 minutes at 512 on 2 CPU cores), so it pays off only for many images of one size")
    p.add_argument("--save-masks", action="store_true",
                   help="also write generated random masks to <out>/masks/<name>.png")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no loading message, progress bar or summary (warnings and errors still go "
                        "to stderr)")
    return p


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def _pairs(parser, args) -> Tuple[List[Path], List[Optional[Path]]]:
    img_path = Path(args.image)
    if not img_path.exists():
        parser.error(f"--image: {img_path} does not exist")
    if img_path.is_dir():
        images = io.list_images(img_path)
        if not images:
            parser.error(f"--image: no images ({', '.join(io.IMAGE_EXTS)}) in folder {img_path}")
    else:
        images = [img_path]
    if args.mask is None:
        return images, [None] * len(images)
    mask_path = Path(args.mask)
    if not mask_path.exists():
        parser.error(f"--mask: {mask_path} does not exist")
    if img_path.is_dir() != mask_path.is_dir():
        parser.error(f"--mask: give a folder of masks with a folder of images and a file with a "
                     f"file (--image {img_path} is a {'folder' if img_path.is_dir() else 'file'}, "
                     f"--mask {mask_path} is a {'folder' if mask_path.is_dir() else 'file'})")
    masks = io.list_images(mask_path) if mask_path.is_dir() else [mask_path]
    if len(masks) != len(images):
        parser.error(f"--mask: {len(masks)} masks in {mask_path} for {len(images)} images in "
                     f"{img_path} (they are paired by sorted file name)")
    return images, masks


def _check_sizes(parser, images, masks):
    for ip, mp in zip(images, masks):
        try:
            isize = io.image_size(ip)
        except ValueError as exc:
            parser.error(f"--image: {exc}")
        if mp is None:
            continue
        try:
            msize = io.image_size(mp, mask=True)
        except ValueError as exc:
            parser.error(f"--mask: {exc}")
        if msize != isize:
            parser.error(f"--mask: {mp.name} is {msize[1]}x{msize[0]} but {ip.name} is "
                         f"{isize[1]}x{isize[0]} (masks must have their image's size)")


def _outputs(parser, out_dir: Path, images: Sequence[Path]) -> List[Path]:
    if out_dir.exists() and not out_dir.is_dir():
        parser.error(f"--out: {out_dir} is an existing file; --out names a folder (created if needed) "
                     f"where each output is written as <input name>.png")
    outs = [out_dir / (p.stem + ".png") for p in images]
    seen = {}
    for ip, op in zip(images, outs):
        if op in seen:
            parser.error(f"--image: {seen[op].name} and {ip.name} would both be written to {op.name}")
        seen[op] = ip
        if op.exists() and op.resolve() == ip.resolve():
            parser.error(f"--out: writing {op} would overwrite its input; choose another folder")
    return outs


def _device(parser, name: Optional[str]) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        parser.error(f"--device: {exc}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device: {name} requested but CUDA is not available")
    return dev


def _random_mask(H: int, W: int) -> np.ndarray:
    try:
        from ..data.holes import RandomMask
    except ImportError as exc:  # pragma: no cover - masks ships with the package
        raise RuntimeError(f"no --mask given and random masks are unavailable: {exc}") from None
    # Square generator: draw at the longer side and crop (an R x R image gets exactly the
    # official RandomMask(R)).
    return RandomMask(max(H, W))[0, :H, :W].astype(np.float32)


class _Reporter:
    """Messages on stderr (progress, notes) and the summary on stdout; ``quiet`` keeps only
    warnings. One tqdm bar runs over the whole command; within an image it is advanced by
    forward hooks on G's layers (modules with their own parameters or buffers), so a single
    image on CPU shows progress too. The number of layer calls per image is counted on the
    first image (modules are estimated until then)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.handles = []

    def say(self, msg: str) -> None:
        if not self.quiet:
            self._write(f"{PROG}: {msg}")

    def warn(self, msg: str) -> None:
        self._write(f"{PROG}: warning: {msg}")

    def _write(self, msg: str) -> None:
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)  # above the bar, if one is shown

    def start(self, G, n_images: int, hooks: bool) -> None:
        from tqdm import tqdm
        layers = []
        if hooks and isinstance(G, torch.nn.Module):
            layers = [m for m in G.modules()
                      if next(m.parameters(recurse=False), None) is not None
                      or next(m.buffers(recurse=False), None) is not None]
        self.n_images, self.per_image, self.calls = n_images, max(len(layers), 1), 0
        self.bar = tqdm(total=n_images * self.per_image, disable=self.quiet, file=sys.stderr, desc=PROG,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        self.handles = [m.register_forward_hook(self._tick) for m in layers] if not self.quiet else []

    def _tick(self, *_) -> None:
        self.calls += 1
        if self.calls < self.per_image:
            self.bar.update(1)

    def image(self, i: int, name: str) -> None:
        self.calls = 0
        self.desc = f"{name} ({i + 1}/{self.n_images}"
        self.bar.set_description_str(self.desc + ")")

    def detail(self, text: str) -> None:
        """Add ``text`` to the current image's description (its size and how it is fitted)."""
        self.bar.set_description_str(f"{self.desc}, {text})")

    def image_done(self, i: int) -> None:
        if i == 0 and self.calls > 0:
            self.per_image = self.calls
            self.bar.total = self.n_images * self.per_image
        self.bar.n = (i + 1) * self.per_image
        self.bar.refresh()

    def close(self, leave: bool = True) -> None:
        """Remove the hooks and close the bar (``leave=False``: erase it, before an error)."""
        for h in self.handles:
            h.remove()
        self.handles = []
        if self.bar is not None:
            self.bar.leave = leave
            self.bar.close()
            self.bar = None


def _load(parser, args, device, report: _Reporter):
    """The generator, its backend set and converted; every failure is a one-line CLI error."""
    report.say(f"loading {args.checkpoint} on {device} ...")
    t0 = time.perf_counter()
    try:
        G = load_generator(Path(args.checkpoint), device=device, resolution=args.resolution)
    except (CheckpointError, OSError, ValueError) as exc:
        parser.error(f"--checkpoint: {_one_line(exc)}")
    except Exception as exc:  # e.g. pickle.UnpicklingError for a refused global
        parser.error(f"--checkpoint: cannot load {args.checkpoint}: {type(exc).__name__}: {_one_line(exc)}")
    if hasattr(G, "set_backend"):
        try:
            G.set_backend(args.backend)
        except (ValueError, AttributeError) as exc:
            parser.error(f"--backend: {exc}")
    G = prepare_generator(G, args.dtype, args.compile)
    R = getattr(G, "img_resolution", "?")
    report.say(f"loaded the {R}x{R} generator in {time.perf_counter() - t0:.1f} s")
    return G


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _inpaint_one(parser, args, G, ip: Path, mp: Optional[Path], op: Path, device, report: _Reporter) -> None:
    try:
        picture = io.load_image(ip)
    except ValueError as exc:
        parser.error(f"--image: {_one_line(exc)}")
    try:
        mask = io.read_mask(mp, invert=args.invert_mask) if mp is not None else None
    except ValueError as exc:
        parser.error(f"--mask: {_one_line(exc)}")
    if picture.note:
        report.warn(picture.note)
    H, W = picture.rgb.shape[:2]
    if mask is None:
        mask = _random_mask(H, W)
        if args.save_masks:
            _write(parser, out_mask_path(op), np.repeat((mask * 255).round().astype(np.uint8)[..., None], 3, axis=2))
    z = torch.from_numpy(np.random.randn(1, G.z_dim)).float().to(device)
    R = int(G.img_resolution)
    fit = choose_fit(H, W, R) if args.fit == "auto" else args.fit
    how = ("auto: " if args.fit == "auto" else "fit ") + fit
    if fit == "crop":
        n = len(crop_windows(mask, R, args.crop_margin)[1])
        how += f", {n} window{'s' if n != 1 else ''}"
    report.detail(f"{W}x{H}, {how}")
    try:
        result = inpaint_array(G, picture.rgb, mask, z, fit=fit, truncation=args.truncation,
                               noise_mode=args.noise_mode, crop_margin=args.crop_margin)
    except NoBackendError as exc:
        parser.error(f"--backend {args.backend}: {exc.summary()}")
    _write(parser, op, io.output_pixels(picture, result, mask))


def out_mask_path(op: Path) -> Path:
    """Where ``--save-masks`` writes the random mask drawn for output ``op``."""
    return op.parent / "masks" / op.name


def _write(parser, path: Path, pixels: np.ndarray) -> None:
    try:
        io.write_png(path, pixels)
    except OSError as exc:
        parser.error(f"--out: cannot write {path}: {exc.strerror or exc}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not math.isfinite(args.truncation):
        parser.error(f"--truncation: must be a finite number, got {args.truncation}")
    if args.resolution is not None and (args.resolution < 1 or args.resolution & (args.resolution - 1)):
        parser.error(f"--resolution: must be a power of two (256 or 512), got {args.resolution}")
    if args.crop_margin < 0:
        parser.error(f"--crop-margin: must be 0 or more pixels, got {args.crop_margin}")
    if not Path(args.checkpoint).exists():
        parser.error(f"--checkpoint: {args.checkpoint} does not exist")
    images, masks = _pairs(parser, args)
    _check_sizes(parser, images, masks)
    out_dir = Path(args.out)
    outs = _outputs(parser, out_dir, images)
    device = _device(parser, args.device)
    report = _Reporter(args.quiet)
    G = _load(parser, args, device, report)
    save_masks = args.save_masks and masks[0] is None
    if args.save_masks and not save_masks:
        report.say("--save-masks: nothing to save, the masks come from --mask")
    try:
        (out_dir / "masks" if save_masks else out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out: cannot create {out_dir}: {exc.strerror or exc}")

    # Seeded once, before the loop, as in the official script.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    report.start(G, len(images), hooks=not args.compile)  # hooks in a compiled graph would not run
    parser.cleanup = lambda: report.close(leave=False)
    try:
        for i, (ip, mp, op) in enumerate(zip(images, masks, outs)):
            report.image(i, ip.name)
            _inpaint_one(parser, args, G, ip, mp, op, device, report)
            report.image_done(i)
    finally:
        report.close()
    _summary(report, outs, out_dir, time.perf_counter() - t0, save_masks)
    return 0


def _summary(report: _Reporter, outs: Sequence[Path], out_dir: Path, seconds: float, save_masks: bool) -> None:
    if report.quiet:
        return
    if len(outs) == 1:
        print(f"{PROG}: wrote {outs[0]} in {seconds:.1f} s")
    else:
        print(f"{PROG}: wrote {len(outs)} images to {out_dir}{os.sep} in {seconds:.1f} s "
              f"({seconds / len(outs):.1f} s per image)")
    if save_masks:
        print(f"{PROG}: wrote the random masks to {out_mask_path(outs[0]).parent}{os.sep} "
              f"(same file names)")


if __name__ == "__main__":
    sys.exit(main())
