"""Small cases of every fused kernel, for ``compute-sanitizer`` (memcheck, racecheck).

``python benchmarks/sanitize_cases.py [--backend triton|cuda ...]`` runs, for each fused backend
that can run here, window attention forward and backward (fp32 and bf16, with and without the
shift and the key mask, a window-8 and a window-16 grid), both mask updates and bias_act, each
checked against the reference with ``mat_kernels.testing``. Shapes are tiny on purpose: the
sanitizers slow kernels down by 10-100x. A backend that cannot run is listed with its reasons;
the exit status is 1 if any case failed or no backend could run at all. ``--quick``: one attention
case in fp32 (what the CPU rehearsal of gpu_check.sh runs).
"""
from __future__ import annotations

import argparse
import sys
import traceback
import warnings

import torch

from mat_kernels import backends
from mat_kernels.testing import (check_bias_act, check_partial_conv_mask_update, check_window_attention,
                                 check_window_mask_update, make_mask)

FUSED = tuple(n for n in backends.BACKENDS if n != "reference")
# (B, H, W, heads, head_dim, window, shift, mask pattern)
ATTENTION = [(1, 16, 16, 2, 30, 8, 4, "random"), (2, 16, 16, 1, 32, 8, 0, "none"),
             (1, 32, 32, 2, 30, 16, 8, "one_valid_per_window")]


def cases(device, quick: bool = False):
    for B, H, W, heads, d, ws, s, pat in ATTENTION[:1] if quick else ATTENTION:
        for dt in (torch.float32,) if quick else (torch.float32, torch.bfloat16):
            mask = make_mask(pat, B, H, W, ws, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
            facts = dict(device=device, dtype=dt, head_dim=d, window_size=ws,
                         mask_dtype=None if mask is None else mask.dtype)
            yield ("window_attention", f"{B}x{H}x{W} h{heads}x{d} w{ws} s{s} {pat} {dt}", facts,
                   lambda be, a=(B, H, W, heads, d, ws, s, mask), dt=dt:
                   check_window_attention(be, *a, dtype=dt, device=device, backward=True))
    m = make_mask("random", 2, 16, 16, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    yield ("window_mask_update", "2x16x16 w8 s4", dict(device=device, dtype=m.dtype, window_size=8),
           lambda be: check_window_mask_update(be, m.to(device), 8, 4))
    pm = (torch.rand(2, 1, 33, 33, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    for k, st in ((3, 1), (3, 2)):
        yield ("partial_conv_mask_update", f"2x1x33x33 k{k} s{st}",
               dict(device=device, dtype=pm.dtype, kernel_size=k, stride=st),
               lambda be, k=k, st=st: check_partial_conv_mask_update(be, pm.to(device), k, st))
    for dt in (torch.float32, torch.bfloat16):
        g = torch.Generator().manual_seed(3)
        x, b = torch.randn(2, 20, 7, 9, generator=g).to(device, dt), torch.randn(20, generator=g).to(device, dt)
        yield ("bias_act", f"2x20x7x9 lrelu {dt}", dict(device=device, dtype=dt, act="lrelu", bias_dtype=dt),
               lambda be, x=x, b=b: check_bias_act(be, x, b, 1, "lrelu"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", action="append", choices=FUSED, help="only these backends (default: all fused)")
    p.add_argument("--device", default="cuda", help="default cuda (cpu only to try the script under TRITON_INTERPRET=1)")
    p.add_argument("--quick", action="store_true", help="one attention case, fp32 (the CPU rehearsal of gpu_check.sh)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    warnings.simplefilter("ignore")  # the unverified-CUDA warning: this run is part of verifying it
    ran = failed = 0
    for be in args.backend or FUSED:
        for op, name, facts, run in cases(device, args.quick):
            why = backends.not_supported_reasons(be, op, facts)
            if why:
                print(f"skip  {be:<7}{op:<26}{name}: {'; '.join(why)}")
                continue
            try:
                run(be)
                if device.type == "cuda":
                    torch.cuda.synchronize()  # an asynchronous fault belongs to this case
                print(f"ok    {be:<7}{op:<26}{name}")
                ran += 1
            except Exception:
                failed += 1
                print(f"FAIL  {be:<7}{op:<26}{name}\n{traceback.format_exc()}")
            sys.stdout.flush()
    print(f"{ran} passed, {failed} failed")
    return 1 if failed or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
