"""Entry point: ``mat-train ...``, ``torchrun --nproc_per_node N -m mat_kernels.train ...``, and
``mat-train export CKPT [OUT]`` (see :mod:`mat_kernels.train.export`).

A bad option ends the run with one ``mat-train: error: --flag: ...`` line and exit status 2 (as
argparse does for the ones it checks itself), printed by rank 0 only; other errors keep their
traceback.
"""
from __future__ import annotations

import os
import sys

from .config import ConfigError, build_parser, config_from_args
from .export import export_main
from .loop import train


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    parser = build_parser()
    try:
        train(config_from_args(argv, parser))
    except ConfigError as exc:
        if os.environ.get("RANK", "0") != "0":
            sys.exit(2)   # every rank fails the same check; rank 0 says why
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
