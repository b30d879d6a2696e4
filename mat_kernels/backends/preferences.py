"""The order in which ``backend="auto"`` tries the fused backends on CUDA tensors, per op.

Only measurements decide this table: ``python -m mat_kernels.bench.tune RESULTS.json`` proposes it
from a GPU benchmark result (the fastest backend per op that passed its GPU tests), and the
result files it came from are committed under ``benchmarks/results/``. The CUDA extension has no
recorded GPU run, so it is not listed; the Triton kernels are listed because they are the
package's primary fused path, verified against the reference on every CI run.
"""
from __future__ import annotations

PREFERENCES = {
    "window_attention": ["triton"],
    "window_mask_update": ["triton"],
    "partial_conv_mask_update": ["triton"],
    "bias_act": ["triton"],
}
