"""Ahead-of-time compile gate: build every Triton kernel config for sm_80 and sm_90 without a GPU
and read its resource usage from the cubin.

The configurations come from ``aot_table.TABLES`` (kernel module name -> function returning its
configs); every kernel module under ``mat_kernels/triton`` that defines ``@triton.jit`` kernels
must have an entry there.

For each config and each target this module calls ``triton.compile(ASTSource(fn, signature,
constexprs), target=GPUTarget("cuda", cap, 32))`` (the same call in Triton 3.6 and 3.9; constexpr
arguments are also listed in the signature as ``"constexpr"``, which both accept), writes the
cubin to a temporary folder and runs the ``cuobjdump -res-usage`` that ships inside the Triton
wheel. Registers, static shared memory, STACK and LOCAL bytes come from there; the dynamic
shared memory Triton requests comes from the compiled kernel's metadata. A config flagged
``mat_shape`` must not spill (STACK and LOCAL both 0).

Compilation runs in worker processes with ``TRITON_INTERPRET`` removed from their environment:
under the interpreter ``@triton.jit`` returns an interpreted function that cannot be compiled,
and the test process sets the variable when it has no GPU.

``python -m mat_kernels.triton.aot [--arch 80 90] [--workers 2] [--json]`` prints the table.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib
import json
import multiprocessing
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

PACKAGE = "mat_kernels.triton"
ARCHS = (80, 90)
# Kernel modules that must have a table entry whenever their file exists; any other module that
# defines @triton.jit kernels must have one too.
REQUIRED = ("mask_update", "window_attention", "bias_act")
_NOT_KERNEL_MODULES = {"aot", "aot_table", "library"}
_RES_RE = re.compile(r"\b(REG|STACK|SHARED|LOCAL):(\d+)")


# ----------------------------------------------------------------------------------------------
# Collection
# ----------------------------------------------------------------------------------------------
def kernel_modules() -> List[str]:
    """Names of the modules of ``mat_kernels/triton`` (without importing any of them)."""
    pkg_dir = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(pkg_dir)])
                  if not m.name.startswith("_") and m.name not in _NOT_KERNEL_MODULES)


def collect(tables: Optional[Dict[str, Callable[[], list]]] = None, modules: Optional[Dict[str, object]] = None
            ) -> Tuple[List[Tuple[str, int, dict]], List[str]]:
    """Gather every config of ``tables`` (default ``aot_table.TABLES``), checking ``modules``
    (default: every kernel module, imported) for kernels that have no table.

    Returns ([(module, index, config)], errors). An error is a module that fails to import, a
    required module (``REQUIRED``) or any module defining ``@triton.jit`` kernels without a table,
    a malformed config, or a table function that raises.
    """
    found, errors = [], []
    if tables is None:
        from .aot_table import TABLES as tables
    if modules is None:
        modules = {}
        for name in kernel_modules():
            try:
                modules[name] = importlib.import_module(f"{PACKAGE}.{name}")
            except Exception as exc:  # the gate reports it instead of crashing
                errors.append(f"{name}: import failed: {type(exc).__name__}: {exc}")
    for name, module in modules.items():
        if name not in tables:
            kernels = _own_kernels(module)
            if name in REQUIRED or kernels:
                errors.append(f"{name}: has no compile table in aot_table.TABLES (kernels: {', '.join(kernels) or '?'})")
    for name, table in tables.items():
        try:
            configs = list(table())
        except Exception as exc:
            errors.append(f"{name}: its compile table raised {type(exc).__name__}: {exc}")
            continue
        if not configs:
            errors.append(f"{name}: its compile table is empty")
        for i, cfg in enumerate(configs):
            missing = {"name", "fn", "signature", "constexprs", "mat_shape"} - set(cfg)
            if missing:
                errors.append(f"{name}: config {i} lacks {sorted(missing)}")
                continue
            found.append((name, i, cfg))
    return found, errors


def _own_kernels(module) -> List[str]:
    """Names of the @triton.jit functions defined in ``module`` (not imported into it)."""
    from triton.runtime.jit import JITFunction
    return sorted(k for k, v in vars(module).items()
                  if isinstance(v, JITFunction) and getattr(v, "module", None) == module.__name__)


def _dtype_label(cfg: dict) -> str:
    if "dtype" in cfg:
        return str(cfg["dtype"])
    for ty in cfg["signature"].values():
        if ty.startswith("*"):
            return ty[1:]
    return "-"


# ----------------------------------------------------------------------------------------------
# Compilation (in a worker process)
# ----------------------------------------------------------------------------------------------
def _cuobjdump() -> str:
    import triton
    root = Path(triton.__file__).resolve().parent
    for cand in [root / "backends" / "nvidia" / "bin" / "cuobjdump", *root.rglob("cuobjdump")]:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise FileNotFoundError(f"no cuobjdump inside the triton package at {root}")


def parse_res_usage(text: str, kernel: str) -> Dict[str, int]:
    """Parse ``cuobjdump -res-usage`` output: REG, STACK, SHARED, LOCAL of ``kernel``'s entry
    (the ``Function <name>:`` line followed by its resource line)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("Function") and line.strip().rstrip(":").split()[-1] == kernel:
            for follow in lines[i + 1:i + 3]:
                vals = dict((k, int(v)) for k, v in _RES_RE.findall(follow))
                if "REG" in vals:
                    return {k: vals.get(k, 0) for k in ("REG", "STACK", "SHARED", "LOCAL")}
    raise ValueError(f"no resource usage for {kernel!r} in cuobjdump output:\n{text}")


