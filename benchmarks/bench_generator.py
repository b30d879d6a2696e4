"""MAT model throughput with pytest-benchmark: generator inference and a G+D training step.

CUDA: 512x512, batch 1 and 8, reference / auto (fused) / torch.compile paths. CPU (only with
MAT_KERNELS_BENCH_CPU_MODEL=1: one call takes tens of seconds there): generator inference at
256x256, batch 1, reference path. Skipped with the reason when the model does not import.
"""
import os

import pytest
import torch

from mat_kernels.bench import model as M
from mat_kernels.bench.timing import synchronized

PARAMS = ([pytest.param("cuda", what, path, b, 512, id=f"cuda-{what}-{path}-r512-b{b}", marks=pytest.mark.gpu)
           for what in M.WHATS for b in (1, 8) for path in M.MODEL_PATHS]
          + [pytest.param("cpu", "generator_forward", "reference", 1, 256, id="cpu-generator_forward-reference-r256-b1",
                          marks=pytest.mark.skipif(os.environ.get("MAT_KERNELS_BENCH_CPU_MODEL") != "1",
                                                   reason="CPU model benchmark is opt-in: set "
                                                          "MAT_KERNELS_BENCH_CPU_MODEL=1 (tens of seconds a call)"))])


@pytest.mark.parametrize("device, what, path, batch, res", PARAMS)
def test_model(benchmark, device, what, path, batch, res):
    device = torch.device(device)
    try:
        G, D = M.load_networks()
    except M.ModelUnavailable as exc:
        pytest.skip(str(exc))
    if path == "compile":
        torch._dynamo.reset()
    call = M.build_call(G, D, what, path, batch, res, device)
    call()  # compile and warm up outside the timing
    benchmark.group = f"{what}-r{res}-b{batch}"
    benchmark.extra_info.update(images=batch)
    gpu = device.type == "cuda"
    benchmark.pedantic(synchronized(call, device), rounds=10 if gpu else 1, iterations=1, warmup_rounds=1 if gpu else 0)
