"""Shared helpers of the CUDA tests: where the sources are, and the compiler requirement rule."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"


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
