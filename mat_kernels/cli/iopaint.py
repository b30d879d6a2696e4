"""``mat-iopaint``: IOPaint's command line with :mod:`mat_kernels.iopaint`'s MAT as its ``mat`` model."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..checkpoint import CheckpointError
from ..iopaint import (CHECKPOINT_FLAG, IOPaintMissingError, default_checkpoint, read_weights, register,
                       require_iopaint)

PROG = "mat-iopaint"


def _split_args(argv: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """(--mat-checkpoint's value, the arguments for IOPaint)."""
    rest, checkpoint = [], None
    it = iter(argv)
    for arg in it:
        if arg == CHECKPOINT_FLAG:
            checkpoint = next(it, None)
            if checkpoint is None:
                _fail(f"{CHECKPOINT_FLAG} needs a path")
        elif arg.startswith(CHECKPOINT_FLAG + "="):
            checkpoint = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return checkpoint, rest


def _fail(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


USAGE = f"""usage: {PROG} [{CHECKPOINT_FLAG} PATH] IOPAINT_COMMAND [IOPaint's options]

Runs IOPaint's command line with mat_kernels' MAT generator as IOPaint's "mat" model, e.g.
  {PROG} start --model mat --device cpu --port 8080
  {PROG} run --model mat --device cpu --image photo.png --mask mask.png --output out/

{CHECKPOINT_FLAG} PATH  MAT weights: IOPaint's Places_512_FullData_G.pth (default: the file IOPaint
                       loads, $MAT_MODEL_URL or its download cache), an official .pkl, a state dict
                       or a mat_kernels checkpoint. Nothing in the file is executed.
Everything else is IOPaint's (see {PROG} --help-iopaint, i.e. iopaint --help).
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if argv[0] == "--help-iopaint":
        argv = ["--help"]
    checkpoint, rest = _split_args(argv)
    try:
        require_iopaint()
        path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
        if checkpoint is not None and not path.exists():
            _fail(f"{CHECKPOINT_FLAG}: {checkpoint} does not exist")
        # Bad names or shapes fail here, in one line, before IOPaint starts; a missing default
        # file is IOPaint's to download.
        sd = read_weights(path) if path.exists() else None
        register(checkpoint, sd)
    except (IOPaintMissingError, CheckpointError) as exc:
        _fail(str(exc))
    from iopaint import entry_point
    sys.argv = ["iopaint", *rest]
    entry_point()
    return 0


if __name__ == "__main__":
    sys.exit(main())
