"""Entry point: ``mat-train ...`` or ``torchrun --nproc_per_node N -m mat_kernels.train ...``."""
from __future__ import annotations

import sys

from .config import config_from_args
from .loop import train


def main(argv=None) -> int:
    cfg = config_from_args(argv)
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
