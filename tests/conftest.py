"""Shared fixtures: seeds, the official recorded cases and the state-dict manifests, GPU skips."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter. The variable must be set
# before any kernel module is imported (triton.jit reads it at decoration time), hence here.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_data_dir() -> Path:
    """``shared/data`` beside the repository (CI lays a copy there), or MAT_KERNELS_SHARED_DATA."""
    env = os.environ.get("MAT_KERNELS_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def official_cases():
    """The recorded official outputs: the full file from the shared data folder when it is there,
    else the subset shipped in tests/fixtures (every case but the largest Swin block; each case keeps
    its position in the full file as ``full_index``)."""
    path = shared_data_dir() / "official_cases.pt"
    if not path.exists():
        # On CI the shared folder is always present: a missing file is a failure, not a fallback.
        if os.environ.get("CI"):
            pytest.fail(f"official cases not found at {path}")
        path = FIXTURES / "official_cases_subset.pt"
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def manifest512():
    return json.loads((FIXTURES / "mat512_state_dict_manifest.json").read_text())


@pytest.fixture(scope="session")
def manifest256():
    return json.loads((FIXTURES / "mat256_state_dict_manifest.json").read_text())


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    run_ext = os.environ.get("MAT_KERNELS_EXTENDED_TESTS") == "1"
    skip_ext = pytest.mark.skip(reason="long sweep: set MAT_KERNELS_EXTENDED_TESTS=1")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "extended" in item.keywords and not run_ext:
            item.add_marker(skip_ext)


@pytest.fixture(scope="session")
def cuda_emulation(tmp_path_factory):
    """The kernels of csrc/*.cu built once per session as host C++ that runs on the CPU
    (tests/cuda/_emulation.py); skipped, or failed on CI, without g++ and the CUDA headers."""
    from tests.cuda._emulation import build
    return build(tmp_path_factory.mktemp("cuda_emulation"))
