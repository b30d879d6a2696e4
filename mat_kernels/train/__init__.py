"""``mat-train``: distributed MAT training (DDP over torchrun; NCCL on GPU, gloo on CPU)."""
from .config import TrainConfig, build_parser, config_from_args
from .loop import train

__all__ = ["TrainConfig", "build_parser", "config_from_args", "train"]
