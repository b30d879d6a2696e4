"""One-screen summary of a ``gpu_check.sh`` OUTDIR: ``python benchmarks/gpu_summary.py OUTDIR``.

Reads what exists (a skipped or failed stage leaves files missing, which the summary says):
status.tsv (stage exit codes), junit-*.xml (tests), info.json (quick check), bench-*.json
(mat-bench results: errors and speedups of the op suite, model images/s) and tune.txt. Prints
the summary and writes it to OUTDIR/summary.md. Exit status 1 if a stage or a test failed.
"""
from __future__ import annotations

import glob
import json
import math
import os
import sys
import xml.etree.ElementTree as ET
from collections import OrderedDict, defaultdict

BACKENDS = ("reference", "triton", "cuda")


def _json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def stages(out):
    path = os.path.join(out, "status.tsv")
    if not os.path.exists(path):
        return ["stages: no status.tsv (gpu_check.sh did not run here)"], False
    lines, bad = ["stages:"], False
    with open(path) as f:
        for row in list(f)[1:]:
            name, rc, secs, note = (row.rstrip("\n").split("\t") + [""] * 4)[:4]
            status = "ok" if rc == "0" else f"FAILED (rc {rc}{', time limit' if rc in ('124', '137') else ''})"
            bad |= rc != "0"
            lines.append(f"  {name:<22}{status:<24}{secs:>5} s  {note}".rstrip())
    return lines, bad


def tests(out):
    files = sorted(glob.glob(os.path.join(out, "junit-*.xml")))
    if not files:
        return ["tests: no JUnit XML (test stage not run)"], False
    n = defaultdict(int)
    failing = []
    for path in files:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:  # a run killed mid-write
            failing.append(f"{os.path.basename(path)}: unreadable ({exc})")
            n["failed"] += 1
            continue
        for tc in root.iter("testcase"):
            if tc.find("failure") is not None or tc.find("error") is not None:
                n["failed"] += 1
                failing.append(f"{tc.get('classname')}::{tc.get('name')}")
            elif tc.find("skipped") is not None:
                n["skipped"] += 1
            else:
                n["passed"] += 1
    lines = [f"tests: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped "
             f"({', '.join(os.path.basename(f) for f in files)})"]
    lines += [f"  FAIL {t}" for t in failing[:8]] + ([f"  ... and {len(failing) - 8} more"] if len(failing) > 8 else [])
    return lines, n["failed"] > 0


def errors(out):
    """Worst max abs error per backend (and dtype) from the quick check and the op benchmark."""
    worst = OrderedDict()  # (backend, dtype) -> [err, source, all within]

    def add(be, dt, err, ok, src):
        if err is None:
            return
        w = worst.setdefault((be, dt), [0.0, src, True])
        if err >= w[0]:
            w[0], w[1] = err, src
        w[2] = w[2] and bool(ok)

    rep = _json(os.path.join(out, "info.json"))
    for c in (rep or {}).get("checks", []):
        add(c["backend"], c["dtype"], max(x for x in (c["max_abs_err"], c["max_abs_err_grad"], 0.0) if x is not None),
            c["passed"], f"info {c['op']}")
    for path in sorted(glob.glob(os.path.join(out, "bench-*.json"))):
        res = _json(path)
        for r in (res or {}).get("attention", []):
            if r.get("peer") in BACKENDS and r.get("status") == "ok":
                err = max(x for x in (r["max_abs_err"], r["max_abs_err_grad"], 0.0) if x is not None)
                add(r["peer"], r["case"]["dtype"], err, r["within_tolerance"] is not False,
                    f"{os.path.basename(path)} {r['case_id']}")
    if not worst:
        return ["worst error: nothing measured (info/bench stages not run or nothing fused ran)"]
    lines = ["worst max abs error vs the reference (fwd and grads):"]
    for (be, dt), (err, src, ok) in worst.items():
        lines.append(f"  {be:<10}{dt:<6}{err:.2e}  {'all within tolerance' if ok else 'OFF TOLERANCE somewhere'}  [{src}]")
    return lines


def _geo(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def speedups(out):
    lines = []
    for path in sorted(glob.glob(os.path.join(out, "bench-*.json"))):
        res = _json(path)
        rows = [r for r in (res or {}).get("attention", []) if r.get("status") == "ok" and r["peer"] != "reference"
                and r.get("speedup_vs_reference")]
        if not rows:
            continue
        peers = list(OrderedDict.fromkeys(r["peer"] for r in rows))
        by = defaultdict(list)
        for r in rows:
            by[(r["case"]["shape"]["name"], r["peer"])].append(r["speedup_vs_reference"])
        shapes = list(OrderedDict.fromkeys(r["case"]["shape"]["name"] for r in rows))
        lines.append(f"speedup over the eager reference, geomean over dtypes/batches/directions "
                     f"({os.path.basename(path)}):")
        lines.append("  " + f"{'shape':<26}" + "".join(f"{p:>10}" for p in peers))
        for s in shapes:
            cells = [_geo(by.get((s, p), [])) for p in peers]
            lines.append("  " + f"{s:<26}" + "".join(f"{'-' if c is None else f'x{c:.2f}':>10}" for c in cells))
    return lines or ["speedups: no op benchmark result"]


def model(out):
    lines = []
    for path in sorted(glob.glob(os.path.join(out, "bench-*.json"))):
        res = _json(path)
        for r in (res or {}).get("model", []):
            if not lines:
                lines.append("model (images/s):")
            ips = "-" if r.get("images_per_s") is None else f"{r['images_per_s']:.2f}"
            sp = "" if r.get("speedup_vs_reference") is None else f" (x{r['speedup_vs_reference']:.2f})"
            why = "" if r.get("status") == "ok" else f" {r.get('status')}: {(r.get('reason') or '')[:60]}"
            lines.append(f"  {r['what']:<18}{r['path']:<10}{r['dtype']:<6}b{r['batch']:<3}{ips:>9}{sp}{why}")
    return lines or ["model: no model benchmark result"]


def tune(out):
    path = os.path.join(out, "tune.txt")
    if not os.path.exists(path):
        return ["tune: not run"]
    with open(path) as f:
        text = f.read()
    changes = [l for l in text.splitlines() if l.startswith("changes:")]
    return [f"tune: {changes[-1] if changes else 'no proposal (see tune.txt)'}"]


def summary(out):
    st, st_bad = stages(out)
    te, te_bad = tests(out)
    parts = [st, te, errors(out), speedups(out), model(out), tune(out)]
    return "\n\n".join("\n".join(p) for p in parts), st_bad or te_bad


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        print("usage: python benchmarks/gpu_summary.py OUTDIR (an existing gpu_check.sh output folder)", file=sys.stderr)
        return 2
    text, bad = summary(argv[0])
    print(text)
    with open(os.path.join(argv[0], "summary.md"), "w") as f:
        f.write("# GPU check summary\n\n```\n" + text + "\n```\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
