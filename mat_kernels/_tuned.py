"""Which fused backend ``auto`` prefers on CUDA, from measurements recorded in the repo.

``benchmarks/results/*.json`` are raw benchmark outputs; what the chooser needs is distilled
into ``PREFERENCES`` below, keyed by op. A backend appears here only after its GPU test suite
passed and the benchmark showed it faster. The CUDA extension has no recorded GPU run yet, so
``auto`` never picks it.
"""
from __future__ import annotations

from typing import List

# op -> backends in order of preference on CUDA tensors.
PREFERENCES = {
    "window_attention": ["triton"],
    "window_mask_update": ["triton"],
    "partial_conv_mask_update": ["triton"],
}


def preferred_backends(op: str, facts: dict) -> List[str]:
    return list(PREFERENCES.get(op, []))
