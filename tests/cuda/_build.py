"""Shared helpers of the CUDA tests: where the sources are, and the compiler requirement rule."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"
ARCHES = ("sm_80", "sm_90")  # A100, H100
KERNEL_FILES = sorted(p.name for p in CSRC.glob("*.cu"))
GLUE_FILES = sorted(p.name for p in CSRC.glob("*.cpp"))


def require_tool(name: str) -> str:
    """Path of a compiler; on CI (env CI set) a missing one is a failure, elsewhere a skip."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not on PATH; CI must provide it")
        pytest.skip(f"{name} is not on PATH")
    return path


def schemas_from_ops_cpp():
    """The schema strings of csrc/ops.cpp's m.def(...) calls (adjacent C++ literals joined)."""
    import re
    text = (CSRC / "ops.cpp").read_text()
    schemas = []
    for call in re.findall(r"m\.def\((.*?)\);", text, flags=re.S):
        schemas.append("".join(re.findall(r'"((?:[^"\\]|\\.)*)"', call)))
    return schemas


def cuda_include_dir() -> Path:
    """The CUDA toolkit's include directory (for cuda_fp16.h etc. in host builds)."""
    nvcc = Path(require_tool("nvcc"))
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), nvcc.resolve().parents[1],
                  nvcc.parents[1] / "cuda", "/usr/local/cuda"]
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_fp16.h").exists():
            return Path(c) / "include"
    pytest.fail(f"nvcc found at {nvcc} but no CUDA include directory with cuda_fp16.h (set CUDA_HOME)")
