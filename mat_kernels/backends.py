"""Backend registry: which implementations exist, why one cannot run, and which ``auto`` picks.

A backend is a module that exposes the public ops (``window_attention``,
``window_mask_update``, ``partial_conv_mask_update``) with the reference's signatures, and
``not_supported_reasons(op, facts) -> list[str]`` where ``facts`` is a dict with at least
``device`` and ``dtype`` (and ``head_dim``/``window_size`` for attention). An empty list means it
can run. Modules are imported lazily, so a missing Triton or compiled extension removes one
backend and nothing else.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Callable, Dict, List

import torch

log = logging.getLogger("mat_kernels")
if os.environ.get("MAT_KERNELS_LOG", "").lower() == "debug":
    logging.basicConfig()
    log.setLevel(logging.DEBUG)

# name -> module path. Order is irrelevant here; ``auto`` uses ``auto_order``.
BACKENDS: Dict[str, str] = {
    "reference": "mat_kernels.reference._backend",
    "triton": "mat_kernels.triton._backend",
    "cuda": "mat_kernels.cuda",
}
NAMES = ("auto",) + tuple(BACKENDS)


def _load(name: str):
    path = BACKENDS[name]
    if path in sys.modules:  # the common case, and the only one torch.compile can trace
        return sys.modules[path], None
    try:
        return importlib.import_module(path), None
    except Exception as exc:  # ImportError, or a broken optional dependency
        return None, f"{name} backend failed to import: {type(exc).__name__}: {exc}"


def not_supported_reasons(name: str, op: str, facts: dict) -> List[str]:
    module, err = _load(name)
    if module is None:
        return [err]
    return list(module.not_supported_reasons(op, facts))


def auto_order(op: str, facts: dict) -> List[str]:
    """Preference order for ``backend="auto"``: the reference on CPU; on CUDA the fused
    backends in the order the recorded measurements rank them (see ``mat_kernels/_tuned.py``),
    then the reference."""
    if facts["device"].type != "cuda":
        return ["reference"]
    from . import _tuned
    return _tuned.preferred_backends(op, facts) + ["reference"]


def choose(op: str, backend: str, facts: dict) -> Callable:
    """Return the implementation of ``op`` for ``backend`` ("auto" or a name in ``BACKENDS``)."""
    if backend not in NAMES:
        raise ValueError(f"backend must be one of {NAMES}, got {backend!r}")
    candidates = auto_order(op, facts) if backend == "auto" else [backend]
    reasons = {}
    for name in candidates:
        why = not_supported_reasons(name, op, facts)
        if not why:
            module, _ = _load(name)
            if not torch.compiler.is_compiling():  # logging is a graph break under dynamo
                log.debug("%s: backend=%s chose %s for %s", op, backend, name, _fmt(facts))
            return getattr(module, op)
        reasons[name] = why
        if not torch.compiler.is_compiling():
            log.debug("%s: %s cannot run: %s", op, name, "; ".join(why))
    lines = "\n".join(f"  {n}: {'; '.join(r)}" for n, r in reasons.items())
    raise RuntimeError(f"no backend can run {op} for {_fmt(facts)} (backend={backend!r}):\n{lines}")


def attention_limit_reasons(facts: dict, *, dtypes, max_head_dim: int, max_window_tokens: int) -> List[str]:
    """The shape and dtype limits a fused attention backend states about ``facts``."""
    reasons = []
    if facts["dtype"] not in dtypes:
        reasons.append(f"dtype must be one of {dtypes}, got {facts['dtype']}")
    if facts["head_dim"] > max_head_dim:
        reasons.append(f"head_dim must be <= {max_head_dim}, got {facts['head_dim']}")
    if facts["window_size"] ** 2 > max_window_tokens:
        reasons.append(f"window_size**2 must be <= {max_window_tokens}, got {facts['window_size'] ** 2}")
    return reasons


def available(op: str, facts: dict) -> Dict[str, List[str]]:
    """Every backend with its reasons (empty when it can run), for diagnostics and tests."""
    return {name: not_supported_reasons(name, op, facts) for name in BACKENDS}


def _fmt(facts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in facts.items())
