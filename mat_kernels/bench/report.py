"""Result files: JSON (every number and every failure), a markdown table, a PNG of speedups,
and the table printed at the end of a run."""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

SCHEMA = "mat_kernels.bench/1"
TOP_LEVEL_KEYS = ("schema", "suite", "environment", "settings", "notes", "attention", "model", "wall_s")
ENVIRONMENT_KEYS = ("date", "device_type", "device_name", "compute_capability", "driver_version", "cuda_version",
                    "torch_version", "triton_version", "python_version", "platform", "cpu_count", "git_commit",
                    "git_dirty", "dram_bandwidth_bytes_per_s", "dram_bandwidth_source")
ATTENTION_ROW_KEYS = ("case_id", "case", "peer", "label", "status", "reason", "median_ms", "min_ms", "times_ms",
                      "peak_mem_bytes", "ideal_bytes", "flops", "achieved_bytes_per_s", "bandwidth_fraction",
                      "tflops", "max_abs_err", "max_abs_err_grad", "mask_match", "within_tolerance",
                      "speedup_vs_reference", "speedup_vs_compile")
MODEL_ROW_KEYS = ("what", "path", "batch", "resolution", "dtype", "status", "reason", "median_ms", "min_ms",
                  "times_ms", "images_per_s", "peak_mem_bytes", "speedup_vs_reference", "rel_err_vs_fp32")


def make_result(suite: str, environment: dict, settings: dict, notes: Sequence[str], attention: List[dict],
                model: List[dict], wall_s: float) -> dict:
    return {"schema": SCHEMA, "suite": suite, "environment": environment, "settings": settings,
            "notes": list(notes), "attention": attention, "model": model, "wall_s": wall_s}


def validate(result: dict) -> None:
    """Raise ValueError naming the first missing field; what the tests and readers rely on."""
    for key in TOP_LEVEL_KEYS:
        if key not in result:
            raise ValueError(f"result is missing {key!r}")
    for key in ENVIRONMENT_KEYS:
        if key not in result["environment"]:
            raise ValueError(f"environment is missing {key!r}")
    for i, row in enumerate(result["attention"]):
        for key in ATTENTION_ROW_KEYS:
            if key not in row:
                raise ValueError(f"attention[{i}] is missing {key!r}")
        if row["status"] != "ok" and not row["reason"]:
            raise ValueError(f"attention[{i}] ({row['case_id']}, {row['peer']}) is {row['status']} without a reason")
    for i, row in enumerate(result["model"]):
        for key in MODEL_ROW_KEYS:
            if key not in row:
                raise ValueError(f"model[{i}] is missing {key!r}")


def write_json(result: dict, path: str) -> str:
    validate(result)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=str)
        f.write("\n")
    return path


# ----------------------------------------------------------------------------------------- tables

def _f(x, fmt="{:.3g}", none="-"):
    return none if x is None else fmt.format(x)


def _case_label(case: dict) -> str:
    return f"{case['shape']['name']} b{case['batch']} {case['dtype']} {case['mode']}"


def _peers_in(rows: List[dict]) -> List[str]:
    return list(OrderedDict.fromkeys(r["peer"] for r in rows))


def _cell(r: Optional[dict]) -> str:
    if r is None:
        return ""
    if r["status"] == "ok":
        sp = r["speedup_vs_reference"]
        return f"{r['median_ms']:.3f} ms" + (f" (x{sp:.2f})" if sp is not None and r["peer"] != "reference" else "")
    return r["status"]


def pivot(rows: List[dict]) -> (List[str], List[List[str]]):
    """Header and rows: one line per case, median ms (speedup over the eager reference) per peer."""
    peers = _peers_in(rows)
    by_case: Dict[str, Dict[str, dict]] = OrderedDict()
    for r in rows:
        by_case.setdefault(r["case_id"], {})[r["peer"]] = r
    header = ["case"] + peers
    body = []
    for cid, rs in by_case.items():
        case = next(iter(rs.values()))["case"]
        body.append([_case_label(case)] + [_cell(rs.get(p)) for p in peers])
    return header, body


def failures(rows: List[dict], key="peer") -> List[List[str]]:
    """(peer, status, reason, how many cases) for every distinct failure or skip."""
    grouped: Dict[tuple, int] = OrderedDict()
    for r in rows:
        if r["status"] != "ok":
            k = (r[key], r["status"], r["reason"])
            grouped[k] = grouped.get(k, 0) + 1
    return [[p, s, why, str(n)] for (p, s, why), n in grouped.items()]


def _md(header, body) -> str:
    esc = lambda c: str(c).replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in body]
    return "\n".join(lines)


def detail_table(rows: List[dict]):
    header = ["case", "peer", "status", "median ms", "% DRAM BW", "GB/s", "TFLOP/s", "peak MiB",
              "max err", "grad err", "mask", "within tol", "x ref", "x compile"]
    body = []
    for r in rows:
        mib = None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / 2 ** 20
        body.append([_case_label(r["case"]), r["peer"], r["status"], _f(r["median_ms"], "{:.3f}"),
                     _f(None if r["bandwidth_fraction"] is None else 100 * r["bandwidth_fraction"], "{:.1f}"),
                     _f(None if r["achieved_bytes_per_s"] is None else r["achieved_bytes_per_s"] / 1e9, "{:.1f}"),
                     _f(r["tflops"], "{:.2f}"), _f(mib, "{:.1f}"), _f(r["max_abs_err"], "{:.2e}"),
                     _f(r["max_abs_err_grad"], "{:.2e}"), _f(r["mask_match"], "{}"),
                     _f(r["within_tolerance"], "{}"), _f(r["speedup_vs_reference"], "{:.2f}"),
                     _f(r["speedup_vs_compile"], "{:.2f}")])
    return header, body


