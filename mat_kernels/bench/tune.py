"""``python -m mat_kernels.bench.tune RESULTS...``: propose ``backends.preferences.PREFERENCES``
(the order ``backend="auto"`` tries the fused backends on CUDA) from GPU measurements.

Input files (any number, any mix; the kind is recognised by content):

* a ``mat-bench`` result JSON (``"schema": "mat_kernels.bench/1"``): its attention rows whose
  ``peer`` is a backend (reference, sdpa, triton, cuda) give op ``window_attention``, the case's dtype,
  ``median_ms``, and a correctness verdict: a row passed when ``status == "ok"`` and
  ``within_tolerance is True`` (the float64 reference within ``mat_kernels.testing.TOLERANCES``);
* a pytest-benchmark JSON of ``benchmarks/bench_*.py`` (``--benchmark-json``; rows with a
  ``backend`` param, e.g. the mask updates): timings only, op from the test name, dtype fp32;
* a JUnit XML of the GPU test run (``pytest -m gpu --junitxml``): a test case names a backend
  by a ``-``-separated token of its parameter id (``test_window_attention[cuda-...]``) or by its
  folder (``tests/cuda``, ``tests/triton``), and an op by its name or module.

Rules, per op:

1. A backend is *eligible* when it has evidence of passing (a passing bench row or a passing
   JUnit test naming it and the op, or naming it and no op) and nothing failing (no bench row
   off tolerance or failed, no failed/errored JUnit test naming it and the op or no op). A
   failure in any dtype excludes it for the whole op, since ``PREFERENCES`` is per op.
2. Its speed is the geometric mean, over every measured case of every dtype (shapes, batches,
   directions), of ``reference median / its median`` on the same case.
3. The proposed order lists the eligible backends faster than the reference (geomean > 1),
   fastest first; the reference is not listed (``auto`` always ends with it).
4. An op with no usable timing at all keeps its current entry, marked "kept" in the output,
   since nothing was measured to change it (``--drop-unmeasured`` empties it instead).

It prints the per-(op, dtype) detail and the proposed table; ``--write`` rewrites the dict of
``mat_kernels/backends/preferences.py`` (its docstring is kept).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Tuple

from .. import backends
from ..backends import preferences

PREFERENCES_PATH = preferences.__file__
FUSED = tuple(n for n in backends.BACKENDS if n != "reference")


class Evidence:
    """Everything read from the inputs: timings per (op, dtype, case, backend) and verdicts."""

    def __init__(self):
        self.times: Dict[Tuple[str, str, str], Dict[str, float]] = defaultdict(dict)  # (op, dtype, case) -> {be: ms}
        self.passed: Dict[Tuple[str, Optional[str]], int] = defaultdict(int)  # (backend, op or None) -> count
        self.failed: Dict[Tuple[str, Optional[str]], List[str]] = defaultdict(list)
        self.unattributed_failures: List[str] = []
        self.sources: List[str] = []

    def verdict(self, backend: str, op: str, ok: bool, what: str, op_known: bool = True) -> None:
        key = (backend, op if op_known else None)
        if ok:
            self.passed[key] += 1
        else:
            self.failed[key].append(what)

    def failures(self, backend: str, op: str) -> List[str]:
        return self.failed.get((backend, op), []) + self.failed.get((backend, None), [])

    def eligible(self, backend: str, op: str) -> bool:
        if self.failures(backend, op):
            return False
        return self.passed.get((backend, op), 0) + self.passed.get((backend, None), 0) > 0


# ------------------------------------------------------------------------------------------ readers

def _read_mat_bench(data: dict, ev: Evidence, path: str) -> None:
    for row in data.get("attention", []):
        be = row.get("peer")
        if be not in backends.BACKENDS:
            continue  # compile/flex are comparisons, not backends auto can pick
        case = row.get("case") or {}
        dtype = case.get("dtype", "?")
        status, within = row.get("status"), row.get("within_tolerance")
        what = f"{path}: {row.get('case_id')}"
        if status == "ok" and within is not None:
            ev.verdict(be, "window_attention", within is True, f"{what} (max err {row.get('max_abs_err')}, "
                       f"grad {row.get('max_abs_err_grad')}, mask match {row.get('mask_match')}: off tolerance)")
        elif status == "failed" and not _unsupported(row.get("reason")):
            # A crash of a backend that said it could run is a failure; "cannot run here" is not.
            ev.verdict(be, "window_attention", False, f"{what}: {row.get('reason')}")
        if row.get("status") == "ok" and row.get("median_ms"):
            ev.times[("window_attention", dtype, row.get("case_id", "?"))][be] = float(row["median_ms"])


def _unsupported(reason: Optional[str]) -> bool:
    # A row the peer could not run carries the registry's reasons ("needs CUDA tensors, got cpu");
    # a crash carries suite.reason_of's "ExceptionType: message", a bare name before the colon.
    return not re.match(r"^[A-Za-z_][\w.]*:", reason or "")


def _op_in(text: str) -> Optional[str]:
    # Longest first: "window_mask_update" before a bare "mask_update" match of another op.
    for op in sorted(backends.OPS, key=len, reverse=True):
        if op in text:
            return op
    return None


def _read_pytest_benchmark(data: dict, ev: Evidence, path: str) -> None:
    for b in data.get("benchmarks", []):
        params = b.get("params") or {}
        be = params.get("backend")
        op = _op_in(b.get("name", ""))
        median = (b.get("stats") or {}).get("median")
        if be not in backends.BACKENDS or op is None or median is None:
            continue
        # The mask-update benchmarks run float32 masks; a dtype param, if any, wins.
        dtype = str(params.get("dtype", "fp32"))
        case = b.get("group") or b.get("name")
        ev.times[(op, dtype, case)][be] = float(median) * 1e3


def _junit_backend(classname: str, name: str) -> Optional[str]:
    m = re.search(r"\[(.*)\]$", name)
    if m:
        tokens = m.group(1).split("-")
        hits = [t for t in tokens if t in backends.BACKENDS]
        if hits:
            return hits[0]
    parts = classname.split(".")
    for be in FUSED:
        if be in parts[:-1]:  # the folder (tests.cuda.test_x), not a module named like it
            return be
    return None


def _read_junit(path: str, ev: Evidence) -> None:
    root = ET.parse(path).getroot()
    for tc in root.iter("testcase"):
        classname, name = tc.get("classname", ""), tc.get("name", "")
        if tc.find("skipped") is not None:
            continue
        failed = tc.find("failure") is not None or tc.find("error") is not None
        be = _junit_backend(classname, name)
        what = f"{classname}::{name}"
        if be is None:
            if failed:
                ev.unattributed_failures.append(what)
            continue
        op = _op_in(name.split("[")[0]) or _op_in(classname.split(".")[-1])
        ev.verdict(be, op or "", not failed, f"{path}: {what}", op_known=op is not None)


def read(paths: List[str]) -> Evidence:
    ev = Evidence()
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"RESULTS: no such file {path!r}")
        if path.endswith(".xml"):
            _read_junit(path, ev)
        else:
            with open(path) as f:
                data = json.load(f)
            if str(data.get("schema", "")).startswith("mat_kernels.bench/"):
                _read_mat_bench(data, ev, path)
            elif "benchmarks" in data:
                _read_pytest_benchmark(data, ev, path)
            else:
                raise ValueError(f"RESULTS: {path!r} is neither a mat-bench result (schema mat_kernels.bench/*), "
                                 "a pytest-benchmark JSON nor a JUnit XML")
        ev.sources.append(path)
    return ev


# --------------------------------------------------------------------------------------- proposal

def _geomean(xs: List[float]) -> Optional[float]:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def speedups(ev: Evidence, op: str, dtype: Optional[str] = None) -> Dict[str, List[float]]:
    """backend -> reference/backend time ratios over the cases of ``op`` (and ``dtype``)."""
    out: Dict[str, List[float]] = defaultdict(list)
    for (o, dt, _case), times in ev.times.items():
        if o != op or (dtype is not None and dt != dtype) or "reference" not in times:
            continue
        for be, ms in times.items():
            if be != "reference" and ms > 0:
                out[be].append(times["reference"] / ms)
    return out


def propose(ev: Evidence, current: Optional[Dict[str, List[str]]] = None, drop_unmeasured: bool = False):
    """(preferences, detail): the per-op order and, per (op, dtype, backend), its geomean speedup,
    case count and eligibility, plus per op whether it was measured."""
    current = preferences.PREFERENCES if current is None else current
    prefs, detail = OrderedDict(), []
    for op in backends.OPS:
        dtypes = sorted({dt for (o, dt, _c) in ev.times if o == op})
        for dt in dtypes:
            for be, xs in sorted(speedups(ev, op, dt).items()):
                detail.append({"op": op, "dtype": dt, "backend": be, "geomean_speedup": _geomean(xs),
                               "cases": len(xs), "eligible": ev.eligible(be, op)})
        overall = speedups(ev, op)
        if not overall:
            prefs[op] = [] if drop_unmeasured else list(current.get(op, []))
            detail.append({"op": op, "dtype": None, "backend": None, "geomean_speedup": None, "cases": 0,
                           "eligible": None, "kept": not drop_unmeasured})
            continue
        ranked = sorted(((g, be) for be, xs in overall.items() for g in [_geomean(xs)]
                         if ev.eligible(be, op) and g > 1.0), reverse=True)
        prefs[op] = [be for _g, be in ranked]
    return prefs, detail


def render_dict(prefs: Dict[str, List[str]]) -> str:
    """The ``PREFERENCES = {...}`` literal, ops in ``backends.OPS`` order: deterministic text."""
    lines = ["PREFERENCES = {"]
    for op in backends.OPS:
        lines.append(f"    {op!r}: {prefs.get(op, [])!r},".replace("'", '"'))
    return "\n".join(lines + ["}"]) + "\n"


def write_preferences(prefs: Dict[str, List[str]], path: str = PREFERENCES_PATH) -> None:
    """Replace the dict literal of ``path`` and keep everything before it (docstring, imports)."""
    with open(path) as f:
        text = f.read()
    m = re.search(r"^PREFERENCES = \{.*?^\}\n?", text, flags=re.S | re.M)
    if m is None:
        raise ValueError(f"--preferences: no 'PREFERENCES = {{ ... }}' block found in {path}")
    with open(path, "w") as f:
        f.write(text[:m.start()] + render_dict(prefs) + text[m.end():])


def format_proposal(ev: Evidence, prefs, detail, current) -> str:
    lines = ["inputs: " + ", ".join(ev.sources), "",
             f"{'op':<26}{'dtype':<7}{'backend':<10}{'x reference (geomean)':<24}{'cases':<7}eligible"]
    for d in detail:
        if d["backend"] is None:
            lines.append(f"{d['op']:<26}{'-':<7}{'-':<10}{'no timing in the inputs':<24}{'0':<7}"
                         + ("kept current entry" if d.get("kept") else "dropped"))
            continue
        lines.append(f"{d['op']:<26}{d['dtype']:<7}{d['backend']:<10}{d['geomean_speedup']:<24.3f}{d['cases']:<7}"
                     f"{'yes' if d['eligible'] else 'NO'}")
    bad = [(be, op, f) for op in backends.OPS for be in FUSED for f in ev.failures(be, op)]
    if bad:
        lines += ["", "failures that exclude a backend:"]
        lines += [f"  {be} / {op}: {f}" for be, op, f in bad[:20]]
        if len(bad) > 20:
            lines.append(f"  ... and {len(bad) - 20} more")
    if ev.unattributed_failures:
        lines += ["", f"{len(ev.unattributed_failures)} failed test(s) name no backend (not used here), e.g. "
                  + ev.unattributed_failures[0]]
    lines += ["", "proposed:", render_dict(prefs).rstrip()]
    changed = [op for op in backends.OPS if prefs.get(op, []) != list(current.get(op, []))]
    lines.append("changes: " + (", ".join(f"{op}: {current.get(op, [])} -> {prefs[op]}" for op in changed)
                                if changed else "none"))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mat_kernels.bench.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="mat-bench JSON, pytest-benchmark JSON and/or JUnit XML files")
    p.add_argument("--write", action="store_true", help="rewrite the PREFERENCES dict of --preferences")
    p.add_argument("--preferences", default=PREFERENCES_PATH,
                   help="the preferences module to read and (with --write) rewrite (default: the package's)")
    p.add_argument("--drop-unmeasured", action="store_true",
                   help="give ops without any timing an empty entry instead of keeping the current one")
    args = p.parse_args(argv)
    try:
        ev = read(args.results)
    except (OSError, ValueError, ET.ParseError) as exc:
        p.error(str(exc))
    current = _load_current(args.preferences)
    prefs, detail = propose(ev, current, args.drop_unmeasured)
    print(format_proposal(ev, prefs, detail, current))
    if args.write:
        write_preferences(prefs, args.preferences)
        print(f"wrote {args.preferences}", file=sys.stderr)
    return 0


def _load_current(path: str) -> Dict[str, List[str]]:
    """The dict of a preferences file, read as text (it may be a copy, not the imported module)."""
    namespace: dict = {}
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), namespace)  # our own module: a docstring and a dict
    if not isinstance(namespace.get("PREFERENCES"), dict):
        raise ValueError(f"--preferences: {path} defines no PREFERENCES dict")
    return namespace["PREFERENCES"]


if __name__ == "__main__":
    sys.exit(main())
