"""Result files: JSON (every number and every failure), a markdown table, a PNG of speedups,
and the table printed at the end of a run."""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from .timing import NOISE_RULE

SCHEMA = "mat_kernels.bench/1"
TOP_LEVEL_KEYS = ("schema", "suite", "environment", "settings", "notes", "attention", "model", "wall_s")
ENVIRONMENT_KEYS = ("date", "device_type", "device_name", "compute_capability", "driver_version", "cuda_version",
                    "torch_version", "triton_version", "python_version", "platform", "cpu_count", "cpu_name", "cpu_capability",
                    "torch_num_threads", "git_commit",
                    "git_dirty", "dram_bandwidth_bytes_per_s", "dram_bandwidth_source")
ATTENTION_ROW_KEYS = ("case_id", "case", "peer", "label", "status", "reason", "median_ms", "min_ms", "max_ms",
                      "iqr_ms", "noisy", "times_ms", "peak_mem_bytes", "ideal_bytes", "flops", "achieved_bytes_per_s", "bandwidth_fraction",
                      "tflops", "max_abs_err", "max_abs_err_grad", "mask_match", "within_tolerance",
                      "speedup_vs_reference", "speedup_vs_compile")
MODEL_ROW_KEYS = ("what", "path", "batch", "resolution", "dtype", "status", "reason", "median_ms", "min_ms",
                  "max_ms", "iqr_ms", "noisy", "times_ms", "images_per_s", "peak_mem_bytes", "speedup_vs_reference", "rel_err_vs_fp32")


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


# How a row's status reads in tables (the JSON keeps the short status).
STATUS_TEXT = {"unavailable": "not available (no GPU)"}
TIMING_LEGEND = ("Times: median of the repeats [min-max]; x = speedup over the eager reference (median / median). "
                 + NOISE_RULE + ".")


def status_text(status: str) -> str:
    return STATUS_TEXT.get(status, status)


def _range(r: dict) -> str:
    """'[min-max]' of a timed row, with ' noisy' when its repeats spread wide."""
    if r.get("min_ms") is None or r.get("max_ms") is None:
        return ""
    return f"[{r['min_ms']:.3g}-{r['max_ms']:.3g}]" + (" noisy" if r.get("noisy") else "")


def _cell(r: Optional[dict]) -> str:
    if r is None:
        return ""
    if r["status"] == "ok":
        sp = r["speedup_vs_reference"]
        return (f"{r['median_ms']:.3f} ms {_range(r)}".rstrip()
                + (f" (x{sp:.2f})" if sp is not None and r["peer"] != "reference" else ""))
    return status_text(r["status"])


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
            k = (r[key], status_text(r["status"]), r["reason"])
            grouped[k] = grouped.get(k, 0) + 1
    return [[p, s, why, str(n)] for (p, s, why), n in grouped.items()]


def _md(header, body) -> str:
    esc = lambda c: str(c).replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in body]
    return "\n".join(lines)


def detail_table(rows: List[dict]):
    header = ["case", "peer", "status", "median ms", "min-max ms", "% DRAM BW", "GB/s", "TFLOP/s", "peak MiB",
              "max err", "grad err", "mask", "within tol", "x ref", "x compile"]
    body = []
    for r in rows:
        mib = None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / 2 ** 20
        body.append([_case_label(r["case"]), r["peer"], status_text(r["status"]), _f(r["median_ms"], "{:.3f}"),
                     _range(r) or "-",
                     _f(None if r["bandwidth_fraction"] is None else 100 * r["bandwidth_fraction"], "{:.1f}"),
                     _f(None if r["achieved_bytes_per_s"] is None else r["achieved_bytes_per_s"] / 1e9, "{:.1f}"),
                     _f(r["tflops"], "{:.2f}"), _f(mib, "{:.1f}"), _f(r["max_abs_err"], "{:.2e}"),
                     _f(r["max_abs_err_grad"], "{:.2e}"), _f(r["mask_match"], "{}"),
                     _f(r["within_tolerance"], "{}"), _f(r["speedup_vs_reference"], "{:.2f}"),
                     _f(r["speedup_vs_compile"], "{:.2f}")])
    return header, body


