"""``mat-bench`` (``python -m mat_kernels.cli.bench``): the benchmarks of :mod:`mat_kernels.bench`.

On a CUDA device: the 512x512 suite -- MAT's nine attention shapes, batch 1 and 8, fp32 and bf16,
forward and forward+backward, six implementations side by side -- and the model-level
throughput; results go to ``benchmarks/results/<device>-<date>.{json,md,png}``.

On a CPU-only machine: a reduced reference suite (one shape per layer geometry, batch 1, fp32)
of about a minute, which says that the fused kernels need a GPU and writes files only when
``--json``/``--plot`` are given. The model part runs on CPU only when ``--model`` asks for it,
at 256x256, batch 1, after timing one generator forward and printing how long it will take.

Every time is the median of the repeats with its [min-max]; rows whose repeats spread wide are
marked noisy (max/min > 2 or IQR/median > 0.2): rerun those on an idle machine.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from typing import List, Optional

import torch

from ..bench import cases as C
from ..bench import env, model, report, run
from ..bench.peers import PEER_NAMES, select
from .usage import plain, prog

DEFAULT_OUT_DIR = os.path.join("benchmarks", "results")


def _csv(kind, choices=None):
    def parse(text: str):
        items = [t.strip() for t in text.replace(",", " ").split() if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected at least one value")
        out = [kind(t) for t in items]
        if choices is not None:
            bad = [t for t in out if t not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"invalid choice(s) {bad}; choose from {list(choices)}")
        return out
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("mat-bench", "mat_kernels.cli.bench"), description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", action="store_true", help="run the op-level attention cases "
                   "(default: both parts on GPU, ops only on CPU)")
    p.add_argument("--model", action="store_true", help="run the model-level throughput "
                   "(generator forward, G+D training step)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--suite", choices=("auto", "full", "reduced"), default="auto",
                   help="op shapes: all nine ('full', GPU default) or one per layer geometry ('reduced', CPU default)")
    p.add_argument("--shapes", type=_csv(str), default=None, metavar="TEXT",
                   help="keep only shapes whose name contains one of these (e.g. '16x16' or 'w8 s4 mask')")
    p.add_argument("--dtype", type=_csv(str, C.DTYPES), default=None,
                   help="comma list of fp32,bf16,fp16 (default: fp32,bf16 on GPU; fp32 on CPU)")
    p.add_argument("--batch", type=_csv(int), default=None, help="comma list (default: 1,8 on GPU; 1 on CPU)")
    p.add_argument("--mode", type=_csv(str, C.MODES), default=list(C.MODES), help="fwd,fwdbwd (default: both)")
    p.add_argument("--resolution", type=int, default=None,
                   help="image size: 512 (default; op shapes for the 512 network, multiples of 512 scale the "
                        "grids) or 256; the model part on CPU defaults to 256")
    p.add_argument("--peers", type=_csv(str, PEER_NAMES), default=None,
                   help=f"comma subset of {','.join(PEER_NAMES)} (default: all; on CPU the compiled peers "
                        "are listed as skipped unless named here)")
    p.add_argument("--model-paths", type=_csv(str, model.MODEL_PATHS), default=None,
                   help="reference,auto,compile (default: all; on CPU compile is listed as skipped unless named)")
    p.add_argument("--model-whats", type=_csv(str, model.WHATS), default=None,
                   help="generator_forward,train_step (default: both)")
    p.add_argument("--model-dtypes", type=_csv(str, model.PRECISIONS), default=None,
                   help="model precisions: fp32, bf16 (autocast), bf16-weights (inference) (default: all on GPU, "
                        "fp32 on CPU); every generator row reports its relative error against fp32")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per case (default: 20 GPU, 3 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default: 5 GPU, 1 CPU)")
    p.add_argument("--dram-bandwidth", type=float, default=None, metavar="TB/s",
                   help="override the device's DRAM bandwidth from the built-in table")
    p.add_argument("--json", nargs="?", const="", default=None, metavar="PATH",
                   help="write the JSON (and a markdown table beside it); without PATH: "
                        "benchmarks/results/<device>-<date>.json. Always written on GPU.")
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="PATH",
                   help="write the PNG of speedups (default beside the JSON; always on GPU)")
    p.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help=f"default folder for results ({DEFAULT_OUT_DIR})")
    p.add_argument("--no-save", action="store_true", help="write no files, even on GPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and total:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stderr)
            except ImportError:  # tqdm is a declared dependency; without it, run silently
                self.bar = None

    def describe(self, text: str):
        if self.bar is not None:
            self.bar.set_description(text, refresh=True)

    def step(self, text: str = ""):
        if self.bar is not None:
            if text:
                self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _settings(args) -> dict:
    """Every choice the defaults make for this device, validated (argparse errors on bad input)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser().error("--device cuda given but torch.cuda.is_available() is False")
    gpu = device.type == "cuda"
    o = dict(device=device, gpu=gpu, run_ops=args.ops or not args.model, run_model=args.model or (gpu and not args.ops),
             suite=args.suite if args.suite != "auto" else ("full" if gpu else "reduced"),
             dtypes=args.dtype or (["fp32", "bf16"] if gpu else ["fp32"]),
             model_dtypes=args.model_dtypes or (list(model.PRECISIONS) if gpu else ["fp32"]),
             batches=args.batch or ([1, 8] if gpu else [1]),
             repeats=args.repeats if args.repeats is not None else (20 if gpu else 3),
             warmup=args.warmup if args.warmup is not None else (5 if gpu else 1),
             op_res=args.resolution or 512, model_res=args.resolution or (512 if gpu else 256))
    # The model part takes fewer calls: its steps are long.
    o["model_warmup"] = max(1, o["warmup"] // 2) if gpu else 0
    o["model_repeats"] = max(1, o["repeats"] // 4) if gpu else (args.repeats or 1)
    if o["repeats"] < 1 or o["warmup"] < 0:
        parser().error("--repeats must be >= 1 and --warmup >= 0")
    o["model_batches"] = o["batches"]
    try:
        shapes = (C.mat_attention_shapes if o["suite"] == "full" else C.reduced_shapes)(o["op_res"])
        if args.shapes:
            shapes = [s for s in shapes if any(t in s.name for t in args.shapes)]
            if not shapes:
                raise ValueError(f"--shapes {args.shapes} matches none of the {o['suite']} suite's shapes")
        if o["model_res"] not in (256, 512):
            raise ValueError(f"--resolution for the model must be 256 or 512, got {o['model_res']}")
        o["cases"] = C.attention_cases(shapes, o["batches"], o["dtypes"], args.mode) if o["run_ops"] else []
    except ValueError as exc:
        parser().error(str(exc))
    o["peers"] = select(args.peers or PEER_NAMES)
    o["model_paths"] = args.model_paths or list(model.MODEL_PATHS)
    o["model_whats"] = args.model_whats or list(model.WHATS)
    return o


def _skips(args, o):
    """(peer skips, model-path skips): compiled runs are opt-in on CPU."""
    skip, model_skip = {}, {}
    if not o["gpu"] and args.peers is None:
        for p in o["peers"]:
            if p.compiles:
                skip[p.name] = ("not run on CPU by default: torch.compile takes ~20 s per case here "
                                "(name it in --peers to include it)")
    if not o["gpu"] and args.model_paths is None:
        model_skip["compile"] = "not run on CPU by default: compiling the whole model takes minutes here"
    return skip, model_skip


def _save(args, o, environment, result) -> None:
    """JSON + markdown (always on GPU, with --json on CPU) and the plot (GPU or --plot)."""
    gpu, suite = o["gpu"], o["suite"]
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M")
    stem = env.slug(environment["device_name"]) if gpu else "cpu-reduced" if suite == "reduced" else f"cpu-{suite}"
    default_json = os.path.join(args.out_dir, f"{stem}-{date}.json")
    json_path = args.json or default_json if (gpu or args.json is not None) else None
    if json_path:
        report.write_json(result, json_path)
        md = report.write_markdown(result, os.path.splitext(json_path)[0] + ".md")
        print(f"wrote {json_path} and {md}", file=sys.stderr)
    if gpu or args.plot is not None:
        plot_path = args.plot or os.path.splitext(json_path or default_json)[0] + ".png"
        written = report.write_plot(result, plot_path)
        print(f"wrote {written}" if written else "no plot: no peer besides the reference ran", file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    o = _settings(args)
    skip, model_skip = _skips(args, o)
    run.configure_compiler()
    environment = env.environment(o["device"], args.dram_bandwidth)
    notes = run.notes_for(o, environment)
    settings = {"suite": o["suite"], "device": str(o["device"]), "dtypes": o["dtypes"], "batches": o["batches"],
                "modes": args.mode, "resolution": o["op_res"], "peers": [p.name for p in o["peers"]],
                "warmup": o["warmup"], "repeats": o["repeats"], "l2_flush": o["gpu"], "run_ops": o["run_ops"],
                "run_model": o["run_model"],
                "model": {"resolution": o["model_res"], "batches": o["model_batches"], "paths": o["model_paths"],
                          "dtypes": o["model_dtypes"]} if o["run_model"] else None}
    print(f"mat_kernels.bench on {environment['device_name']} ({o['device']}); torch {environment['torch_version']}, "
          f"triton {environment['triton_version']}", file=sys.stderr)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    estimate = run.model_estimate(o, model_skip)
    if estimate:
        print(f"note: {estimate}", file=sys.stderr)
    n_model = (len(o["model_whats"]) * len(o["model_batches"]) * len(o["model_paths"]) * len(o["model_dtypes"])
               if o["run_model"] else 0)
    progress = _Progress(len(o["cases"]) * len(o["peers"]) + n_model, not args.no_progress)
    t0 = time.perf_counter()
    attention_rows, model_rows = run.run_all(o, skip, model_skip, environment, notes, progress)
    op_res, suite = o["op_res"], o["suite"]
    result = report.make_result("gpu-" + str(op_res) if o["gpu"] else "cpu-reduced" if suite == "reduced" else
                                "cpu-" + suite, environment, settings, notes, attention_rows, model_rows,
                                time.perf_counter() - t0)
    report.validate(result)
    print(report.console(result))
    if not args.no_save:
        _save(args, o, environment, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
