"""Import paths that moved keep working for one release, with a DeprecationWarning naming the new one."""
from __future__ import annotations

import importlib
import sys

import pytest

MOVED = [("mat_kernels.masks", "mat_kernels.data.holes", "RandomMask"),
         ("mat_kernels.images", "mat_kernels.data.images", "read_image"),
         ("mat_kernels.losses", "mat_kernels.train.losses", "TwoStageLoss"),
         ("mat_kernels.metrics", "mat_kernels.train.metrics", "psnr")]


@pytest.mark.parametrize("old,new,name", MOVED, ids=[m[0] for m in MOVED])
def test_old_module_path_warns_and_forwards(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_old_cuda_backend_functions_warn_and_forward():
    import mat_kernels.cuda
    from mat_kernels.backends import cuda as backend
    with pytest.warns(DeprecationWarning, match=r"mat_kernels\.backends\.cuda"):
        fn = mat_kernels.cuda.not_supported_reasons
    assert fn is backend.not_supported_reasons