def _ast_source(fn, signature: dict, constexprs: dict):
    from triton.compiler import ASTSource
    # Triton >= 3.2 (3.6 and 3.9 included) wants every argument in the signature, constexprs
    # as "constexpr", keyed by name in the kernel's argument order.
    sig = {}
    for arg in fn.arg_names:
        if arg in constexprs:
            sig[arg] = "constexpr"
        elif arg in signature:
            sig[arg] = signature[arg]
        else:
            raise KeyError(f"{fn.__name__}: argument {arg!r} has no type in the signature and no constexpr value")
    try:
        return ASTSource(fn, sig, constexprs)
    except TypeError:  # older keyword name
        return ASTSource(fn, sig, constants=constexprs)


def compile_config(module: str, index: int, cap: int) -> dict:
    """Compile config ``index`` of ``module`` for sm_<cap>; return one table row.

    The row has module, name, dtype, arch, mat_shape, num_warps, REG, STACK, SHARED, LOCAL,
    dyn_smem, seconds and error (None on success)."""
    import triton
    from triton.backends.compiler import GPUTarget

    from ._common import interpreting
    if interpreting():
        raise RuntimeError("TRITON_INTERPRET=1: kernels are interpreted and cannot be compiled; "
                           "compile in a process without it (see run_gate)")
    from .aot_table import TABLES
    cfg = TABLES[module]()[index]
    row = dict(module=module, name=cfg["name"], dtype=_dtype_label(cfg), arch=f"sm_{cap}",
               mat_shape=bool(cfg["mat_shape"]), num_warps=cfg.get("num_warps", 4),
               REG=None, STACK=None, SHARED=None, LOCAL=None, dyn_smem=None, seconds=None, error=None)
    t0 = time.perf_counter()
    try:
        fn = cfg["fn"]
        options = {"num_warps": cfg.get("num_warps", 4)}
        if "num_stages" in cfg:
            options["num_stages"] = cfg["num_stages"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kernel = triton.compile(_ast_source(fn, cfg["signature"], cfg["constexprs"]),
                                    target=GPUTarget("cuda", cap, 32), options=options)
        name = kernel.metadata.name
        with tempfile.TemporaryDirectory(prefix="mat_aot_") as tmp:
            path = Path(tmp) / f"{name}.cubin"
            path.write_bytes(kernel.asm["cubin"])
            out = subprocess.run([_cuobjdump(), "-res-usage", str(path)], capture_output=True, text=True,
                                 check=True, timeout=60).stdout
        row.update(parse_res_usage(out, name))
        row["dyn_smem"] = int(getattr(kernel.metadata, "shared", 0) or 0)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _worker_init() -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when it is unset
    warnings.filterwarnings("ignore")


# The CI tier: every MAT-shape config, in every dtype, on every arch (what runs on MAT's real
# shapes must compile and must not spill). The "all" tier (the CLI's default, and the extended
# test) adds the configs of other shapes.


def select(found: List[Tuple[str, int, dict]], tier: str) -> List[Tuple[str, int]]:
    """The (module, index) pairs a tier compiles: "all", or "ci" (the MAT-shape configs)."""
    if tier == "all":
        return [(m, i) for m, i, _ in found]
    if tier == "ci":
        return [(m, i) for m, i, c in found if c["mat_shape"]]
    raise ValueError(f"tier must be 'all' or 'ci', got {tier!r}")


def _collect_keys(tier: str, only: Optional[Sequence[str]] = None) -> Tuple[List[Tuple[str, int]], List[str], int]:
    found, errors = collect()
    if only:
        found = [f for f in found if f[0] in only]
    return select(found, tier), errors, len(found)


def run_gate(archs: Sequence[int] = ARCHS, workers: int = 2, tier: str = "all", progress=None,
             only: Optional[Sequence[str]] = None) -> Tuple[List[dict], List[str]]:
    """Compile the tier's configs for every arch in ``workers`` fresh processes.

    Returns (rows, collection_errors). Collection also runs in a worker, so the kernel modules
    are imported with the real JIT whatever the caller's environment. ``progress(done, total)``
    is called as compiles finish; ``only`` restricts the gate to some modules.
    """
    ctx = multiprocessing.get_context("spawn")
    # Spawned workers import this package (and so the kernel modules) before their initializer
    # runs: they must start without TRITON_INTERPRET, which the parent may have set.
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        with cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx, initializer=_worker_init) as pool:
            keys, errors, _ = pool.submit(_collect_keys, tier, only).result()
            futures = [pool.submit(compile_config, m, i, cap) for m, i in keys for cap in archs]
            if progress is not None:
                for done, _ in enumerate(cf.as_completed(futures), 1):
                    progress(done, len(futures))
            rows = [f.result() for f in futures]
        return rows, errors
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