def model_table(rows: List[dict]):
    header = ["what", "path", "res", "batch", "dtype", "status", "median ms", "min-max ms", "images/s", "peak MiB", "x ref",
              "err vs fp32", "first call s", "reason"]
    body = []
    for r in rows:
        mib = None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / 2 ** 20
        body.append([r["what"], r["path"], str(r["resolution"]), str(r["batch"]), r["dtype"], r["status"],
                     _f(r["median_ms"], "{:.1f}"), _range(r) or "-", _f(r["images_per_s"], "{:.2f}"), _f(mib, "{:.0f}"),
                     _f(r["speedup_vs_reference"], "{:.2f}"), _f(r.get("rel_err_vs_fp32"), "{:.2e}"),
                     _f(r.get("first_call_s"), "{:.1f}"), r["reason"] or ""])
    return header, body


def markdown(result: dict) -> str:
    env = result["environment"]
    out = [f"# mat_kernels benchmark: {env['device_name']} ({result['suite']})", ""]
    bw = env["dram_bandwidth_bytes_per_s"]
    out += [f"- date: {env['date']}; commit: {env['git_commit']}{' (dirty)' if env['git_dirty'] else ''}",
            f"- device: {env['device_name']} ({env['device_type']}, cc {env['compute_capability']}), "
            f"driver {env['driver_version']}, CUDA {env['cuda_version']}",
            f"- CPU: {env.get('cpu_name')}, ATen capability {env.get('cpu_capability')}, "
            f"{env.get('torch_num_threads')} torch threads of {env['cpu_count']} CPUs",
            f"- torch {env['torch_version']}, triton {env['triton_version']}, python {env['python_version']}",
            f"- DRAM bandwidth: {_f(None if bw is None else bw / 1e12, '{:.3g} TB/s')} ({env['dram_bandwidth_source']})",
            f"- settings: {json.dumps(result['settings'])}",
            f"- wall time: {result['wall_s']:.1f} s", ""]
    out += [f"> {n}" for n in result["notes"]]
    if result["attention"]:
        out += ["", "## Window attention: median time (speedup over the eager reference)", "",
                legend(result), ""]
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
        out += ["", "## Model", ""]
        out += [] if result["attention"] else [legend(result), ""]
        out.append(_md(*model_table(result["model"])))
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


def legend(result: dict) -> str:
    """What the time cells mean, the noise rule, and how many timed rows broke it."""
    timed = [r for r in result["attention"] + result["model"] if r.get("median_ms") is not None]
    noisy = sum(1 for r in timed if r.get("noisy"))
    tail = f" {noisy} of {len(timed)} timed rows are noisy." if noisy else ""
    return TIMING_LEGEND + tail


def console(result: dict) -> str:
    parts = []
    if result["attention"]:
        parts.append(text_table(*pivot(result["attention"])))
        fails = failures(result["attention"])
        if fails:
            parts.append("not run:\n" + "\n".join(f"  {p} - {s} in {n} cases: {why}" for p, s, why, n in fails))
    if result["model"]:
        env = result["environment"]
        parts.append(f"model on {env['device_name']}"
                     + (f" (ATen CPU capability {env.get('cpu_capability')}, {env.get('torch_num_threads')} threads)"
                        if env["device_type"] == "cpu" else ""))
        parts.append(text_table(*model_table(result["model"])))
    if parts:
        parts.append(legend(result))
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------- plot

_NICE_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)


def _group(r: dict) -> str:
    return f"{r['case']['shape']['name']}\nb{r['case']['batch']}"


def not_measured(result: dict) -> str:
    """One sentence naming the peers that ran in no case, and why ('' when every peer ran somewhere)."""
    rows = result["attention"]
    ran = {r["peer"] for r in rows if r["status"] == "ok"}
    missing = OrderedDict()
    for r in rows:
        if r["peer"] not in ran:
            missing.setdefault(status_text(r["status"]), []).append(r["peer"])
    parts = [f"{', '.join(OrderedDict.fromkeys(ps))} ({why})" for why, ps in missing.items()]
    text = "Not measured: " + "; ".join(parts) + "." if parts else ""
    if result["environment"].get("device_type") == "cpu":
        text = ("CPU run: the fused Triton and CUDA kernels were not measured (they need a CUDA GPU); the bars "
                "compare other PyTorch implementations with the eager reference on this CPU. " + text)
    return text.strip()


