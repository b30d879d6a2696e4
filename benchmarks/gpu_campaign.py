"""The Python tiers of the GPU campaign; ``benchmarks/gpu_check.sh`` runs each in its own process.

``python benchmarks/gpu_campaign.py TIER --out PATH [--rehearse] [...]``, TIER one of:

* ``prove``: the fused backends against the reference with :mod:`mat_kernels.testing` at MAT's
  real shapes: the nine (layer, shift) geometries of the five ``tran`` layers of G at 512 (grids
  64/32/16, windows 8 and 16, shifts 0/4 and 0/8, 6 heads of 30), B=2, key masks as MAT makes
  them (every masked case holds all-hole, partly valid and fully valid windows), forward,
  backward and new mask in fp32/bf16/fp16 (the rehearsal: one dtype per geometry, in turn); both mask updates (window and partial conv at the
  512 network's sizes) and bias_act (MAT's activations) in every dtype. One process: the JIT
  compiles once per specialization, first in parallel worker processes (``--precompile N``) that
  fill Triton's cache. Prints and records the number of specializations compiled and the
  compile seconds. Writes PATH (JSON) and a JUnit XML beside it (what ``tune`` reads).
* ``bench-core``: the performance table on ``tran.0`` (64x64, window 8, shift 4, masked), B=8,
  bf16 then fp32, forward and forward+backward: the eager reference, SDPA with the same additive
  bias, ``torch.compile`` of the reference, FlexAttention with a ``score_mod`` reading the mask,
  and the backends (``mat_kernels.bench.suite``: CUDA events, L2 flushed, peak memory, achieved
  DRAM bandwidth). PATH is a mat-bench result (schema ``mat_kernels.bench/1``).
* ``bench-model``: G inference at 512, B=1 and 8, fp32 and bf16 autocast, reference vs auto
  (images/s, peak memory), then one G+D training step at 512, B=4, bf16.
* ``specs``: the Triton specializations that ``prove`` and ``bench-core`` JIT on the device,
  counted exactly by running both tiers' calls at the device shapes with the kernels replaced by a
  recorder (Triton's own argument specialization decides the keys); ``--compile`` also builds each
  for sm_90 on this machine (no GPU needed, the compile gate's method) and times it.

A backend is proven and benched by listing its name in :data:`CAMPAIGN_BACKENDS` (or
:data:`BUILT_BACKENDS`, proven once the device has built it); a name the registry
(``mat_kernels.backends.BACKENDS``) does not know is skipped with a note.

``--rehearse`` runs a tier on CPU at tiny shapes: Triton kernels in the interpreter
(``TRITON_INTERPRET=1``, set by gpu_check.sh), the CUDA backend on the host emulation of its
kernels (``--emulate-cuda``, tests/cuda/_emulation.py), the model part on the stand-in networks of
tests/train/tiny_models.py. Every tier writes PATH after each case (atomically), so a tier killed
at any moment leaves what it measured; SIGINT/SIGTERM finish the file with ``"finished": false``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from typing import Dict, Iterable, List, Optional, Tuple

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mat_kernels import backends  # noqa: E402
from mat_kernels.bench import cases as C  # noqa: E402
from mat_kernels.bench import env, peers, report  # noqa: E402
from mat_kernels.bench.suite import reason_of, run_case  # noqa: E402

SCHEMA = "mat_kernels.gpu_campaign/1"
# Proven by prove-triton and benched by bench-core; a name joins both by being listed here.
CAMPAIGN_BACKENDS = ("triton", "sdpa")
# Proven and benched by prove-cuda, after the extension is built on the device.
BUILT_BACKENDS = ("cuda",)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROVE_BATCH = 2
HEADS, HEAD_DIM = C.HEADS, C.HEAD_DIM
# bench-core: tran.0 with its shift and the key mask, B=8, bf16 rows first (the table's headline).
BENCH_SHAPE = C.Shape("tran.0", 64, 8, 4, True)
BENCH_BATCH = 8
BENCH_DTYPES = ("bf16", "fp32")
BENCH_PEERS = ("reference", "sdpa", "compile", "flex")
# The 512 network's partial convolutions: conv_first (k3 s1 at 512), enc_conv (k3 s2 to 256/128/64).
PCONV_CASES = ((512, 3, 1), (512, 3, 2), (256, 3, 2), (128, 3, 2))
# bias_act as MAT's layers call it: (shape, dim, act, clamp); lrelu convs with conv_clamp 256 and
# without, lrelu FCs, the linear toRGB.
BIAS_ACT_CASES = (((2, 180, 64, 64), 1, "lrelu", None), ((2, 180, 128, 128), 1, "lrelu", 256.0),
                  ((2, 512), 1, "lrelu", None), ((2, 3, 64, 64), 1, "linear", None))


# ------------------------------------------------------------------------------------- the shapes
def attention_shapes(rehearse: bool) -> List[C.Shape]:
    """The nine (layer, shift) geometries of G at 512; for the rehearsal the same windows and
    shifts on 16x16 grids."""
    shapes = C.mat_attention_shapes(512)
    if rehearse:
        shapes = [C.Shape(s.layers, 16, s.window, s.shift, s.masked) for s in shapes]
    return shapes


def prove_batch(shape: C.Shape) -> int:
    """B=2; 3 where one window covers the grid (the rehearsal's), so the batch holds each kind of window."""
    return PROVE_BATCH if shape.grid > shape.window else 3


def mat_key_mask(B: int, G: int, window: int, shift: int) -> torch.Tensor:
    """A (B, G, G, 1) float32 0/1 token mask like MAT's: a large hole over the top-left corner of
    image 0 (holes cross window borders), a small one in image 1, valid elsewhere. In the
    windows the attention sees (shifted frame) the batch holds all-hole, partly valid and fully
    valid windows; :func:`window_kinds` counts them, and this raises if one kind is missing."""
    m = torch.ones(B, G, G, 1)
    big = min(G, window + window // 2 + shift)
    m[0, :big, :big + 1] = 0
    if B > 1:
        m[1, shift:shift + window // 2, shift:shift + window // 2] = 0
    kinds = window_kinds(m, window, shift)
    if min(kinds.values()) == 0:
        raise ValueError(f"mask for G={G} window={window} shift={shift} lacks a kind of window: {kinds}")
    return m


def window_kinds(mask: torch.Tensor, window: int, shift: int) -> Dict[str, int]:
    """Windows (of the shifted frame) that are all holes, partly valid, fully valid."""
    from mat_kernels import reference as ref
    s = ref.to_windows(mask, window, shift).sum(dim=(1, 2))
    n = window * window
    return {"all_hole": int((s == 0).sum()), "partly_valid": int(((s > 0) & (s < n)).sum()),
            "fully_valid": int((s == n).sum())}


def image_mask(B: int, res: int) -> torch.Tensor:
    """(B, 1, res, res) hole mask: a rectangle per image plus scattered holes."""
    g = torch.Generator().manual_seed(5)
    m = (torch.rand(B, 1, res, res, generator=g) > 0.1).float()
    for b in range(B):
        m[b, :, res // 4 + b:res // 2 + 3 * b, res // 8:res // 2 + 1] = 0
    return m


# ------------------------------------------------------------------------------------- result files
class Output:
    """A tier's JSON, rewritten atomically after every row; ``finished`` says whether it ran to the end."""

    def __init__(self, path: str, tier: str, rehearse: bool, device: torch.device, extra: Optional[dict] = None):
        self.path = path
        self.data = {"schema": SCHEMA, "tier": tier, "rehearse": rehearse, "finished": False,
                     "environment": env.environment(device), "notes": [], "rows": [], "wall_s": None,
                     **(extra or {})}
        self.t0 = time.perf_counter()
        self.write()

    def add(self, row: dict) -> None:
        self.data["rows"].append(row)
        self.write()

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.data["notes"].append(text)
        self.write()

    def write(self, finished: bool = False) -> None:
        self.data["finished"] = finished
        self.data["wall_s"] = round(time.perf_counter() - self.t0, 2)
        write_atomic(self.path, self.data)


def write_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)


class Stop(BaseException):
    """SIGTERM (the budget's timeout) or SIGINT: stop the tier, keep what was written. A
    BaseException, so that the suites' ``except Exception`` (a peer's failure is a result) lets it
    through; :func:`check_stop` raises it again where a library swallowed it."""


STOPPING: List[str] = []


def _stop(signum, frame):
    STOPPING.append(signal.Signals(signum).name)
    raise Stop(STOPPING[0])


def check_stop() -> None:
    if STOPPING:
        raise Stop(STOPPING[0])


def known_backends(names: Iterable[str], out: Output) -> List[str]:
    """The names the registry knows; the others are noted and skipped."""
    got = []
    for n in names:
        if n in backends.BACKENDS:
            got.append(n)
        else:
            out.note(f"backend {n!r} is not registered in mat_kernels.backends (skipped)")
    return got


# ------------------------------------------------------------------------------------------ prove
def prove_cases(device: torch.device, rehearse: bool):
    """(op, case name, dtype label, facts, run(backend) -> worst error or None, extra) per case."""
    from mat_kernels.testing import (check_bias_act, check_partial_conv_mask_update, check_window_attention,
                                     check_window_mask_update)
    heads = 1 if rehearse else HEADS
    names = list(DTYPES)
    for i, s in enumerate(attention_shapes(rehearse)):
        B = prove_batch(s)
        mask = mat_key_mask(B, s.grid, s.window, s.shift) if s.masked else None
        kinds = window_kinds(mask, s.window, s.shift) if s.masked else None
        # The rehearsal takes one dtype per geometry, in turn (each dtype on three geometries).
        for dname in [names[i % len(names)]] if rehearse else names:
            dt = DTYPES[dname]
            facts = dict(device=device, dtype=dt, head_dim=HEAD_DIM, window_size=s.window,
                         mask_dtype=None if mask is None else mask.dtype)
            yield ("window_attention", f"{s.layers} {s.name} b{B} h{heads}x{HEAD_DIM}", dname, facts,
                   lambda be, s=s, mask=mask, dt=dt: check_window_attention(
                       be, B, s.grid, s.grid, heads, HEAD_DIM, s.window, s.shift, mask, dtype=dt, device=device,
                       backward=True), {"windows": kinds, "shape": s})
    B = PROVE_BATCH
    for s in attention_shapes(rehearse):
        if s.masked:
            m = mat_key_mask(prove_batch(s), s.grid, s.window, s.shift)
            yield ("window_mask_update", f"{s.layers} {s.grid}x{s.grid} w{s.window} s{s.shift}", "fp32",
                   dict(device=device, dtype=m.dtype, window_size=s.window),
                   lambda be, m=m, s=s: check_window_mask_update(be, m.to(device), s.window, s.shift), {})
    for res, k, st in PCONV_CASES:
        res = res // 16 if rehearse else res
        m = image_mask(B, res)
        yield ("partial_conv_mask_update", f"{B}x1x{res}x{res} k{k} s{st}", "fp32",
               dict(device=device, dtype=m.dtype, kernel_size=k, stride=st),
               lambda be, m=m, k=k, st=st: check_partial_conv_mask_update(be, m.to(device), k, st), {})
    for shape, dim, act, clamp in BIAS_ACT_CASES:
        if rehearse:
            shape = tuple(max(1, n // 16) if i >= 2 else n for i, n in enumerate(shape))
        for dname, dt in DTYPES.items():
            g = torch.Generator().manual_seed(3)
            x = torch.randn(*shape, generator=g).to(device, dt)
            b = torch.randn(shape[dim], generator=g).to(device, dt)
            kw = {} if clamp is None else {"clamp": clamp}
            yield ("bias_act", f"{'x'.join(map(str, shape))} {act}{'' if clamp is None else f' clamp {clamp:g}'}",
                   dname, dict(device=device, dtype=dt, act=act, bias_dtype=dt),
                   lambda be, x=x, b=b, dim=dim, act=act, kw=kw: check_bias_act(be, x, b, dim, act, **kw),
                   {"inputs": (x, b, dim, act, kw)})


_ERR_RE = re.compile(r"max abs err(?:or)? ([0-9.eE+-]+)")


class JitMeter:
    """Counts Triton JIT compilations in this process and their seconds (Triton's
    ``knobs.runtime`` hooks: one before each compile, one after). None under the interpreter or
    without the hooks."""

    def __init__(self):
        self.count = self.seconds = None
        self._start: Dict[object, float] = {}
        try:
            from triton import knobs
            from mat_kernels.triton._common import interpreting
            rt = knobs.runtime
            hooks = hasattr(rt, "jit_cache_hook") and hasattr(rt, "jit_post_compile_hook")
            self._rt = rt if hooks and not interpreting() else None
        except Exception:
            self._rt = None

    def __enter__(self):
        if self._rt is not None:
            self.count, self.seconds = 0, 0.0
            self._prev = (self._rt.jit_cache_hook, self._rt.jit_post_compile_hook)
            self._rt.jit_cache_hook = self._before
            self._rt.jit_post_compile_hook = self._after
        return self

    def _before(self, key=None, **kw):
        self._start[repr(key)] = time.perf_counter()
        return False  # compile as usual

    def _after(self, key=None, **kw):
        t0 = self._start.pop(repr(key), None)
        self.count += 1
        if t0 is not None:
            self.seconds += time.perf_counter() - t0
        return None

    def __exit__(self, *exc):
        if self._rt is not None:
            self._rt.jit_cache_hook, self._rt.jit_post_compile_hook = self._prev
        return False

    def as_dict(self) -> dict:
        return {"specializations_compiled": self.count,
                "compile_s": None if self.seconds is None else round(self.seconds, 2)}


def run_prove(args, device, out: Output) -> int:
    names = known_backends(args.backends, out)
    emulation = _cuda_emulation(args, out)
    junit: List[ET.Element] = []
    failed = 0
    precompiled = None
    if not args.rehearse and device.type == "cuda" and args.precompile > 0 and "triton" in names:
        precompiled = precompile(args.precompile, out)
    with emulation, JitMeter() as jit:
        for op, name, dname, facts, run, extra in prove_cases(device, args.rehearse):
            for be in names:
                row = {"op": op, "backend": be, "case": name, "dtype": dname, "status": None, "message": None,
                       "max_abs_err": None, "seconds": None}
                if extra.get("windows"):
                    row["windows"] = extra["windows"]
                why = backends.not_supported_reasons(be, op, facts)
                t0 = time.perf_counter()
                if why:
                    row.update(status="skipped", message="; ".join(why))
                else:
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            run(be)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        row["status"] = "ok"
                    except Exception as exc:
                        check_stop()
                        failed += 1
                        row.update(status="FAIL", message=reason_of(exc, 600))
                        m = _ERR_RE.search(str(exc))
                        row["max_abs_err"] = float(m.group(1)) if m else None
                        print(traceback.format_exc(), flush=True)
                row["seconds"] = round(time.perf_counter() - t0, 3)
                print(f"{row['status']:<8}{be:<9}{op:<26}{dname:<6}{name}"
                      f"{'' if row['status'] == 'ok' else ': ' + str(row['message'])[:300]}", flush=True)
                out.add(row)
                junit.append(_junit_case(row))
                _write_junit(args.junit, junit)
                out.data["jit"] = dict(jit.as_dict(), precompile=precompiled)
    out.data["jit"] = dict(jit.as_dict(), precompile=precompiled)
    print(f"jit: {jit.count} specializations compiled in this process, {jit.seconds} s "
          f"(precompile: {precompiled})", flush=True)
    ran = sum(r["status"] == "ok" for r in out.data["rows"])
    print(f"{ran} passed, {failed} failed, "
          f"{sum(r['status'] == 'skipped' for r in out.data['rows'])} skipped", flush=True)
    return 1 if failed or not ran else 0


def _junit_case(row: dict) -> ET.Element:
    # Named so that mat_kernels.bench.tune attributes it: op in the name, backend a token of the id.
    tc = ET.Element("testcase", classname="benchmarks.gpu_campaign.prove",
                    name=f"{row['op']}[{row['backend']}-{row['dtype']}-{re.sub(r'[^A-Za-z0-9.]+', '_', row['case'])}]",
                    time=str(row["seconds"]))
    if row["status"] == "FAIL":
        ET.SubElement(tc, "failure", message=str(row["message"])[:2000])
    elif row["status"] == "skipped":
        ET.SubElement(tc, "skipped", message=str(row["message"])[:500])
    return tc


def _write_junit(path: Optional[str], cases: List[ET.Element]) -> None:
    if not path:
        return
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name="gpu_campaign.prove", tests=str(len(cases)))
    suite.extend(cases)
    tmp = f"{path}.tmp{os.getpid()}"
    ET.ElementTree(suites).write(tmp, encoding="unicode")
    os.replace(tmp, path)


@contextlib.contextmanager
def _no_context():
    yield


def _cuda_emulation(args, out: Output):
    """The CUDA backend on the host emulation of its kernels (rehearsal only)."""
    if not getattr(args, "emulate_cuda", False):
        return _no_context()
    import tempfile
    from pathlib import Path

    from tests.cuda import _emulation
    t0 = time.perf_counter()
    # One build per rehearsal: gpu_check.sh names a folder shared by the tier's two steps.
    where = Path(os.environ.get("GPU_CHECK_EMU_DIR") or tempfile.mkdtemp(prefix="mat_emu_"))
    where.mkdir(parents=True, exist_ok=True)
    built = where / "libmk_emu.so"
    try:
        if built.exists():
            import ctypes
            lib = ctypes.CDLL(str(built))
            for name in ("emu_window_attention_fwd", "emu_window_attention_bwd", "emu_window_mask_update",
                         "emu_partial_conv_mask_update"):
                getattr(lib, name).restype = ctypes.c_char_p
            how = f"loaded from {built}"
        else:
            lib = _emulation.build(where)
            how = f"built in {time.perf_counter() - t0:.1f} s"
    except BaseException as exc:  # require_tool skips (a BaseException) without g++/nvcc headers
        raise RuntimeError(f"cannot build the host emulation of the CUDA kernels: {exc}") from None
    out.note(f"rehearsal: the 'cuda' backend runs csrc/*.cu as host C++ (tests/cuda/_emulation.py), {how}")
    return _emulation.emulated_cuda_backend(lib)


# ------------------------------------------------------------------------------------- bench-core
def backend_peers(names: Iterable[str]) -> List[peers.Peer]:
    """A bench peer per backend: the registered peer that runs it, or one built for it (named
    ``<name>-backend`` if a comparison peer already has the name)."""
    got = []
    for n in names:
        p = next((p for p in peers.PEERS.values() if p.backend == n), None)
        if p is None:
            pname = f"{n}-backend" if n in peers.PEERS else n
            p = peers.Peer(pname, f"backend {n!r}", False, peers._build_backend(n), backend=n)
        got.append(p)
    return got


def bench_cases(rehearse: bool) -> List[C.AttentionCase]:
    shape = C.Shape(BENCH_SHAPE.layers, 16, BENCH_SHAPE.window, BENCH_SHAPE.shift, True) if rehearse else BENCH_SHAPE
    batch = 1 if rehearse else BENCH_BATCH
    return [C.AttentionCase(shape, batch, d, m) for d in BENCH_DTYPES for m in C.MODES]


def run_bench_core(args, device, out: Output) -> int:
    names = known_backends(args.backends, out)
    emulation = _cuda_emulation(args, out)
    comparison = [peers.PEERS[n] for n in args.peers]
    plist = comparison + [p for p in backend_peers(names) if p.name not in args.peers]
    environment = out.data["environment"]
    if device.type == "cuda":
        environment["dram_bandwidth_bytes_per_s"] = args.dram_bandwidth * 1e12
        environment["dram_bandwidth_source"] = f"measured device copy ({args.dram_bandwidth} TB/s)"
    warmup, repeats = (0, 1) if args.rehearse else (5, 20)
    settings = {"suite": "gpu-campaign bench-core", "device": str(device), "peers": [p.name for p in plist],
                "warmup": warmup, "repeats": repeats, "l2_flush": device.type == "cuda",
                "cases": [c.id for c in bench_cases(args.rehearse)]}
    if args.rehearse:
        out.note("rehearsal: CPU timings (perf_counter, 1 repeat) at a 16x16 grid, B=1; not GPU results")
    from mat_kernels.bench.run import configure_compiler as _configure_compiler
    _configure_compiler()
    rows: List[dict] = []
    result = report.make_result("gpu-campaign-bench-core", environment, settings, out.data["notes"], rows, [], 0.0)
    out.data.update({k: v for k, v in result.items() if k not in ("notes",)})
    skip = {}
    if args.rehearse:
        skip = {p.name: "rehearsal: not compiled on CPU (about 20 s a case; tests/bench/test_suite.py runs it on CPU)"
                for p in plist if p.compiles}
    from mat_kernels.bench.suite import add_speedups

    def peer_done(r):
        print(f"{r['case_id']:<28}{r['peer']:<14}{r['status']:<12}{r['median_ms'] or r['reason']}", flush=True)
        check_stop()  # a signal swallowed inside a compiler still stops the tier here
        rows.append(r)
        out.data["jit"] = jit.as_dict()
        out.write()

    with emulation, JitMeter() as jit:
        try:
            for case in bench_cases(args.rehearse):
                run_case(case, plist, device, warmup, repeats, skip=skip,
                         dram_bw=environment["dram_bandwidth_bytes_per_s"], on_peer_done=peer_done)
                add_speedups(rows)  # the same row objects: speedups of the finished case
                out.write()
        finally:
            add_speedups(rows)  # a stopped case keeps the ratios of the peers it measured
            out.data["jit"] = jit.as_dict()
    report.validate(out.data)
    bad = [r for r in rows if r["status"] == "failed" or r["within_tolerance"] is False]
    return 1 if bad else 0


# ------------------------------------------------------------------------------------ bench-model
def run_bench_model(args, device, out: Output) -> int:
    from mat_kernels.bench import model
    res, batches, train_batch = (256, [1], 1) if args.rehearse else (512, [1, 8], 4)
    warmup, repeats = (0, 1) if args.rehearse else (2, 5)
    networks = _rehearsal_networks() if args.rehearse else None
    if args.rehearse:
        out.note("rehearsal: the stand-in networks of tests/train/tiny_models.py at 256, B=1 (not MAT)")
    rows: List[dict] = []
    out.data.update(report.make_result("gpu-campaign-bench-model", out.data["environment"], {
        "resolution": res, "batches": batches, "train_batch": train_batch, "warmup": warmup, "repeats": repeats},
        out.data["notes"], [], rows, 0.0))

    def done(r):
        rows.append(r)
        print(f"{r['what']:<18}{r['path']:<10}{r['dtype']:<6}b{r['batch']:<3}{r['status']:<8}"
              f"{r['images_per_s'] if r['images_per_s'] else r['reason']}", flush=True)
        out.data["model"] = rows
        out.write()

    plan = [(dt, "generator_forward", batches) for dt in ("fp32", "bf16")] + [("bf16", "train_step", [train_batch])]
    for dt, what, bs in plan:
        model.run_model(res, bs, device, warmup, repeats, paths=("reference", "auto"), whats=(what,), dtype=dt,
                        on_row_done=done, networks=networks)
        out.write()  # the speedups, added once a group is complete
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def _rehearsal_networks():
    from tests.train.tiny_models import TinyDiscriminator, TinyGenerator

    class G(TinyGenerator):
        def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels):
            super().__init__(z_dim, w_dim, img_resolution)

        def set_backend(self, name):
            pass

    class D(TinyDiscriminator):
        def __init__(self, c_dim, img_resolution, img_channels):
            super().__init__()

    return G, D


# ------------------------------------------------------------------- specializations and precompile
class _Recorder:
    """Stands in for a @triton.jit kernel: ``kernel[grid](*args, **kwargs)`` records the launch
    (kernel, grid, args, kwargs) and runs nothing (with ``run``, then launches the kernel)."""

    def __init__(self, kernel, log: list, run: bool = False):
        self.kernel, self.log, self.run = kernel, log, run

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append((self.kernel, grid, args, kwargs))
            if self.run:
                return self.kernel[grid](*args, **kwargs)
        return launch


KERNEL_MODULES = ("window_attention", "mask_update", "bias_act")


@contextlib.contextmanager
def recording(log: list, run: bool = False, device_config: bool = True):
    """Every @triton.jit kernel of mat_kernels.triton replaced by a :class:`_Recorder`, the
    ``wrap_triton`` of the library ops by the identity (which it is outside tracing), and the
    attention launchers' configuration by the GPU's (:func:`device_config`, no interpreter upcast)."""
    import importlib

    from mat_kernels.triton import library
    from triton.runtime.jit import JITFunction
    saved = []
    for name in KERNEL_MODULES:
        mod = importlib.import_module(f"mat_kernels.triton.{name}")
        for attr, val in list(vars(mod).items()):
            fn = getattr(val, "fn", None)
            if attr.endswith("_kernel") and (isinstance(val, JITFunction) or callable(fn)):
                saved.append((mod, attr, val))
                setattr(mod, attr, _Recorder(val, log, run))
    saved.append((library, "wrap_triton", library.wrap_triton))
    library.wrap_triton = lambda k: k
    # The launch options of a GPU, also when planned under the interpreter (which has its own tiles
    # and upcasts bf16 dots): nothing runs, so the plan is the device's.
    wa = importlib.import_module("mat_kernels.triton.window_attention")
    saved += [(wa, "kernel_config", wa.kernel_config), (wa, "_upcast", wa._upcast)]
    if device_config:
        wa.kernel_config, wa._upcast = wa.device_config, (lambda dtype: False)
    try:
        yield
    finally:
        for mod, attr, val in saved:
            setattr(mod, attr, val)


def _constexpr_names(kernel) -> List[str]:
    import inspect
    fn = getattr(kernel, "fn", kernel)
    return [n for n, p in inspect.signature(fn).parameters.items() if "constexpr" in str(p.annotation)]


def specialization(kernel, args: tuple, kwargs: dict) -> dict:
    """What Triton's JIT keys a launch on: each runtime argument's type and alignment /
    divisibility mark (Triton's own ``specialize_impl``; an int equal to 1 becomes a constant), the
    constexprs and the launch options."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend
    import inspect
    fn = getattr(kernel, "fn", kernel)
    names = list(inspect.signature(fn).parameters)
    cexpr = set(_constexpr_names(kernel))
    sig, consts, attrs = {}, {}, {}
    runtime = [n for n in names if n not in cexpr]
    for i, (n, a) in enumerate(zip(runtime, args)):
        ty, attr = native_specialize_impl(BaseBackend, a, False, True, True)[:2]
        if ty == "constexpr":
            consts[n] = attr
            sig[n] = "constexpr"
        else:
            sig[n] = ty
            if attr:
                attrs[n] = attr
    opts = {}
    for k, v in kwargs.items():
        if k in cexpr:
            consts[k] = v
            sig[k] = "constexpr"
        else:
            opts[k] = v
    return {"module": fn.__module__.rsplit(".", 1)[-1], "kernel": fn.__name__,
            "signature": {n: sig[n] for n in names if n in sig}, "constexprs": consts, "attrs": attrs,
            "options": opts}


def approximate_key(kernel, args: tuple, kwargs: dict) -> str:
    """A key close to the JIT's (tensor dtypes, ints equal to 1 or divisible by 16, everything
    else as given) that needs no Triton internals: it only spreads precompile work over workers."""
    def mark(a):
        if isinstance(a, torch.Tensor):
            return str(a.dtype)
        if isinstance(a, bool) or not isinstance(a, int):
            return type(a).__name__
        return "1" if a == 1 else ("D" if a % 16 == 0 else "i")
    fn = getattr(kernel, "fn", kernel)
    return json.dumps([fn.__name__, [mark(a) for a in args], sorted((k, str(v)) for k, v in kwargs.items())])


def spec_key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, default=str)


def planned_launches(device: torch.device, tiers=("prove", "bench-core"), prove_backend: str = "triton",
                     rehearse: bool = False, device_config: bool = True):
    """Every Triton launch the tiers make on ``device`` (at the device shapes, or the
    rehearsal's), recorded without running a kernel: prove's checks call the ops exactly as below
    (q, k, v contiguous leaves, contiguous incoming gradient), bench-core's triton peer as
    mat_kernels.bench.suite does. tests/bench/test_gpu_campaign.py checks that this plan and the
    launches of a real (rehearsal) proof are the same specializations."""
    from mat_kernels import ops
    log: list = []
    with recording(log, device_config=device_config), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "prove" in tiers:
            for op, name, dname, facts, run, extra in prove_cases(device, rehearse=rehearse):
                if backends.not_supported_reasons(prove_backend, op, facts):
                    continue
                if op == "window_attention":
                    s = extra["shape"]
                    B = prove_batch(s)
                    mask = mat_key_mask(B, s.grid, s.window, s.shift) if s.masked else None
                    _attention_call(ops, prove_backend, B, s, DTYPES[dname], mask, device, 1 if rehearse else HEADS)
                elif op == "bias_act":
                    x, b, dim, act, kw = extra["inputs"]
                    leaves = [x.detach().requires_grad_(), b.detach().requires_grad_()]
                    y = ops.bias_act(leaves[0], leaves[1], dim, act, backend=prove_backend, **kw)
                    torch.autograd.grad(y, leaves, torch.empty_like(y))
                else:
                    with contextlib.suppress(AssertionError):
                        run(prove_backend)  # the recorded kernels write nothing: the check itself fails
        if "bench-core" in tiers:
            from mat_kernels.bench.suite import make_call
            for case in bench_cases(rehearse):
                q, k, v, mask = C.make_inputs(case, device)
                grad_out = torch.empty(q.shape, device=device, dtype=q.dtype) if case.mode == "fwdbwd" else None
                make_call(case, peers._build_backend(prove_backend)(case, device), q, k, v, mask, grad_out)()
    return log


def _attention_call(ops, be, B, s, dt, mask, device, heads):
    C_ = heads * HEAD_DIM
    leaves = [torch.empty(B, s.grid, s.grid, C_, device=device, dtype=dt).requires_grad_() for _ in range(3)]
    out, _ = ops.window_attention(*leaves, None if mask is None else mask.to(device), window_size=s.window,
                                  shift_size=s.shift, num_heads=heads, backend=be)
    torch.autograd.grad(out, leaves, torch.empty(out.shape, device=device, dtype=dt))


def unique_specs(log) -> List[dict]:
    seen, specs = set(), []
    for kernel, grid, args, kwargs in log:
        spec = specialization(kernel, args, kwargs)
        k = spec_key(spec)
        if k not in seen:
            seen.add(k)
            specs.append(spec)
    return specs


def _compile_spec(spec: dict, cap: int) -> dict:
    """Compile one specialization for sm_<cap> (in a worker without TRITON_INTERPRET)."""
    import importlib

    import triton
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.compiler import ASTSource
    mod = importlib.import_module(f"mat_kernels.triton.{spec['module']}")
    fn = getattr(mod, spec["kernel"])
    names = list(spec["signature"])
    attrs = {}
    for n, a in spec["attrs"].items():
        attrs[(names.index(n),)] = BaseBackend.parse_attr(a)
    t0 = time.perf_counter()
    err = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            triton.compile(ASTSource(fn, spec["signature"], spec["constexprs"], attrs),
                           target=GPUTarget("cuda", cap, 32), options=dict(spec["options"]))
    except Exception as exc:
        err = reason_of(exc, 300)
    return {"kernel": spec["kernel"], "seconds": round(time.perf_counter() - t0, 3), "error": err}


def _compile_worker_init() -> None:
    """The compile gate's worker setup, and an empty Triton cache: every compile is timed in full."""
    import tempfile

    from mat_kernels.triton.aot import _worker_init
    _worker_init()
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="mat_specs_cache_")


def compile_specs(specs: List[dict], workers: int, cap: int = 90) -> Tuple[List[dict], float]:
    import concurrent.futures as cf
    import multiprocessing

    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx, initializer=_compile_worker_init) as pool:
        rows = list(pool.map(_compile_spec, specs, [cap] * len(specs)))
    return rows, time.perf_counter() - t0


def run_specs(args, device, out: Output) -> int:
    """Count (and with --compile, build and time) the specializations of prove + bench-core."""
    from mat_kernels.triton._common import interpreting
    if not interpreting():
        out.note("specs needs the kernels interpreted (TRITON_INTERPRET=1): it records launches on CPU tensors")
        return 2
    t0 = time.perf_counter()
    per_tier = {t: unique_specs(planned_launches(torch.device("cpu"), (t,))) for t in ("prove", "bench-core")}
    allspecs = unique_specs(planned_launches(torch.device("cpu")))
    digest = hashlib.sha256("\n".join(sorted(spec_key(s) for s in allspecs)).encode()).hexdigest()[:16]
    by_kernel: Dict[str, int] = {}
    for s in allspecs:
        by_kernel[s["kernel"]] = by_kernel.get(s["kernel"], 0) + 1
    out.data.update(specializations=len(allspecs), per_tier={t: len(v) for t, v in per_tier.items()},
                    by_kernel=by_kernel, digest=digest, count_s=round(time.perf_counter() - t0, 2))
    print(f"{len(allspecs)} Triton specializations (prove {len(per_tier['prove'])}, bench-core "
          f"{len(per_tier['bench-core'])}, {len(allspecs)} distinct); digest {digest}", flush=True)
    if args.compile:
        rows, wall = compile_specs(allspecs, args.workers)
        serial = sum(r["seconds"] for r in rows)
        bad = [r for r in rows if r["error"]]
        import triton
        out.data.update(compile={"arch": "sm_90", "workers": args.workers, "wall_s": round(wall, 1),
                                 "serial_s": round(serial, 1), "errors": bad, "triton": triton.__version__,
                                 "cpu": env.cpu_name(), "digest": digest,
                                 "date": time.strftime("%Y-%m-%d", time.gmtime())})
        print(f"compiled for sm_90 on {env.cpu_name()}: {serial:.1f} s serial, {wall:.1f} s wall on "
              f"{args.workers} workers; {len(bad)} errors", flush=True)
        if bad:
            return 1
    return 0


def _precompile_worker(index: int, workers: int) -> Tuple[int, float]:
    """Worker of :func:`precompile`: plan every launch on the GPU and warm up (compile into
    Triton's cache, no launch) the unique specializations ``index::workers`` of them."""
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    log = planned_launches(torch.device("cuda"))
    seen, n = set(), 0
    for kernel, grid, args, kwargs in log:
        k = approximate_key(kernel, args, kwargs)
        if k in seen:
            continue
        seen.add(k)
        if (len(seen) - 1) % workers == index:
            kernel.warmup(*args, grid=grid, **kwargs)
            n += 1
    return n, time.perf_counter() - t0


def precompile(workers: int, out: Output) -> dict:
    """Fill Triton's on-disk cache with prove's and bench-core's specializations from ``workers``
    processes, so that the checks' JIT finds them compiled. A miss only costs its compile later."""
    import concurrent.futures as cf
    import multiprocessing
    t0 = time.perf_counter()
    try:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            got = list(pool.map(_precompile_worker, range(workers), [workers] * workers))
        info = {"workers": workers, "specializations": sum(n for n, _ in got), "wall_s": round(time.perf_counter() - t0, 1)}
    except Exception as exc:
        info = {"workers": workers, "error": reason_of(exc), "wall_s": round(time.perf_counter() - t0, 1)}
    out.note(f"precompile: {info}")
    return info


# ------------------------------------------------------------------------------------------ main
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_campaign.py", description=__doc__.split("\n\n")[0])
    p.add_argument("tier", choices=("prove", "bench-core", "bench-model", "specs"))
    p.add_argument("--out", required=True, help="the tier's JSON")
    p.add_argument("--rehearse", action="store_true", help="CPU, tiny shapes (see the module docstring)")
    p.add_argument("--backends", type=lambda s: [t for t in s.split(",") if t], default=list(CAMPAIGN_BACKENDS),
                   help=f"backends to prove / bench (default {','.join(CAMPAIGN_BACKENDS)}; unknown names skipped)")
    p.add_argument("--peers", type=lambda s: [t for t in s.split(",") if t], default=list(BENCH_PEERS),
                   help=f"bench-core comparison peers (default {','.join(BENCH_PEERS)})")
    p.add_argument("--emulate-cuda", action="store_true", help="rehearsal: the cuda backend on its host emulation")
    p.add_argument("--junit", default=None, help="prove: also write a JUnit XML here")
    p.add_argument("--precompile", type=int, default=0, metavar="N",
                   help="prove on a GPU: compile the Triton specializations in N processes first")
    p.add_argument("--dram-bandwidth", type=float, default=4.3, metavar="TB/s",
                   help="bench-core: the measured DRAM ceiling (H200 device copy: 4.3)")
    p.add_argument("--compile", action="store_true", help="specs: build each for sm_90 and time it")
    p.add_argument("--workers", type=int, default=2, help="specs --compile: compile processes")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    bad = [n for n in args.peers if n not in peers.PEERS]
    if bad:
        parser().error(f"--peers: unknown {bad}; choose from {list(peers.PEERS)}")
    device = torch.device("cpu" if args.rehearse or args.tier == "specs" else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser().error("no CUDA device: run with --rehearse on a machine without one")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    out = Output(args.out, args.tier, args.rehearse, device)
    run = {"prove": run_prove, "bench-core": run_bench_core, "bench-model": run_bench_model,
           "specs": run_specs}[args.tier]
    try:
        rc = run(args, device, out)
    except Stop as exc:
        out.note(f"stopped by {exc} (time limit): the results are partial")
        out.write(finished=False)
        return 124
    except Exception as exc:
        out.note(f"the tier crashed: {reason_of(exc, 1000)}")
        traceback.print_exc()
        out.write(finished=False)
        return 1
    out.write(finished=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
