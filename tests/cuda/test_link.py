"""The whole extension links and loads without a GPU.

The sm_80 kernel objects and the glue (from the compile fixtures) are linked into a shared
library like setup.py's build, which a fresh Python loads as ``mat_kernels._C``. Checked there:
the TORCH_LIBRARY schemas register, ``mat_kernels.cuda.library`` accepts the module and adds fake
kernels (ops on meta tensors give the right shapes and dtypes), the ops have a CUDA kernel and no
CPU one, and the backend's only remaining reason on CPU tensors is the device. Running the
kernels needs a GPU (test_gpu.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ._build import KERNEL_FILES, REPO, cuda_include_dir, require_tool, schemas_from_ops_cpp

CHECK = textwrap.dedent('''
    import importlib.util, json, sys
    import torch
    spec = importlib.util.spec_from_file_location("mat_kernels._C", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["mat_kernels._C"] = mod
    from mat_kernels import cuda
    from mat_kernels.cuda import library as _ext
    res = {"load_error": _ext.LOAD_ERROR}
    o = _ext.ops()
    res["schemas"] = [str(getattr(o, n).default._schema) for n in _ext.OP_NAMES]
    q = torch.empty(2, 8, 16, 12, device="meta")
    m = torch.empty(2, 8, 16, device="meta", dtype=torch.bool)
    out, lse, nm = o.window_attention_fwd_cuda(q, q, q, m, 4, 2, 3, 0.5)
    res["fwd"] = [list(t.shape) + [str(t.dtype)] for t in (out, lse, nm)]
    res["fwd_nomask"] = list(o.window_attention_fwd_cuda(q, q, q, None, 4, 0, 3, 0.5)[2].shape)
    res["bwd"] = [list(t.shape) for t in o.window_attention_bwd_cuda(q, q, q, q, m, q, lse, 4, 2, 3, 0.5)]
    res["wmu"] = list(o.window_mask_update_cuda(m, 4, 1).shape)
    img = torch.empty(2, 1, 9, 7, device="meta", dtype=torch.float16)
    res["pcmu"] = [list(t.shape) + [str(t.dtype)] for t in o.partial_conv_mask_update_cuda(img, 3, 2)]
    has = lambda n, k: torch._C._dispatch_has_kernel_for_dispatch_key(f"mat_kernels::{n}", k)
    res["cuda_kernels"] = [has(n, "CUDA") for n in _ext.OP_NAMES]
    res["cpu_kernels"] = [has(n, "CPU") for n in _ext.OP_NAMES]
    res["autograd_kernel"] = has("window_attention_fwd_cuda", "Autograd")
    # The autograd formula end to end on meta tensors: forward op, then the backward op's fake.
    qg = torch.empty(2, 8, 16, 12, device="meta", requires_grad=True)
    grad = torch.autograd.grad(o.window_attention_fwd_cuda(qg, qg, qg, m, 4, 2, 3, 0.5)[0].sum(), qg)[0]
    res["grad"] = list(grad.shape)
    facts = dict(device=torch.device("cpu"), dtype=torch.float32, head_dim=4, window_size=4)
    res["reasons_cpu"] = cuda.not_supported_reasons("window_attention", facts)
    print(json.dumps(res))
''')


@pytest.fixture(scope="module")
def linked_extension(nvcc_results, glue_object, tmp_path_factory):
    gxx = require_tool("g++")
    rc, err, glue = glue_object
    assert rc == 0, err[-3000:]
    objs = []
    for name in KERNEL_FILES:
        rc, err, _dt, obj = nvcc_results[(name, "sm_80")]
        assert rc == 0, err
        objs.append(str(obj))
    import torch
    torch_lib = Path(torch.__file__).parent / "lib"
    cuda_root = cuda_include_dir().parent
    lib_dirs = [d for d in (cuda_root / "lib64", cuda_root / "lib", cuda_root / "targets/x86_64-linux/lib") if d.is_dir()]
    static = next((d for d in lib_dirs if (d / "libcudart_static.a").exists()), None)
    shared = next((d for d in lib_dirs if (d / "libcudart.so").exists()), None)
    if static is not None:
        cudart = [f"-L{static}", "-lcudart_static", "-lrt", "-ldl", "-lpthread"]
    elif shared is not None:
        cudart = [f"-L{shared}", "-lcudart", f"-Wl,-rpath,{shared}"]
    else:
        pytest.fail(f"no libcudart (static or shared) under {cuda_root}")
    so = tmp_path_factory.mktemp("ext") / "_C.so"
    subprocess.run([gxx, "-shared", "-o", str(so), str(glue), *objs, f"-L{torch_lib}", "-lc10", "-ltorch_cpu",
                    "-ltorch", f"-Wl,-rpath,{torch_lib}", *cudart], check=True)
    proc = subprocess.run([sys.executable, "-c", CHECK, str(so)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_extension_loads_and_registers_schemas(linked_extension):
    assert linked_extension["load_error"] is None
    assert linked_extension["schemas"] == [f"mat_kernels::{s}" for s in schemas_from_ops_cpp()]


def test_fake_kernels_on_meta_tensors(linked_extension):
    r = linked_extension
    assert r["fwd"] == [[2, 8, 16, 12, "torch.float32"], [2, 3, 8, 16, "torch.float32"], [2, 8, 16, "torch.bool"]]
    assert r["fwd_nomask"] == [0]
    assert r["bwd"] == [[2, 8, 16, 12]] * 3
    assert r["wmu"] == [2, 8, 16]
    assert r["pcmu"] == [[2, 1, 5, 4, "torch.float16"]] * 2


def test_autograd_registered_on_the_compiled_op(linked_extension):
    assert linked_extension["autograd_kernel"]
    assert linked_extension["grad"] == [2, 8, 16, 12]


def test_cuda_kernels_only(linked_extension):
    assert all(linked_extension["cuda_kernels"]) and not any(linked_extension["cpu_kernels"])
    assert linked_extension["reasons_cpu"] == ["needs CUDA tensors, got cpu"]
