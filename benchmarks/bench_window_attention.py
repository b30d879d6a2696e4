"""MAT's window attention, every implementation, with pytest-benchmark.

The same cases as ``mat-bench`` (9 shapes x batch 1, 8 x fp32, bf16 x fwd,
fwd+bwd x 6 peers) on CUDA, and the reference and SDPA peers at small grids on CPU. A peer that
cannot run a case is skipped with its reason. Ideal bytes and FLOPs are in ``extra_info``.
"""
import pytest
import torch

from mat_kernels.bench import cases as C
from mat_kernels.bench.peers import PEER_NAMES, PEERS
from mat_kernels.bench.suite import make_call
from mat_kernels.bench.timing import synchronized

GPU_CASES = C.attention_cases(C.mat_attention_shapes(512), [1, 8], ["fp32", "bf16"], C.MODES)
CPU_CASES = C.attention_cases([C.Shape("small", 16, 8, 4, True), C.Shape("small", 16, 16, 0, False)],
                              [1], ["fp32"], C.MODES)

PARAMS = ([pytest.param("cuda", c, p, id=f"cuda-{c.id}-{p}", marks=pytest.mark.gpu)
           for c in GPU_CASES for p in PEER_NAMES]
          + [pytest.param("cpu", c, p, id=f"cpu-{c.id}-{p}") for c in CPU_CASES for p in ("reference", "sdpa")])


@pytest.mark.parametrize("device, case, peer", PARAMS)
def test_window_attention(benchmark, device, case, peer):
    device, peer = torch.device(device), PEERS[peer]
    why = peer.reasons(case, device)
    if why:
        pytest.skip("; ".join(why))
    q, k, v, mask = C.make_inputs(case, device)
    grad_out = torch.randn_like(q) if case.mode == "fwdbwd" else None
    if peer.compiles:
        torch._dynamo.reset()
    call = make_call(case, peer.build(case, device), q, k, v, mask, grad_out)
    call()  # compile outside the timing
    benchmark.group = case.id
    benchmark.extra_info.update(peer=peer.name, ideal_bytes=C.ideal_bytes(case), flops=C.flop_count(case),
                                shape=case.shape.name, batch=case.batch, dtype=case.dtype, mode=case.mode)
    benchmark(synchronized(call, device))