def _speedup_panel(ax, sel: List[dict], peers: List[str]) -> None:
    """One dtype/direction: per shape and batch a group of bars from 1.0 to each peer's speedup."""
    groups = list(OrderedDict.fromkeys(_group(r) for r in sel))
    width = min(0.35, 0.8 / max(1, len(peers)))
    for i, p in enumerate(peers):
        hits = [(j, r) for j, g in enumerate(groups) for r in sel if r["peer"] == p and _group(r) == g]
        if not hits:
            continue
        xs = [j + (i - (len(peers) - 1) / 2) * width for j, _ in hits]
        sp = [r["speedup_vs_reference"] for _, r in hits]
        # Bars start at 1.0 (as fast as the reference): up is faster, down is slower.
        bars = ax.bar(xs, [v - 1.0 for v in sp], bottom=1.0, width=width, label=p, color=f"C{i}")
        ax.bar_label(bars, labels=[f"{v:.2f}x" + ("*" if r.get("noisy") else "") for v, (_, r) in zip(sp, hits)],
                     fontsize=7, padding=2)
    ax.axhline(1.0, color="k", lw=1.0, label="_reference = 1.0")
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=7)


def plot_speedups(result: dict):
    """``(figure, axes)``: each peer's speedup over the eager reference, one panel per dtype and
    direction, bars from 1.0 on one log axis shared by all panels, each bar labelled with its value
    ('*' = noisy timing). None when no peer besides the reference ran."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    rows = [r for r in result["attention"]
            if r["status"] == "ok" and r["speedup_vs_reference"] is not None and r["peer"] != "reference"]
    if not rows:
        return None
    peers = [p for p in _peers_in(result["attention"]) if any(r["peer"] == p for r in rows)]
    panels = list(OrderedDict.fromkeys((r["case"]["dtype"], r["case"]["mode"]) for r in rows))
    n_groups = max(len({_group(r) for r in rows if (r["case"]["dtype"], r["case"]["mode"]) == pn}) for pn in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8.0, 1.1 * n_groups * max(1, len(peers)) ** 0.5 + 3),
                                                      2.0 + 3.2 * len(panels)), squeeze=False, sharey=True)
    for ax, (dt, mode) in zip(axes[:, 0], panels):
        _speedup_panel(ax, [r for r in rows if (r["case"]["dtype"], r["case"]["mode"]) == (dt, mode)], peers)
        ax.set_title(f"{dt} {mode}", fontsize=9)
        ax.set_ylabel("speedup vs eager reference")
    sp = [r["speedup_vs_reference"] for r in rows] + [1.0]
    ax0 = axes[0, 0]
    ax0.set_yscale("log")
    ax0.set_ylim(min(sp) / 1.6, max(sp) * 1.6)  # room for the labels above and below the bars
    lo, hi = ax0.get_ylim()
    ax0.yaxis.set_major_locator(FixedLocator([t for t in _NICE_TICKS if lo <= t <= hi]))
    ax0.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}x"))
    ax0.yaxis.set_minor_locator(NullLocator())
    ax0.yaxis.set_minor_formatter(NullFormatter())
    height = fig.get_figheight()
    env = result["environment"]
    title = f"{env['device_name']}: speedup over the eager reference (above 1.0 = faster)"
    if env.get("device_type") == "cpu":
        title += "\nCPU run: the fused Triton and CUDA kernels were NOT measured (they need a CUDA GPU)"
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / height, va="top")
    fig.legend(*ax0.get_legend_handles_labels(), fontsize=8, ncol=len(peers), loc="upper center",
               bbox_to_anchor=(0.5, 1 - 0.55 / height), frameon=False)
    foot = not_measured(result)
    if any(r.get("noisy") for r in rows):
        foot += " * noisy timing (max/min or IQR/median of the repeats too wide): the speedup is unreliable."
    if foot:
        fig.text(0.01, 0.1 / height, foot.strip(), fontsize=7, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, (0.6 if foot else 0) / height, 1, 1 - 0.9 / height))
    return fig, axes[:, 0]


def write_plot(result: dict, path: str) -> Optional[str]:
    """The PNG of :func:`plot_speedups`; None (nothing written) when no peer besides the reference ran."""
    import matplotlib.pyplot as plt
    made = plot_speedups(result)
    if made is None:
        return None
    fig, _ = made
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
