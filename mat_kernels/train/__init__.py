"""``mat-train``: distributed MAT training (DDP over torchrun; NCCL on GPU, gloo on CPU).

Usage (the README's Places-512 recipe on 8 GPUs; defaults follow it)::

    torchrun --nproc_per_node 8 -m mat_kernels.cli.train --data /data/places/train \\
        --val-data /data/places/val --out-dir runs/places512 --resolution 512 --batch 32 \\
        --vgg-path ~/.cache/torch/hub/checkpoints/vgg19-dcbbb3f4.pth --amp
    # continue after an interruption, bit for bit (same number of ranks):
    torchrun --nproc_per_node 8 -m mat_kernels.cli.train ... --resume latest

The options are checked before any network is built (:mod:`.preflight`); a bad one ends
``mat-train`` with one ``mat-train: error: --flag: ...`` line (exit status 2).

Outputs in --out-dir: ``checkpoint-XXXXXXXX.pt`` (G, D, G_ema, both Adam states, step, config and
every rank's RNG states and G/G_ema buffers; written to a temporary file then renamed; the newest
--keep are kept), ``weights-XXXXXXXX.{json,safetensors}`` beside each (G_ema alone, for
mat-inpaint; :mod:`.export`), ``stats.jsonl`` (one JSON record per log interval),
``samples/step-XXXXXXXX.png`` (labelled columns: input | output | ground truth) and TensorBoard
events when tensorboard is installed.
"""
from .config import TrainConfig, build_parser, config_from_args
from .loop import train

__all__ = ["TrainConfig", "build_parser", "config_from_args", "train"]