def model_table(rows: List[dict]):
    header = ["what", "path", "res", "batch", "dtype", "status", "median ms", "images/s", "peak MiB", "x ref",
              "err vs fp32", "reason"]
    body = []
    for r in rows:
        mib = None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / 2 ** 20
        body.append([r["what"], r["path"], str(r["resolution"]), str(r["batch"]), r["dtype"], r["status"],
                     _f(r["median_ms"], "{:.1f}"), _f(r["images_per_s"], "{:.2f}"), _f(mib, "{:.0f}"),
                     _f(r["speedup_vs_reference"], "{:.2f}"), _f(r.get("rel_err_vs_fp32"), "{:.2e}"),
                     r["reason"] or ""])
    return header, body


def markdown(result: dict) -> str:
    env = result["environment"]
    out = [f"# mat_kernels benchmark: {env['device_name']} ({result['suite']})", ""]
    bw = env["dram_bandwidth_bytes_per_s"]
    out += [f"- date: {env['date']}; commit: {env['git_commit']}{' (dirty)' if env['git_dirty'] else ''}",
            f"- device: {env['device_name']} ({env['device_type']}, cc {env['compute_capability']}), "
            f"driver {env['driver_version']}, CUDA {env['cuda_version']}",
            f"- torch {env['torch_version']}, triton {env['triton_version']}, python {env['python_version']}",
            f"- DRAM bandwidth: {_f(None if bw is None else bw / 1e12, '{:.3g} TB/s')} ({env['dram_bandwidth_source']})",
            f"- settings: {json.dumps(result['settings'])}",
            f"- wall time: {result['wall_s']:.1f} s", ""]
    out += [f"> {n}" for n in result["notes"]]
    if result["attention"]:
        out += ["", "## Window attention: median time (speedup over the eager reference)", ""]
        out.append(_md(*pivot(result["attention"])))
        fails = failures(result["attention"])
        if fails:
            out += ["", "### Peers that did not run", "", _md(["peer", "status", "reason", "cases"], fails)]
        out += ["", "### Every measurement", "",
                "Bandwidth counts the ideal fused traffic (q, k, v, mask read once, out and new mask "
                "written once; for fwd+bwd also q, k, v, dout, mask read and dq, dk, dv written); errors "
                "are max abs against the float64 reference; `within tol` uses mat_kernels.testing.TOLERANCES.",
                "", _md(*detail_table(result["attention"]))]
    if result["model"]:
        out += ["", "## Model", "", _md(*model_table(result["model"]))]
    return "\n".join(out) + "\n"


def write_markdown(result: dict, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(markdown(result))
    return path


def text_table(header, body) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)] if body else [len(h) for h in header]
    fmt = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def console(result: dict) -> str:
    parts = []
    if result["attention"]:
        parts.append(text_table(*pivot(result["attention"])))
        fails = failures(result["attention"])
        if fails:
            parts.append("not run:\n" + "\n".join(f"  {p} ({s}, {n} cases): {why}" for p, s, why, n in fails))
    if result["model"]:
        parts.append(text_table(*model_table(result["model"])))
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------- plot

def write_plot(result: dict, path: str) -> Optional[str]:
    """Bar chart of each peer's speedup over the eager reference, one panel per dtype/direction,
    one bar group per shape and batch. Returns None when no peer besides the reference ran."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The reference is the 1.0 line itself; bars are the other peers.
    rows = [r for r in result["attention"]
            if r["status"] == "ok" and r["speedup_vs_reference"] is not None and r["peer"] != "reference"]
    peers = [p for p in _peers_in(result["attention"]) if any(r["peer"] == p for r in rows)]
    if not rows:
        return None
    panels = list(OrderedDict.fromkeys((r["case"]["dtype"], r["case"]["mode"]) for r in rows))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.9 * 18), 3.6 * len(panels)), squeeze=False)
    for ax, (dt, mode) in zip(axes[:, 0], panels):
        sel = [r for r in rows if r["case"]["dtype"] == dt and r["case"]["mode"] == mode]
        groups = list(OrderedDict.fromkeys(f"{r['case']['shape']['name']}\nb{r['case']['batch']}" for r in sel))
        width = 0.8 / max(1, len(peers))
        for i, p in enumerate(peers):
            xs, ys = [], []
            for j, g in enumerate(groups):
                hit = [r for r in sel if r["peer"] == p and
                       f"{r['case']['shape']['name']}\nb{r['case']['batch']}" == g]
                if hit:
                    xs.append(j + (i - (len(peers) - 1) / 2) * width)
                    ys.append(hit[0]["speedup_vs_reference"])
            ax.bar(xs, ys, width=width, label=p)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, fontsize=7)
        ax.set_ylabel("speedup vs eager reference")
        ax.set_title(f"{result['environment']['device_name']}: {dt} {mode}", fontsize=9)
        ax.legend(fontsize=7, ncol=len(peers))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
