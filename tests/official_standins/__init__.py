"""Importable stand-ins for the official MAT modules, for the tests of ``mat_kernels.official``.

:func:`install` executes fresh copies of ``persistence.py``, ``basic_module.py`` and ``mat.py``
as ``torch_utils.persistence``, ``networks.basic_module`` and ``networks.mat`` and registers them
(and their parent packages) in ``sys.modules`` through ``monkeypatch``, so every test gets
unpatched classes and ``sys.modules`` is restored afterwards.
"""
import importlib.util
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name in sys.modules -> file here
MODULES = {"torch_utils.persistence": "persistence.py", "networks.basic_module": "basic_module.py",
           "networks.mat": "mat.py"}


def install(monkeypatch):
    """Register fresh stand-ins; returns a namespace with ``persistence``, ``basic_module``, ``mat``."""
    for pkg in ("torch_utils", "networks"):
        monkeypatch.setitem(sys.modules, pkg, types.ModuleType(pkg))
    loaded = {}
    for name, filename in MODULES.items():
        spec = importlib.util.spec_from_file_location(name, HERE / filename)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, module)
        spec.loader.exec_module(module)
        loaded[child] = module
    return types.SimpleNamespace(**loaded)