def failures(rows: List[dict], errors: List[str]) -> List[str]:
    """Why the gate fails: collection errors, configs that do not compile, spills in MAT shapes."""
    bad = list(errors)
    for r in rows:
        where = f"{r['module']}: {r['name']} [{r['dtype']}, {r['arch']}]"
        if r["error"]:
            bad.append(f"{where} does not compile: {r['error']}")
        elif r["mat_shape"] and (r["STACK"] or r["LOCAL"]):
            bad.append(f"{where} spills: STACK={r['STACK']} LOCAL={r['LOCAL']} bytes")
    return bad


def format_table(rows: List[dict]) -> str:
    import triton
    head = ("module", "config", "dtype", "arch", "warps", "regs", "smem", "dyn_smem", "stack", "local", "MAT",
            "s", "status")
    body = []
    for r in rows:
        spill = bool(r["STACK"] or r["LOCAL"])
        status = ("FAIL: " + r["error"]) if r["error"] else ("SPILL" if spill else "ok")
        if spill and not r["mat_shape"]:
            status = "spill (not a MAT shape)"
        body.append((r["module"], r["name"], r["dtype"], r["arch"], str(r["num_warps"]), str(r["REG"]),
                     str(r["SHARED"]), str(r["dyn_smem"]), str(r["STACK"]), str(r["LOCAL"]),
                     "yes" if r["mat_shape"] else "no", f"{r['seconds']:.1f}", status))
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    lines = [f"Triton {triton.__version__} ahead-of-time compile (cuobjdump -res-usage; bytes)",
             fmt(head), "-+-".join("-" * w for w in widths)]
    return "\n".join(lines + [fmt(b) for b in body])


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mat_kernels.triton.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), help="compute capabilities (80 90)")
    p.add_argument("--workers", type=int, default=2, help="compile processes")
    p.add_argument("--tier", choices=("all", "ci"), default="all",
                   help="all configs, or the CI tier (every MAT-shape config)")
    p.add_argument("--module", nargs="+", help="only these kernel modules (e.g. mask_update bias_act)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = p.parse_args(argv)
    t0 = time.perf_counter()

    def progress(done, total):
        if done % 20 == 0 or done == total:
            print(f"compiled {done}/{total} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    rows, errors = run_gate(args.arch, args.workers, args.tier, progress, args.module)
    bad = failures(rows, errors)
    if args.json:
        print(json.dumps({"rows": rows, "errors": errors, "failures": bad}, indent=1))
    else:
        print(format_table(rows))
        print(f"{len(rows)} compiles in {time.perf_counter() - t0:.1f} s")
        for line in bad:
            print("FAIL", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
