"""The summary of a ``gpu_check.sh`` run: ``python benchmarks/gpu_summary.py LOGS [--out OUT] [--budget S]``.

Reads what exists under LOGS (a tier that was skipped or killed leaves files missing or partial,
and the summary says so): status.tsv (each tier's status and seconds), plan.txt, env/info.json,
the tiers' JSON (prove-triton, bench-core, bench-model, prove-cuda: written by
``benchmarks/gpu_campaign.py`` after every case), the JUnit XML of the proofs and of ``wide``,
the sanitizer logs, tune.txt, and the specialization count of a rehearsal. Writes into OUT
(default LOGS):

* ``summary.md``: one screen: each tier's status and time, every correctness failure with its
  worst error, the performance table with ratios, the model table, the device-time estimate,
  what was skipped and why;
* ``results.json``: every figure (schema ``mat_kernels.gpu_check/1``) with the device, versions
  and git commit;
* ``bench.png``: the speedups of bench-core (when something besides the reference ran).

Each file is written beside its name and renamed, so OUT always holds complete files. Exit
status 1 if a tier failed or a proof failed.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import xml.etree.ElementTree as ET
from collections import OrderedDict

SCHEMA = "mat_kernels.gpu_check/1"
TIERS = ("env", "prove-triton", "bench-core", "bench-model", "prove-cuda", "sanitize", "wide")
HERE = os.path.dirname(os.path.abspath(__file__))
# What ``python benchmarks/gpu_campaign.py specs --compile`` measured for the device's
# specializations (compiled for sm_90 on a CPU machine), with the digest of the list it compiled.
SPECS_RECORD = os.path.join(HERE, "results", "triton-specializations.json")


def _json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _atomic_write(path, text_or_bytes):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".part")
    with open(tmp, "wb" if isinstance(text_or_bytes, bytes) else "w") as f:
        f.write(text_or_bytes)
    os.replace(tmp, path)


def tiers(logs):
    """[{tier, status, rc, seconds, note}] in campaign order (a tier without a line: "not run")."""
    got = OrderedDict()
    path = os.path.join(logs, "status.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in list(f)[1:]:
                name, status, rc, secs, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
                got[name] = {"tier": name, "status": status, "rc": rc, "seconds": _num(secs), "note": note}
    return [got.get(t, {"tier": t, "status": "not run", "rc": None, "seconds": None,
                        "note": "gpu_check.sh had not reached it"}) for t in TIERS]


def _num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def junit(paths):
    n = {"passed": 0, "failed": 0, "skipped": 0}
    failing = []
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as exc:  # a run killed mid-write
            failing.append(f"{os.path.basename(path)}: unreadable ({exc})")
            n["failed"] += 1
            continue
        for tc in root.iter("testcase"):
            bad = tc.find("failure") if tc.find("failure") is not None else tc.find("error")
            if bad is not None:
                n["failed"] += 1
                failing.append(f"{tc.get('classname')}::{tc.get('name')}: {(bad.get('message') or '')[:160]}")
            elif tc.find("skipped") is not None:
                n["skipped"] += 1
            else:
                n["passed"] += 1
    return n, failing


def _mib(b):
    return "-" if b is None else f"{b / 2 ** 20:.0f}"


def _fmt(v, fmt):
    return "-" if v is None else fmt.format(v)


def _x(v):
    return "-" if v is None else f"x{v:.2f}"


def _geo(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def collect(logs, budget=None):
    """Everything the summary shows, as the dict written to results.json."""
    info = _json(os.path.join(logs, "env", "info.json")) or {}
    res = {"schema": SCHEMA, "budget_s": budget, "tiers": tiers(logs), "info": info}
    for key, path in (("prove_triton", "prove-triton/prove-triton.json"), ("prove_cuda", "prove-cuda/prove-cuda.json"),
                      ("bench_core", "bench-core/bench-core.json"), ("bench_cuda", "prove-cuda/bench-cuda.json"),
                      ("bench_model", "bench-model/bench-model.json"), ("specs", "prove-triton/specs.json")):
        res[key] = _json(os.path.join(logs, path))
    envs = [d["environment"] for d in (res["bench_core"], res["prove_triton"], res["bench_model"]) if d]
    res["environment"] = envs[0] if envs else None
    res["rehearse"] = any((res[k] or {}).get("rehearse") for k in ("prove_triton", "bench_core", "bench_model"))
    wide = sorted(glob.glob(os.path.join(logs, "wide", "junit-*.xml")))
    counts, failing = junit(wide)
    res["wide"] = {"files": [os.path.basename(p) for p in wide], **counts, "failing": failing}
    san = {}
    for p in sorted(glob.glob(os.path.join(logs, "sanitize", "*.log"))):
        with open(p, errors="replace") as f:
            lines = f.read().splitlines()
        summary = [l for l in lines if "ERROR SUMMARY" in l or "RACECHECK SUMMARY" in l or
                   l.strip().endswith(("passed, 0 failed",)) or " passed, " in l]
        san[os.path.basename(p)] = summary[-3:] or lines[-3:]
    res["sanitize"] = san
    tune = os.path.join(logs, "tune.txt")
    res["tune"] = open(tune).read() if os.path.exists(tune) else None
    res["specs_record"] = _json(SPECS_RECORD)
    return res


def _prove_lines(name, d):
    if not d:
        return [f"{name}: no result"]
    rows = d.get("rows", [])
    out = []
    by = OrderedDict()
    for r in rows:
        by.setdefault(r["backend"], {"ok": 0, "FAIL": 0, "skipped": 0})[r["status"]] += 1
    state = "" if d.get("finished") else " (PARTIAL: stopped before the end)"
    for be, n in by.items():
        out.append(f"{name} {be}: {n['ok']} passed, {n['FAIL']} failed, {n['skipped']} skipped{state}")
    if not by:
        out.append(f"{name}: no case ran{state}")
    jit = d.get("jit") or {}
    if jit.get("specializations_compiled") is not None:
        out.append(f"  Triton JIT in the proof process: {jit['specializations_compiled']} specializations compiled, "
                   f"{jit['compile_s']} s (precompile: {jit.get('precompile')})")
    for r in rows:
        if r["status"] == "FAIL":
            err = "" if r.get("max_abs_err") is None else f" worst err {r['max_abs_err']:.3e};"
            out.append(f"  FAIL {r['backend']} {r['op']} {r['dtype']} {r['case']}:{err} {str(r['message'])[:220]}")
    for n in d.get("notes", []):
        out.append(f"  note: {n}")
    return out


PEER_ORDER = ("triton", "cuda", "reference", "sdpa", "compile", "flex")


def _bench_rows(res):
    rows = list((res.get("bench_core") or {}).get("attention", []))
    cuda = [r for r in (res.get("bench_cuda") or {}).get("attention", []) if r["peer"] != "reference"]
    # The cuda rows' ratios are against the reference measured beside them in the same process.
    return rows + cuda


def _bench_lines(res):
    rows = _bench_rows(res)
    if not rows:
        return ["no bench-core result"]
    d = res.get("bench_core") or {}
    env = d.get("environment") or {}
    bw = env.get("dram_bandwidth_bytes_per_s")
    case0 = rows[0]["case"]
    out = [f"tran.0 {case0['shape']['name']}, B={case0['batch']} "
           f"({'CUDA events, L2 flushed' if env.get('device_type') == 'cuda' else 'CPU perf_counter'}; "
           f"bandwidth vs {bw / 1e12:.1f} TB/s)" if bw else f"tran.0 {case0['shape']['name']}, B={case0['batch']}",
           "",
           "| dtype | mode | peer | median ms | vs eager | vs compile | peak MiB | DRAM bw | status |",
           "|---|---|---|---|---|---|---|---|---|"]
    order = {p: i for i, p in enumerate(PEER_ORDER)}
    rows = sorted(rows, key=lambda r: (r["case"]["dtype"] != "bf16", r["case"]["mode"],
                                       order.get(r["peer"], 99), r["peer"]))
    for r in rows:
        ok = r["status"] == "ok"
        bwf = r.get("bandwidth_fraction")
        st = "ok" if ok else f"{r['status']}: {(r.get('reason') or '')[:60]}"
        if ok and r.get("within_tolerance") is False:
            st = "OFF TOLERANCE"
        out.append(f"| {r['case']['dtype']} | {r['case']['mode']} | {r['peer']} | "
                   f"{_fmt(r['median_ms'], '{:.3f}')}{'*' if r.get('noisy') else ''} | "
                   f"{_x(r['speedup_vs_reference'])} | {_x(r['speedup_vs_compile'])} | {_mib(r['peak_mem_bytes'])} | "
                   f"{_fmt(None if bwf is None else 100 * bwf, '{:.0f}%')} | {st} |")
    if not d.get("finished", True):
        out.append("bench-core was stopped before the end: rows above are what it measured.")
    return out


def _model_lines(res):
    d = res.get("bench_model") or {}
    rows = d.get("model", [])
    if not rows:
        return ["no bench-model result"]
    out = ["| what | path | dtype | B | images/s | vs reference | peak MiB | status |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ips = "-" if r.get("images_per_s") is None else f"{r['images_per_s']:.2f}"
        st = "ok" if r["status"] == "ok" else f"{r['status']}: {(r.get('reason') or '')[:60]}"
        out.append(f"| {r['what']} | {r['path']} | {r['dtype']} | {r['batch']} | {ips} | "
                   f"{_x(r.get('speedup_vs_reference'))} | {_mib(r.get('peak_mem_bytes'))} | {st} |")
    for n in d.get("notes", []):
        out.append(f"note: {n}")
    return out


def _estimate_lines(res):
    out = []
    live = ((res.get("prove_triton") or {}).get("jit") or {})
    if live.get("specializations_compiled") is not None:
        out.append(f"measured here: {live['specializations_compiled']} specializations JIT-compiled in "
                   f"{live['compile_s']} s by the proof process (after precompile {live.get('precompile')})")
    specs, rec = res.get("specs"), res.get("specs_record")
    if specs:
        out.append(f"counted now: {specs['specializations']} distinct Triton specializations on the device "
                   f"(prove {specs['per_tier']['prove']}, bench-core {specs['per_tier']['bench-core']}; "
                   f"digest {specs['digest']})")
    if rec and rec.get("compile"):
        c = rec["compile"]
        match = "" if not specs else (" (same list)" if specs["digest"] == c["digest"] else
                                      " (STALE: the list changed since; rerun `gpu_campaign.py specs --compile`)")
        out.append(f"compile time for sm_90, from benchmarks/results/triton-specializations.json{match}: "
                   f"{rec['specializations']} specializations, {c['serial_s']} s one after another, "
                   f"{c['wall_s']} s on {c['workers']} processes ({c['cpu']}, Triton {c['triton']}, {c['date']})")
    return out or ["no estimate (no prove-triton result)"]


def summary(res):
    env = res.get("environment") or {}
    info = res.get("info") or {}
    reh = res.get("rehearse")
    head = [f"# GPU check summary{' (REHEARSAL on CPU: not GPU results)' if reh else ''}", ""]
    dev = env.get("device_name") or (info.get("device") or {}).get("name") or "unknown device"
    used = sum(t["seconds"] or 0 for t in res["tiers"])
    head.append(f"{dev}; torch {env.get('torch_version')}, triton {env.get('triton_version')}, "
                f"python {env.get('python_version')}; commit {(env.get('git_commit') or '?')[:12]}"
                f"{' (dirty)' if env.get('git_dirty') else ''}; budget {res.get('budget_s')} s, tiers took {used:.0f} s")
    parts = [head, ["## Tiers", "", "| tier | status | s | note |", "|---|---|---|---|"] +
             [f"| {t['tier']} | {t['status']} | {_fmt(t['seconds'], '{:.0f}')} | "
              f"{t['note']} |" for t in res["tiers"]]]
    corr = ["## Correctness"] + _prove_lines("prove-triton", res.get("prove_triton")) + \
        _prove_lines("prove-cuda", res.get("prove_cuda"))
    w = res["wide"]
    if w["files"]:
        corr.append(f"wide: {w['passed']} passed, {w['failed']} failed, {w['skipped']} skipped ({', '.join(w['files'])})")
        corr += [f"  FAIL {f}" for f in w["failing"][:8]]
    for name, lines in res["sanitize"].items():
        corr.append(f"sanitize {name}: {' | '.join(lines)[:200]}")
    parts.append(corr)
    parts.append(["## Performance (bench-core)", ""] + _bench_lines(res))
    parts.append(["## Model (bench-model)", ""] + _model_lines(res))
    parts.append(["## Device-time estimate (Triton specializations of prove-triton + bench-core)"] + _estimate_lines(res))
    tune = res.get("tune")
    if tune:
        ch = [l for l in tune.splitlines() if l.startswith("changes:")]
        what = "rehearsal: a proposal from CPU timings, meaningless; " if res.get("rehearse") else ""
        parts.append([f"tune: {ch[-1] if ch else 'see tune.txt in logs.tar.gz'} ({what}nothing written; apply with "
                      "`python -m mat_kernels.bench.tune ... --write` from a committed GPU run only)"])
    skipped = [f"- {t['tier']}: {t['note']}" for t in res["tiers"] if t["status"] in ("skipped", "not run", "killed")]
    if skipped:
        parts.append(["## Skipped or stopped"] + skipped)
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


def failed(res):
    bad = any(t["status"] in ("failed",) for t in res["tiers"])
    for k in ("prove_triton", "prove_cuda"):
        bad |= any(r["status"] == "FAIL" for r in (res.get(k) or {}).get("rows", []))
    return bad


def plot(res, path, logs):
    rows = _bench_rows(res)
    if not rows:
        return None
    sources = [os.path.join(logs, p) for p in ("bench-core/bench-core.json", "prove-cuda/bench-cuda.json")]
    newest = max(os.path.getmtime(p) for p in sources if os.path.exists(p))
    if os.path.exists(path) and os.path.getmtime(path) >= newest:
        return path  # drawn from these results already
    sys.path.insert(0, os.path.dirname(HERE))
    from mat_kernels.bench import report
    base = dict(res["bench_core"] or res["bench_cuda"])
    base["attention"] = rows
    if res.get("rehearse"):
        # The fused rows ran in the interpreter / host emulation: say so instead of "not measured".
        env = base["environment"]
        base["environment"] = dict(env, device_type="rehearsal", device_name="CPU rehearsal (not GPU results)")
    tmp = os.path.join(os.path.dirname(path), ".bench.png.part.png")
    got = report.write_plot(base, tmp)
    if got:
        os.replace(tmp, path)
    return got and path


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_summary.py", description=__doc__.split("\n\n")[0])
    p.add_argument("logs", help="the raw folder of a gpu_check.sh run")
    p.add_argument("--out", default=None, help="where summary.md, results.json, bench.png go (default LOGS)")
    p.add_argument("--budget", type=int, default=None, help="the run's budget (shown)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.logs):
        p.error(f"LOGS {args.logs!r} is not a folder")
    out = args.out or args.logs
    os.makedirs(out, exist_ok=True)
    res = collect(args.logs, args.budget)
    text = summary(res)
    _atomic_write(os.path.join(out, "summary.md"), text)
    _atomic_write(os.path.join(out, "results.json"), json.dumps(res, indent=1, default=str) + "\n")
    try:
        plot(res, os.path.join(out, "bench.png"), args.logs)
    except Exception as exc:  # the plot is a convenience; the numbers are in results.json
        print(f"no bench.png: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(text)
    return 1 if failed(res) else 0


if __name__ == "__main__":
    sys.exit(main())
