"""Session fixtures of the CUDA tests: compiled objects shared by the compile and link tests."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ._build import ARCHES, CSRC, GLUE_FILES, KERNEL_FILES, require_tool


@pytest.fixture(scope="session")
def nvcc_results(tmp_path_factory):
    """Every csrc/*.cu compiled for every arch (2 parallel workers):
    {(file, arch): (returncode, stderr, seconds, object path)}."""
    nvcc = require_tool("nvcc")
    out_dir = tmp_path_factory.mktemp("nvcc")

    def compile_one(job):
        name, arch = job
        obj = out_dir / f"{Path(name).stem}_{arch}.o"
        # -fPIC so test_link.py can put the objects into a shared library, as setup.py's build does.
        cmd = [nvcc, "-c", f"-arch={arch}", "-std=c++17", "-O2", f"-I{CSRC}", "-Werror", "all-warnings",
               "-Xcompiler", "-fPIC", str(CSRC / name), "-o", str(obj)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        return job, proc.returncode, proc.stderr, time.perf_counter() - t0, obj

    jobs = [(name, arch) for arch in ARCHES for name in KERNEL_FILES]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = {job: (rc, err, dt, obj) for job, rc, err, dt, obj in pool.map(compile_one, jobs)}
    per_file = ", ".join(f"{n}@{a} {results[(n, a)][2]:.0f}s" for n, a in jobs)
    print(f"\nnvcc: {len(jobs)} objects in {time.perf_counter() - t0:.0f}s wall on 2 workers ({per_file})",
          file=sys.stderr)
    return results


@pytest.fixture(scope="session")
def glue_object(tmp_path_factory):
    """All csrc/*.cpp compiled as one translation unit (torch headers parsed once) against the
    installed torch: (returncode, stderr, object path)."""
    gxx = require_tool("g++")
    from torch.utils.cpp_extension import include_paths
    out_dir = tmp_path_factory.mktemp("glue")
    tu = out_dir / "all_glue.cpp"
    tu.write_text("".join(f'#include "{CSRC / name}"\n' for name in GLUE_FILES))
    obj = out_dir / "all_glue.o"
    # torch >= 2.10 headers need C++20 (BuildExtension passes it too).
    cmd = [gxx, "-std=c++20", "-O0", "-fPIC", "-Wall", "-c", f"-I{CSRC}", f"-I{sysconfig.get_paths()['include']}"]
    cmd += [f"-I{p}" for p in include_paths()] + [str(tu), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stderr, obj
