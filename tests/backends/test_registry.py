"""The registry (mat_kernels/backends/__init__.py): names, loading, the errors of a forced backend,
and what every backend package states (mat_kernels/contract.py)."""
from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
import torch

import mat_kernels
from mat_kernels import backends, contract
from tests.test_errors import _call, _good

PACKAGE = Path(mat_kernels.__file__).parent


def test_unknown_backend_named():
    with pytest.raises(ValueError, match="backend must be one of"):
        _call(mat_kernels.window_attention, dict(_good(), backend="fast"))


def test_backend_load_and_set_backend_name_a_bad_backend():
    from mat_kernels import backends
    from mat_kernels.models import set_backend
    with pytest.raises(ValueError, match="backend must be one of .*'fast'"):
        backends.load("fast")
    with pytest.raises(ValueError, match="backend must be one of .*'fast'"):
        set_backend(torch.nn.Linear(2, 2), "fast")


def test_forced_backend_that_cannot_run_lists_reasons():
    # The CUDA extension is absent on CPU machines: the error lists why.
    with pytest.raises(RuntimeError, match="no backend can run window_attention.*cuda"):
        _call(mat_kernels.window_attention, dict(_good(), backend="cuda"))


def test_forced_backend_error_also_says_which_backends_could_run():
    # As the README says: the forced backend's reasons, then every other backend's status.
    from mat_kernels import backends
    with pytest.raises(backends.NoBackendError) as err:
        mat_kernels.partial_conv_mask_update(torch.ones(1, 1, 8, 8), kernel_size=3, backend="cuda")
    msg = str(err.value)
    assert "  cuda: " in msg and "needs CUDA tensors, got cpu" in msg
    assert "other backends (not tried with backend='cuda'):" in msg
    assert "  reference: can run this call" in msg and "  triton: " in msg
    assert err.value.reasons.keys() == {"cuda"} and err.value.others["reference"] == []
    assert set(err.value.others) == {"reference", "sdpa", "triton"} and err.value.others["sdpa"] == []
    one = err.value.summary()
    assert "\n" not in one and one.startswith("backend 'cuda' cannot run partial_conv_mask_update here")
    assert "reference" in one and ("triton" in one) == (err.value.others["triton"] == [])
    with pytest.raises(RuntimeError):  # still a RuntimeError for existing callers
        mat_kernels.bias_act(torch.randn(2, 3), torch.randn(3), backend="cuda")


def test_forced_sdpa_that_cannot_run_gives_its_reasons():
    from mat_kernels import backends
    q = torch.randn(1, 8, 8, 4, dtype=torch.float64)
    with pytest.raises(backends.NoBackendError) as err:
        mat_kernels.window_attention(q, q, q, window_size=4, num_heads=2, backend="sdpa")
    assert err.value.reasons == {"sdpa": ["dtype must be one of (torch.float16, torch.bfloat16, torch.float32), "
                                          "got torch.float64"]}
    assert err.value.others["reference"] == []
    assert "  sdpa: dtype must be one of" in str(err.value)
    facts = dict(device=torch.device("meta"), dtype=torch.float32, head_dim=2, window_size=4, mask_dtype=None)
    assert backends.not_supported_reasons("sdpa", "window_attention", facts) == ["needs CPU or CUDA tensors, got meta"]


def _loaded():
    out = {}
    for name in backends.BACKENDS:
        module, err = backends._load(name)
        if module is not None:
            out[name] = module
    return out


def test_every_backend_package_states_its_entries_in_the_contracts_terms():
    """Each importable backend package has ``not_supported_reasons`` and ``ENTRY_POINTS`` for ops
    of the contract, taking the contract's positional arguments."""
    loaded = _loaded()
    assert {"reference", "sdpa"} <= set(loaded)
    for name, module in loaded.items():
        assert callable(module.not_supported_reasons), name
        assert set(module.ENTRY_POINTS) <= set(contract.OPS), name
        for op, fn in module.ENTRY_POINTS.items():
            schema = getattr(getattr(fn, "_opoverload", None), "_schema", None)  # a torch.library op
            params = [a.name for a in schema.arguments] if schema else list(inspect.signature(fn).parameters)
            assert len(params) == len(contract.SIGNATURES[op]), (name, op, params)
    assert set(loaded["reference"].ENTRY_POINTS) == set(contract.OPS)


def _imports(path: Path):
    """Every mat_kernels module a file imports (absolute names), at any level of the file."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    here = parts[:-1]  # the package a relative import starts from
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names)


@pytest.mark.parametrize("package", ["contract", "reference", "sdpa", "triton", "cuda"])
def test_backends_and_the_contract_never_import_the_registry(package):
    """The layers point one way: registry -> backend packages -> contract."""
    path = PACKAGE / package
    files = [path.with_suffix(".py")] if package == "contract" else sorted(path.rglob("*.py"))
    for f in files:
        bad = [m for m in _imports(f) if m == "mat_kernels.backends" or m.startswith("mat_kernels.backends.")]
        assert not bad, (f, bad)
    if package == "contract":
        assert not [m for m in _imports(files[0]) if m.startswith("mat_kernels")]
