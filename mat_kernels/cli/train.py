"""``mat-train ...``, ``torchrun --nproc_per_node N -m mat_kernels.cli.train ...``, and
``mat-train export CKPT [OUT]`` (see :mod:`mat_kernels.train.export`); the options are
:func:`mat_kernels.train.config.build_parser`.

A bad option ends the run with one ``mat-train: error: --flag: ...`` line and exit status 2 (as
argparse does for the ones it checks itself), printed by rank 0 only; other errors keep their
traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from ..train.config import ConfigError, build_parser, config_from_args
from ..train.export import export_stem, export_weights
from ..train.loop import train


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mat-train", usage="mat-train export CKPT [OUT] [--which {G_ema,G}]",
        description="Write the G_ema weights of a mat-train checkpoint (G, D, G_ema and both Adam states) "
                    "alone, as JSON + safetensors: what mat-inpaint --checkpoint reads.")
    p.add_argument("checkpoint", metavar="CKPT", help="a training checkpoint (checkpoint-STEP.pt)")
    p.add_argument("out", metavar="OUT", nargs="?",
                   help="output stem, .json path or folder (default: weights-STEP beside CKPT)")
    p.add_argument("--which", choices=("G_ema", "G"), default="G_ema",
                   help="network to export (default: G_ema, the one used for inference)")
    return p


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_export_parser()
    args = parser.parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        parser.error(f"CKPT: {args.checkpoint} does not exist")
    out = args.out if args.out is not None else export_stem(args.checkpoint)
    try:
        path = export_weights(args.checkpoint, out, which=args.which)
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        # ValueError covers mat_kernels.checkpoint.CheckpointError (e.g. not a MAT generator)
        parser.error(f"CKPT: cannot export {args.checkpoint}: {exc}")
    print(f"mat-train export: wrote {path} (mat-inpaint --checkpoint {path})")
    return 0


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
