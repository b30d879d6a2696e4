"""Training configuration of ``mat-train`` (defaults: the official README's Places command)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple


@dataclass
class TrainConfig:
    """All options of a run; ``mat-train --help`` lists them with the same names (dashes)."""

    data: str = ""                      # training image folder
    out_dir: str = "runs/mat"           # checkpoints, stats.jsonl, samples/
    val_data: Optional[str] = None      # held-out image folder for PSNR/SSIM/L1 and sample grids
    val_masks: Optional[str] = None     # optional fixed mask folder for the held-out set
    resolution: int = 512
    model: str = "mat"                  # 'mat' (mat_kernels.models) or 'package.module:factory'
    # Optimisation (official: Adam betas (0, 0.99), eps 1e-8, lazy regularisation intervals 4 / 16).
    batch: int = 32                     # global batch (all ranks)
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
    keep_ckpts: int = 3
    eval_every: int = 0                 # 0: only at the end (when val_data is set)
    eval_images: int = 64
    sample_every: int = 0               # 0: only at the end (when val_data is set)
    sample_images: int = 8
    seed: int = 0
    resume: Optional[str] = None        # checkpoint path, or 'latest' (newest in out_dir)
    # Speed.
    device: str = "auto"                # 'auto' (cuda if available), 'cuda' or 'cpu'
    amp: str = "off"                    # autocast for forward passes: off, bf16 or fp16 (+ GradScaler)
    compile: bool = False               # torch.compile G.mapping, G.synthesis and D (inductor)
    grad_checkpoint: bool = False       # torch.utils.checkpoint around transformer layers of G
    checkpoint_modules: Tuple[str, ...] = ("BasicLayer",)
    tensorboard: bool = True            # also write TensorBoard events when it is installed
    progress: bool = True               # tqdm bar on rank 0

    def validate(self) -> "TrainConfig":
        if not self.data:
            raise ValueError("data: a training image folder is required")
        for name in ("batch", "resolution", "total_steps", "log_every", "ckpt_every", "G_reg_interval",
                     "D_reg_interval", "eval_images", "sample_images", "keep_ckpts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive value, got {getattr(self, name)!r}")
        if self.stop_at_step is not None and not 1 <= self.stop_at_step <= self.total_steps:
            raise ValueError(f"stop_at_step: expected 1..total_steps, got {self.stop_at_step}")
        if isinstance(self.amp, bool):  # the earlier boolean form: True meant bf16
            self.amp = "bf16" if self.amp else "off"
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp: expected one of {AMP_MODES}, got {self.amp!r}")
        if self.device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"device: expected 'auto', 'cuda' or 'cpu', got {self.device!r}")
        return self


HELP = {
    "data": "training image folder (searched recursively)",
    "out_dir": "checkpoints, stats.jsonl, samples/ and TensorBoard events",
    "val_data": "held-out image folder: PSNR/SSIM/L1 of G_ema and sample grids",
    "val_masks": "fixed mask folder for the held-out set (paired by sorted index)",
    "resolution": "training crop size (MAT: 256 or 512)",
    "model": "'mat' (mat_kernels.models) or 'package.module:factory' returning (G, D)",
    "batch": "global batch size over all ranks",
    "lr": "Adam learning rate before the lazy-regularisation correction",
    "lrt": "separate learning rate for G parameters whose name contains 'tran'",
    "r1_gamma": "R1 weight gamma (both discriminator branches)",
    "pcp_ratio": "weight of the VGG19 perceptual loss in the generator loss",
    "truncation_psi": "truncation used in training (README: 0.5)",
    "style_mixing_prob": "style mixing probability",
    "vgg_path": "torchvision's vgg19-dcbbb3f4.pth (else $MAT_KERNELS_VGG19 or torch hub's cache; never downloaded)",
    "ema_kimg": "EMA half-life of G_ema in thousands of images",
    "ema_rampup": "EMA ramp-up ratio (None: off)",
    "mirror": "double the dataset with mirrored copies",
    "hole_range": "accepted hole ratio range of the generated masks",
    "mask_variant": "mask generator constants: auto, 256, 512, 256_small, 512_small",
    "workers": "DataLoader worker processes per rank",
    "total_steps": "training length in steps (one step = one global batch)",
    "stop_at_step": "stop after this step (and its checkpoint), e.g. to split a run",
    "log_every": "steps between log lines / stats.jsonl records (the only host syncs)",
    "ckpt_every": "steps between checkpoints",
    "keep_ckpts": "number of checkpoints kept",
    "eval_every": "steps between evaluations on --val-data (0: at the end only)",
    "sample_every": "steps between sample grids (0: at the end only)",
    "resume": "checkpoint to continue from, or 'latest' in --out-dir",
    "device": "auto, cuda or cpu",
    "amp": "autocast for the forward passes: off, bf16 or fp16 (with a gradient scaler); "
           "true/false are accepted for bf16/off",
    "compile": "torch.compile the mapping, synthesis and discriminator (inductor; R1 runs eagerly)",
    "grad_checkpoint": "recompute --checkpoint-modules of G in the backward pass to save memory",
    "checkpoint_modules": "class names wrapped by --grad-checkpoint",
}


AMP_MODES = ("off", "bf16", "fp16")


def _parse_amp(s: str) -> str:
    if s.lower() in AMP_MODES:
        return s.lower()
    try:
        return "bf16" if _parse_bool(s) else "off"
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected one of {AMP_MODES} (or true/false), got {s!r}") from None


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mat-train",
        description="Train MAT (Mask-Aware Transformer) with the fused layers. Launch with "
                    "`torchrun --nproc_per_node N -m mat_kernels.train ...` (NCCL on GPU, gloo on CPU).")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        extra = {"help": HELP[f.name] + " (default: %(default)s)" if f.name in HELP else "default: %(default)s"}
        if f.name in ("betas", "hole_range"):
            p.add_argument(flag, type=float, nargs=2, default=default, metavar=("A", "B"), **extra)
        elif f.name == "amp":
            p.add_argument(flag, type=_parse_amp, default=default, metavar="{off,bf16,fp16}", **extra)
        elif f.name == "checkpoint_modules":
            p.add_argument(flag, nargs="+", default=default, **extra)
        elif isinstance(default, bool):
            p.add_argument(flag, type=_parse_bool, default=default, metavar="BOOL", **extra)
        elif f.name in ("lrt", "ema_rampup"):
            p.add_argument(flag, type=float, default=default, **extra)
        elif f.name in ("stop_at_step", "max_images"):
            p.add_argument(flag, type=int, default=default, **extra)
        elif default is None:
            p.add_argument(flag, type=str, default=None, **extra)
        else:
            p.add_argument(flag, type=type(default), default=default, **extra)
    return p


def config_from_args(argv=None) -> TrainConfig:
    ns = build_parser().parse_args(argv)
    kw = vars(ns)
    for k in ("betas", "hole_range", "checkpoint_modules"):
        kw[k] = tuple(kw[k])
    return TrainConfig(**kw).validate()
