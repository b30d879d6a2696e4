"""pytest-benchmark suite of mat_kernels: ``python -m pytest benchmarks --benchmark-only``.

Kept out of the unit-test run (pytest.ini has ``testpaths = tests``). Files here are named
``bench_*.py``; the hook below collects them without changing the project's ``python_files``.
GPU cases are marked ``gpu`` and skipped without CUDA; a few small reference cases run on CPU.
"""
from __future__ import annotations

import pytest
import torch


def pytest_collect_file(file_path, parent):
    # Paths named on the command line are collected by pytest itself; only add the others.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # pytest.ini's addopts carry --benchmark-disable so unit tests run benchmarks once, untimed;
    # asking for --benchmark-only means timing them (pytest-benchmark rejects the pair otherwise).
    if config.getoption("benchmark_only", default=False):
        config.option.benchmark_enable = True


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (GPU cases; the CPU cases run the reference only)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)

