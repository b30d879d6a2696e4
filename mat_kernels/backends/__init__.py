"""Backend registry: which implementations of the public ops exist, why one cannot run, and which
``backend="auto"`` picks.

``BACKENDS`` maps each name to the package that is the backend (:mod:`mat_kernels.reference`,
:mod:`mat_kernels.sdpa`, :mod:`mat_kernels.triton`, :mod:`mat_kernels.cuda`). What a backend
package exposes (``not_supported_reasons`` and ``ENTRY_POINTS``), the facts a call is judged by
and the limits type are stated in :mod:`mat_kernels.contract`, below every backend. A backend
that fails to import (no Triton, no compiled extension) is one unavailable backend, with the
import error as its reason, and nothing else; every reason is reported when nothing fits
(``MAT_KERNELS_LOG=debug`` logs each choice).

Adding a backend: its package, and its name here in ``BACKENDS``; once measured faster, a place
in ``preferences.PREFERENCES`` (CUDA) or ``preferences.CPU_PREFERENCES``. Adding an op: its
arguments in ``contract.SIGNATURES``, its public function in ``ops.py``, and an entry in the
``ENTRY_POINTS`` of each backend that implements it.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch

from ..contract import FUSED_ATTENTION_LIMITS, OPS, AttentionLimits, Facts  # noqa: F401  (re-exported)
from .preferences import PREFERENCES, cpu_order

log = logging.getLogger("mat_kernels")
if os.environ.get("MAT_KERNELS_LOG", "").lower() == "debug":
    logging.basicConfig()
    log.setLevel(logging.DEBUG)

# name -> package. ``auto`` order comes from ``auto_order``, not from here.
BACKENDS: Dict[str, str] = {
    "reference": "mat_kernels.reference",
    "sdpa": "mat_kernels.sdpa",
    "triton": "mat_kernels.triton",
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


def load(name: str) -> None:
    """Import backend ``name`` now (outside any torch.compile'd region), if it imports at all;
    whether it can run a call is still decided per call."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {name!r}")
    _load(name)


def not_supported_reasons(name: str, op: str, facts: Facts) -> List[str]:
    """Why backend ``name`` cannot run ``op`` for ``facts`` (empty: it can)."""
    module, err = _load(name)
    if module is None:
        return [err]
    if op not in module.ENTRY_POINTS:
        return [f"{name} has no implementation of {op}"]
    return list(module.not_supported_reasons(op, facts))


def auto_order(op: str, facts: Facts) -> List[str]:
    """The order ``backend="auto"`` tries, always ending with the reference:

    * CUDA tensors: the fused backends ``preferences.PREFERENCES`` lists for ``op`` (from
      recorded GPU measurements), then, for window attention, ``sdpa`` (PyTorch's fused
      attention: what runs when the Triton kernels cannot, e.g. no Triton or an unsupported GPU);
    * CPU tensors: what ``preferences.cpu_order`` gives for this machine's CPU (measured with
      ``mat-bench`` on that CPU; see there for a CPU never measured);
    * any other device: the reference alone.
    """
    device = facts["device"].type
    if device == "cuda":
        order = list(PREFERENCES.get(op, []))
        if op == "window_attention" and "sdpa" not in order:
            order.append("sdpa")
        return order + ["reference"]
    if device == "cpu":
        return list(CPU_ORDER.get(op, ())) + ["reference"]
    return ["reference"]


class NoBackendError(RuntimeError):
    """No candidate backend can run a call: ``reasons`` maps each tried backend to why not,
    ``others`` each backend that was not tried to why it could not run the call either (an
    empty list: it could; e.g. ``reference`` when ``triton`` was forced)."""

    def __init__(self, op: str, backend: str, facts: Facts, reasons: Dict[str, List[str]],
                 others: Dict[str, List[str]]):
        self.op, self.backend, self.facts, self.reasons, self.others = op, backend, facts, reasons, others
        lines = [f"no backend can run {op} for {describe(facts)} (backend={backend!r}):"]
        lines += [f"  {n}: {'; '.join(r)}" for n, r in reasons.items()]
        if others:
            lines.append(f"other backends (not tried with backend={backend!r}):")
            lines += [f"  {n}: {'; '.join(r) if r else 'can run this call'}" for n, r in others.items()]
        super().__init__("\n".join(lines))

    def summary(self) -> str:
        """The same facts on one line (for command-line errors)."""
        tried = "; ".join(f"{n}: {', '.join(r)}" for n, r in self.reasons.items())
        text = f"backend {self.backend!r} cannot run {self.op} here ({tried})"
        able = [n for n, r in self.others.items() if not r]
        if able:
            text += f"; {' and '.join(able)} can run it"
        return text


def choose(op: str, backend: str, facts: Facts) -> Callable:
    """The entry point of ``op`` for ``backend`` ("auto" or a name in ``BACKENDS``); raises
    :class:`NoBackendError` (a RuntimeError) when none can run, giving every tried backend's
    reasons and, for each backend not tried, whether it could run the call or why not."""
    if backend not in NAMES:
        raise ValueError(f"backend must be one of {NAMES}, got {backend!r}")
    candidates = auto_order(op, facts) if backend == "auto" else [backend]
    reasons = {}
    for name in candidates:
        why = not_supported_reasons(name, op, facts)
        if not why:
            module, _ = _load(name)
            if not torch.compiler.is_compiling():  # logging is a graph break under dynamo
                log.debug("%s: backend=%s chose %s for %s", op, backend, name, describe(facts))
            return module.ENTRY_POINTS[op]
        reasons[name] = why
        if not torch.compiler.is_compiling():
            log.debug("%s: %s cannot run: %s", op, name, "; ".join(why))
    others = {name: not_supported_reasons(name, op, facts) for name in BACKENDS if name not in reasons}
    raise NoBackendError(op, backend, facts, reasons, others)


def describe(facts: Facts) -> str:
    return ", ".join(f"{k}={v}" for k, v in facts.items())


# This machine's CPU and the order auto takes on its tensors, decided once at import (so that
# torch.compile traces a constant).
CPU_ORDER: Dict[str, Tuple[str, ...]] = cpu_order()

# Import the backends ``auto`` can pick now rather than inside the first call: an import inside a
# torch.compile'd region is a graph break. Triton and the extension are only worth importing
# where CUDA is; elsewhere they are imported the first time they are asked about.
_load("reference")
_load("sdpa")
if torch.cuda.is_available():
    for _name in ("triton", "cuda"):
        _load(_name)
