"""Where a benchmark ran: device, driver, versions, commit, and the device's DRAM bandwidth."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from typing import Optional, Tuple

import torch

# Peak DRAM bandwidth in bytes/s by device name, most specific pattern first (vendor data sheets).
# Matched case-insensitively against torch.cuda.get_device_name().
DRAM_BANDWIDTH = [
    (r"GH200", 4.0e12),
    (r"H200", 4.8e12),
    (r"H100.*PCIe", 2.0e12),
    (r"H100.*NVL", 3.9e12),
    (r"H100", 3.35e12),            # SXM5, HBM3 ("NVIDIA H100 80GB HBM3")
    (r"H800.*PCIe", 2.0e12),
    (r"H800", 3.35e12),
    (r"B200", 8.0e12),
    (r"A100.*80GB.*PCIe", 1.935e12),
    (r"A100.*PCIe", 1.555e12),     # 40GB PCIe
    (r"A100.*80GB", 2.039e12),     # SXM4 80GB
    (r"A100", 1.555e12),           # SXM4 40GB
    (r"A800.*80GB", 2.039e12),
    (r"L40S", 0.864e12),
    (r"L40", 0.864e12),
    (r"A10G", 0.6e12),
    (r"A10\b", 0.6e12),
    (r"L4\b", 0.3e12),
    (r"A6000 Ada|RTX 6000 Ada", 0.96e12),
    (r"A6000", 0.768e12),
    (r"RTX 4090", 1.008e12),
    (r"RTX 3090", 0.936e12),
    (r"V100", 0.9e12),
    (r"T4\b", 0.32e12),
]


def dram_bandwidth(device_name: str, override_tbps: Optional[float] = None) -> Tuple[Optional[float], str]:
    """(bytes/s, where the number came from); (None, why) when the device is not in the table."""
    if override_tbps is not None:
        if override_tbps <= 0:
            raise ValueError(f"--dram-bandwidth must be positive (TB/s), got {override_tbps}")
        return override_tbps * 1e12, "command line (--dram-bandwidth)"
    for pattern, bw in DRAM_BANDWIDTH:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return bw, f"table entry {pattern!r}"
    return None, f"{device_name!r} is not in the bandwidth table (pass --dram-bandwidth TB/s)"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what platform knows."""
    from ..backends.preferences import cpu_model_name
    return cpu_model_name()


def _run(cmd) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip() or None
    except Exception:
        return None


def git_commit(cwd: Optional[str] = None) -> Tuple[Optional[str], Optional[bool]]:
    """The commit of the package's checkout (or cwd), and whether the tree had local changes."""
    here = cwd or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sha = _run(["git", "-C", here, "rev-parse", "HEAD"])
    if sha is None:
        return None, None
    status = _run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"])
    return sha, bool(status)


def environment(device: torch.device, bandwidth_override_tbps: Optional[float] = None) -> dict:
    """Everything needed to read a result file later: what ran where, and when."""
    try:
        import triton
        triton_version = triton.__version__
    except Exception as exc:  # triton is optional off Linux
        triton_version = f"not importable: {type(exc).__name__}"
    sha, dirty = git_commit()
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device_type": device.type,
        "device_name": None,
        "compute_capability": None,
        "driver_version": None,
        "cuda_version": torch.version.cuda,
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "python_version": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_name": cpu_name(),
        # The ATen kernel build the CPU ops dispatch to (DEFAULT, AVX2, AVX512, ...): CPU timings
        # and the CPU preferences of backend "auto" are per (cpu_name, cpu_capability).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_num_threads": torch.get_num_threads(),
        "git_commit": sha,
        "git_dirty": dirty,
        "dram_bandwidth_bytes_per_s": None,
        "dram_bandwidth_source": None,
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        info["device_name"] = name
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        smi = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        info["driver_version"] = smi.splitlines()[0].strip() if smi else None
        info["dram_bandwidth_bytes_per_s"], info["dram_bandwidth_source"] = dram_bandwidth(name, bandwidth_override_tbps)
    else:
        info["device_name"] = cpu_name()
        if bandwidth_override_tbps is not None:
            info["dram_bandwidth_bytes_per_s"], info["dram_bandwidth_source"] = dram_bandwidth("", bandwidth_override_tbps)
        else:
            info["dram_bandwidth_source"] = "unknown for CPUs (pass --dram-bandwidth TB/s)"
    return info


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"
