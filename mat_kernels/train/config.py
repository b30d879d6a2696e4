"""Training configuration of ``mat-train`` (defaults: the official README's Places command)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple


class ConfigError(ValueError):
    """A bad option of a run. The message names the command-line flag (``--vgg-path: ...``);
    ``mat-train`` prints it as one ``mat-train: error:`` line and exits with status 2."""


def flag(name: str) -> str:
    """The command-line flag of a TrainConfig field: ``vgg_path`` -> ``--vgg-path``."""
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    """All options of a run; ``mat-train --help`` lists them with the same names (dashes).

    Fields left at None are resolved when the run starts (see ``mat_kernels.train.preflight``):
    ``batch`` (the checkpoint's when resuming, else 32 on CUDA and a memory-checked value on CPU),
    ``tensorboard`` (on when installed), ``export_weights`` (on for ``model='mat'``); ``amp='auto'``
    becomes bf16 (fp16 on a GPU without bf16).
    """

    data: str = ""                      # training image folder
    out_dir: str = "runs/mat"           # checkpoints, stats.jsonl, samples/
    val_data: Optional[str] = None      # held-out image folder for PSNR/SSIM/L1 and sample grids
    val_masks: Optional[str] = None     # optional fixed mask folder for the held-out set
    resolution: int = 512
    model: str = "mat"                  # 'mat' (mat_kernels.models) or 'package.module:factory'
    # Optimisation (official: Adam betas (0, 0.99), eps 1e-8, lazy regularisation intervals 4 / 16).
    batch: Optional[int] = None         # global batch (all ranks); None: see the class docstring
    lr: float = 0.001
    lrt: Optional[float] = None         # separate lr for parameters whose name contains 'tran'
    betas: Tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    G_reg_interval: int = 4
    D_reg_interval: int = 16
    # Loss (README Places command: --pr 0.1 --truncation 0.5 --style_mix 0.5, gamma 10).
    r1_gamma: float = 10.0
    pcp_ratio: float = 0.1
    truncation_psi: float = 0.5
    style_mixing_prob: float = 0.5
    vgg_path: Optional[str] = None      # torchvision vgg19-dcbbb3f4.pth (or $MAT_KERNELS_VGG19)
    # EMA of G: beta = 0.5 ** (batch / (ema_kimg * 1000)), optional ramp-up.
    ema_kimg: float = 10.0
    ema_rampup: Optional[float] = None
    # Networks.
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mbstd_group: int = 8
    # Data.
    mirror: bool = True
    hole_range: Tuple[float, float] = (0.0, 1.0)
    mask_variant: str = "auto"
    workers: int = 2
    max_images: Optional[int] = None
    # Run length and bookkeeping (in steps; one step = one global batch).
    total_steps: int = 1000
    stop_at_step: Optional[int] = None  # stop early (as if killed) after this step, after its checkpoint
    log_every: int = 50
    ckpt_every: int = 1000
    keep_ckpts: int = 3                 # --keep: training states kept (with their weight exports)
    export_weights: Optional[bool] = None  # G_ema as safetensors+JSON beside each training state
    eval_every: int = 0                 # 0: only at the end (when val_data is set)
    eval_images: int = 64
    sample_every: int = 0               # 0: only at the end
    sample_images: int = 8
    seed: int = 0
    resume: Optional[str] = None        # checkpoint path, or 'latest' (newest in out_dir)
    # Speed.
    device: str = "auto"                # 'auto' (cuda if available), 'cuda' or 'cpu'
    amp: str = "off"                    # autocast for forward passes: off, auto, bf16 or fp16 (+ GradScaler)
    compile: bool = False               # torch.compile G.mapping, G.synthesis and D (inductor)
    grad_checkpoint: bool = False       # torch.utils.checkpoint around transformer layers of G
    checkpoint_modules: Tuple[str, ...] = ("BasicLayer",)
    tensorboard: Optional[bool] = None  # TensorBoard events beside stats.jsonl (None: when installed)
    progress: bool = True               # tqdm bar on rank 0, when stderr is a terminal

    def validate(self) -> "TrainConfig":
        if not self.data:
            raise ConfigError("--data: a training image folder is required")
        for name in ("resolution", "total_steps", "log_every", "ckpt_every", "G_reg_interval",
                     "D_reg_interval", "eval_images", "sample_images", "keep_ckpts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_flag_of(name)}: expected a positive value, got {getattr(self, name)!r}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"--batch: expected a positive value, got {self.batch!r}")
        if self.stop_at_step is not None and not 1 <= self.stop_at_step <= self.total_steps:
            raise ConfigError(f"--stop-at-step: expected 1..--total-steps ({self.total_steps}), "
                              f"got {self.stop_at_step}")
        if isinstance(self.amp, bool):  # the earlier boolean form: True meant bf16
            self.amp = "bf16" if self.amp else "off"
        if self.amp not in AMP_MODES:
            raise ConfigError(f"--amp: expected one of {AMP_MODES}, got {self.amp!r}")
        if self.device not in ("auto", "cuda", "cpu"):
            raise ConfigError(f"--device: expected 'auto', 'cuda' or 'cpu', got {self.device!r}")
        if self.model != "mat" and ":" not in self.model:
            raise ConfigError(f"--model: expected 'mat' or 'package.module:factory', got {self.model!r}")
        return self


def _flag_of(name: str) -> str:
    return "--keep" if name == "keep_ckpts" else flag(name)


DEFAULT_CUDA_BATCH = 32  # the README's Places recipe
MAX_CPU_BATCH = 32

HELP = {
    "data": "training image folder (searched recursively)",
    "out_dir": "checkpoints, weight exports, stats.jsonl, samples/ and TensorBoard events",
    "val_data": "held-out image folder: PSNR/SSIM/L1 of G_ema and sample grids",
    "val_masks": "fixed mask folder for the held-out set (paired by sorted index)",
    "resolution": "training crop size (MAT: 256 or 512)",
    "model": "'mat' (mat_kernels.models) or 'package.module:factory' returning (G, D)",
    "batch": f"global batch size over all ranks. Default: the checkpoint's with --resume; else "
             f"{DEFAULT_CUDA_BATCH} on CUDA (the README recipe) and, on CPU, the largest power of two up to "
             f"{MAX_CPU_BATCH} whose estimated memory fits the memory available",
    "lr": "Adam learning rate before the lazy-regularisation correction",
    "lrt": "separate learning rate for G parameters whose name contains 'tran' (default: --lr)",
    "betas": "Adam betas before the lazy-regularisation correction",
    "eps": "Adam epsilon",
    "G_reg_interval": "lazy regularisation interval of G (sets the Adam correction; path length is off)",
    "D_reg_interval": "lazy regularisation interval of D: R1 runs every this many steps",
    "r1_gamma": "R1 weight gamma (both discriminator branches)",
    "pcp_ratio": "weight of the VGG19 perceptual loss in the generator loss (0: no perceptual loss, "
                 "no VGG19 weights needed)",
    "truncation_psi": "truncation used in training (README: 0.5)",
    "style_mixing_prob": "style mixing probability",
    "vgg_path": "torchvision's vgg19-dcbbb3f4.pth for the perceptual loss (else $MAT_KERNELS_VGG19 or torch "
                "hub's cache; never downloaded)",
    "ema_kimg": "EMA half-life of G_ema in thousands of images",
    "ema_rampup": "EMA ramp-up ratio (default: off)",
    "z_dim": "latent size of G's mapping network",
    "w_dim": "intermediate latent (style) size of G",
    "mapping_layers": "fully connected layers in G's mapping network",
    "mbstd_group": "minibatch standard deviation group size of D",
    "mirror": "double the dataset with mirrored copies",
    "hole_range": "accepted hole ratio range of the generated masks",
    "mask_variant": "mask generator constants: auto, 256, 512, 256_small, 512_small",
    "workers": "DataLoader worker processes per rank",
    "max_images": "use only the first N training images (sorted by path)",
    "total_steps": "training length in steps (one step = one global batch)",
    "stop_at_step": "stop after this step (and its checkpoint), e.g. to split a run",
    "log_every": "steps between log lines / stats.jsonl records (the only host syncs)",
    "ckpt_every": "steps between checkpoints",
    "keep_ckpts": "training checkpoints kept (older ones are deleted, with their weight exports). Each "
                  "holds G, D, G_ema and both Adam states, which --resume needs: about 1.4 GB at 256 or 512",
    "export_weights": "also write G_ema alone beside each checkpoint as weights-STEP.{json,safetensors} "
                      "(about 250 MB; what mat-inpaint --checkpoint reads). Default: on for --model mat",
    "eval_every": "steps between evaluations on --val-data (0: at the end only; no evaluation without "
                  "--val-data)",
    "eval_images": "held-out images per evaluation",
    "sample_every": "steps between sample grids (0: at the end only); from --val-data, else from the "
                    "first training images",
    "sample_images": "images (rows) per sample grid",
    "seed": "random seed (each rank uses seed * ranks + rank)",
    "resume": "checkpoint to continue from, or 'latest' in --out-dir",
    "device": "auto, cuda or cpu",
    "amp": "autocast for the forward passes: bf16, or fp16 (with a gradient scaler); --amp alone: "
           "bf16 on CPU and bf16-capable GPUs, else fp16",
    "compile": "torch.compile the mapping, synthesis and discriminator (inductor; R1 runs eagerly)",
    "grad_checkpoint": "recompute --checkpoint-modules of G in the backward pass to save memory",
    "checkpoint_modules": "class names wrapped by --grad-checkpoint",
    "tensorboard": "also write TensorBoard events (stats.jsonl is always written). Default: when "
                   "tensorboard is installed",
    "progress": "progress bar on rank 0 (shown only when stderr is a terminal)",
}

AMP_MODES = ("off", "auto", "bf16", "fp16")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse_amp(s: str) -> str:
    s = s.lower()
    if s in ("auto", "bf16", "fp16"):
        return s
    if s in _TRUE or s in _FALSE:  # the earlier --amp true/false/off spellings
        return "auto" if s in _TRUE else "off"
    raise argparse.ArgumentTypeError(f"expected bf16 or fp16 (or no value), got {s!r}")


METAVARS = {"data": "DIR", "out_dir": "DIR", "val_data": "DIR", "val_masks": "DIR", "vgg_path": "FILE",
            "resume": "CKPT", "model": "NAME", "device": "{auto,cuda,cpu}", "mask_variant": "NAME"}


def _help(name: str, default) -> str:
    text = HELP[name]
    if isinstance(default, bool):
        return text + (" (default: on)" if default else " (default: off)")
    if default is None or "Default:" in text:
        return text
    return text + " (default: %(default)s)"


def _add_option(p: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    name, default = f.name, f.default
    flags = ["--keep", flag(name)] if name == "keep_ckpts" else [flag(name)]
    kw = {"default": default, "help": _help(name, default), "dest": name}
    if name == "amp":
        p.add_argument("--amp", nargs="?", const="auto", type=_parse_amp, metavar="bf16|fp16", **kw)
        p.add_argument("--no-amp", dest="amp", action="store_const", const="off", help="no autocast (default)")
    elif name in ("betas", "hole_range"):
        p.add_argument(*flags, type=float, nargs=2, metavar=("A", "B"), **kw)
    elif name == "checkpoint_modules":
        p.add_argument(*flags, nargs="+", metavar="CLASS", **kw)
    elif f.type in ("bool", "Optional[bool]"):
        p.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
    elif name in ("lrt", "ema_rampup"):
        p.add_argument(*flags, type=float, metavar="X", **kw)
    elif name in ("stop_at_step", "max_images", "batch") or isinstance(default, int):
        p.add_argument(*flags, type=int, metavar="N", **kw)
    elif isinstance(default, float):
        p.add_argument(*flags, type=float, metavar="X", **kw)
    else:  # strings
        if name == "data":
            kw = {"required": True, "help": HELP[name]}
        p.add_argument(*flags, type=str, metavar=METAVARS[name], **kw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mat-train",
        usage="mat-train --data DIR [options]  (all options: mat-train --help; or: mat-train export CKPT [OUT])",
        description="Train MAT (Mask-Aware Transformer) with the fused layers. Launch with "
                    "`torchrun --nproc_per_node N -m mat_kernels.cli.train ...` (NCCL on GPU, gloo on CPU).",
        epilog="Before any network is built, the run is checked: image folders, VGG19 weights (or "
               "--pcp-ratio 0), the --resume checkpoint, and the memory the batch needs. Yes/no options "
               "are plain flags (--compile, --no-mirror). `mat-train export CKPT [OUT]` writes the G_ema "
               "weights of a training checkpoint in the format mat-inpaint reads.")
    for f in dataclasses.fields(TrainConfig):
        _add_option(p, f)
    return p


def config_from_args(argv=None, parser: Optional[argparse.ArgumentParser] = None) -> TrainConfig:
    """TrainConfig from command-line arguments; bad values raise ConfigError naming the flag
    (argparse's own errors exit with status 2)."""
    ns = (parser or build_parser()).parse_args(argv)
    kw = vars(ns)
    for k in ("betas", "hole_range", "checkpoint_modules"):
        kw[k] = tuple(kw[k])
    return TrainConfig(**kw).validate()
