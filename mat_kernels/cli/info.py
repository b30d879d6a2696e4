"""``mat-info``: the options and output files of the report in :mod:`mat_kernels.info`."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

import torch

from .. import info
from .usage import plain, prog


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog=prog("mat-info", "mat_kernels.cli.info"), description=plain(info.__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", metavar="PATH", default=None, help="also write the report as JSON to PATH")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", dest="check", action="store_const", const=True, default=None,
                   help="run the quick check even off CUDA (e.g. Triton under TRITON_INTERPRET=1: slow)")
    g.add_argument("--no-check", dest="check", action="store_const", const=False, help="skip the quick check")
    args = p.parse_args(argv)
    try:
        device = torch.device(args.device) if args.device else None
    except RuntimeError as exc:
        p.error(f"--device: {exc}")
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda given but torch.cuda.is_available() is False")
    rep = info.collect(device, args.check)
    print(info.format_report(rep))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=1, default=str)
            f.write("\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 1 if any(not c["passed"] for c in rep["checks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
