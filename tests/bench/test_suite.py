"""Peers compute MAT's attention, failures are recorded with their reason, numbers are derived right."""
import pytest
import torch

from mat_kernels import reference as ref
from mat_kernels.bench import cases as C
from mat_kernels.bench import peers as P
from mat_kernels.bench import suite as S
from mat_kernels.testing import assert_close, assert_mask_equal

CPU = torch.device("cpu")
# Small grids of MAT's geometry: shifted masked windows, and one window covering the grid.
SMALL = [C.Shape("t0", 16, 8, 4, True), C.Shape("t2", 16, 16, 0, False), C.Shape("t1", 32, 16, 8, True)]


def _case(shape, mode="fwdbwd", heads=2, channels=24):
    return C.AttentionCase(shape, 2, "fp32", mode, channels=channels, heads=heads)


def _check_against_reference(build, case, device, grads=True):
    q, k, v, m = C.make_inputs(case, device)
    s = case.shape
    q0, k0, v0 = (t.clone().requires_grad_(grads) for t in (q, k, v))
    q1, k1, v1 = (t.clone().requires_grad_(grads) for t in (q, k, v))
    out, new = build(case, device)(q0, k0, v0, m)
    e_out, e_new = ref.window_attention(q1, k1, v1, m, window_size=s.window, shift_size=s.shift, num_heads=case.heads)
    assert_close(out, e_out, "window_attention", "fwd")
    assert_mask_equal(new, e_new)
    if not grads:
        return
    g = torch.randn_like(out)
    for a, e, name in zip(torch.autograd.grad(out, (q0, k0, v0), g), torch.autograd.grad(e_out, (q1, k1, v1), g),
                          "qkv"):
        assert_close(a, e, "window_attention", "bwd", name=f"d{name}")


@pytest.mark.parametrize("shape", SMALL, ids=lambda s: s.name)
def test_sdpa_peer_matches_reference_with_grads(shape):
    _check_against_reference(P.build_sdpa, _case(shape), CPU)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("shape", SMALL, ids=lambda s: s.name)
def test_flex_peer_matches_reference_forward(shape):
    # head_dim 12 is padded to 16. FlexAttention has no backward on CPU; the GPU test covers it.
    _check_against_reference(lambda c, d: P.build_flex(c, d, compile=False), _case(shape, "fwd"), CPU, grads=False)


@pytest.mark.gpu
@pytest.mark.parametrize("peer", ["compile", "sdpa", "flex"])
@pytest.mark.parametrize("shape", [C.Shape("tran.0", 64, 8, 4, True), C.Shape("tran.1", 32, 16, 8, True),
                                   C.Shape("tran.2", 16, 16, 0, False)], ids=lambda s: s.name)
def test_peers_match_reference_on_gpu(peer, shape):
    case = C.AttentionCase(shape, 2, "fp32", "fwdbwd")  # MAT's 180 channels, 6 heads of 30
    _check_against_reference(P.PEERS[peer].build, case, torch.device("cuda"))


@pytest.mark.gpu
def test_run_case_on_gpu_reports_memory_and_bandwidth():
    case = C.AttentionCase(C.Shape("tran.0", 64, 8, 4, True), 1, "bf16", "fwdbwd")
    rows = S.run_case(case, P.select(P.PEER_NAMES), torch.device("cuda"), warmup=1, repeats=3, dram_bw=1e12)
    for r in rows:
        assert r["status"] == "ok" or r["reason"], r
        if r["status"] == "ok":
            assert r["peak_mem_bytes"] > 0 and r["bandwidth_fraction"] > 0 and r["within_tolerance"], r
    assert {r["peer"] for r in rows if r["status"] == "ok"} >= {"reference", "compile", "sdpa", "flex"}


def test_shift_bias_is_needed_for_the_match():
    # The peers must reproduce the shift-region bias; dropping it would change the output.
    case = _case(SMALL[0], "fwd")
    q, k, v, m = C.make_inputs(case, CPU)
    a = P.build_sdpa(case, CPU)(q, k, v, m)[0]
    unshifted = C.AttentionCase(C.Shape("x", 16, 8, 0, True), 2, "fp32", "fwd", channels=24, heads=2)
    rolled = [torch.roll(t, (-4, -4), (1, 2)) for t in (q, k, v, m)]
    b = torch.roll(P.build_sdpa(unshifted, CPU)(*rolled)[0], (4, 4), (1, 2))
    assert (a - b).abs().max() > 1e-3


def test_flex_head_dim_padding():
    assert P.flex_head_dim(30) == 32 and P.flex_head_dim(32) == 32 and P.flex_head_dim(12) == 16
    assert P.flex_head_dim(64) == 64


def test_run_case_records_errors_speedups_and_failures(monkeypatch):
    # Without a GPU (and without the interpreter the Triton tests switch on) Triton cannot run.
    from mat_kernels.triton import _common
    monkeypatch.setattr(_common, "interpreting", lambda: False)
    case = _case(SMALL[0], "fwdbwd")

    def broken(c, d):
        def run(q, k, v, mask):
            raise RuntimeError("kernel exploded\non two lines")
        return run
    peers = [P.PEERS["reference"], P.PEERS["sdpa"], P.Peer("broken", "broken", False, broken),
             P.PEERS["triton"], P.PEERS["cuda"], P.PEERS["compile"]]
    done = []
    rows = S.run_case(case, peers, CPU, warmup=0, repeats=2, skip={"compile": "not today"},
                      dram_bw=1e11, on_peer_done=done.append)
    assert len(done) == len(rows) == 6
    by = {r["peer"]: r for r in rows}
    for name in ("reference", "sdpa"):
        r = by[name]
        assert r["status"] == "ok" and r["reason"] is None and len(r["times_ms"]) == 2
        assert r["max_abs_err"] < 1e-4 and r["max_abs_err_grad"] < 1e-3
        assert r["mask_match"] is True and r["within_tolerance"] is True
        assert r["achieved_bytes_per_s"] == pytest.approx(C.ideal_bytes(case) / (r["median_ms"] / 1e3))
        assert r["bandwidth_fraction"] == pytest.approx(r["achieved_bytes_per_s"] / 1e11)
        assert r["peak_mem_bytes"] is None  # CPU: no allocator statistics
    assert by["reference"]["speedup_vs_reference"] == pytest.approx(1.0)
    assert by["sdpa"]["speedup_vs_reference"] == pytest.approx(by["reference"]["median_ms"] / by["sdpa"]["median_ms"])
    assert by["broken"]["status"] == "failed"
    assert by["broken"]["reason"] == "RuntimeError: kernel exploded on two lines"
    assert by["broken"]["median_ms"] is None and by["broken"]["speedup_vs_reference"] is None
    # Backends that cannot run say why, in the backend registry's own words.
    # On a machine without a GPU that is "unavailable", not a failure.
    assert by["triton"]["status"] == "unavailable" and "CUDA" in by["triton"]["reason"]
    assert by["cuda"]["status"] == "unavailable" and by["cuda"]["reason"]
    assert by["compile"] == {**by["compile"], "status": "skipped", "reason": "not today"}
    assert all(r["speedup_vs_compile"] is None for r in rows)


def test_errors_flag_a_wrong_peer():
    case = _case(SMALL[1], "fwd")

    def off_by_a_bit(c, d):
        base = P.build_reference(c, d)

        def run(q, k, v, mask):
            out, new = base(q, k, v, mask)
            return out + 1e-2, new
        return run
    rows = S.run_case(case, [P.Peer("off", "off", False, off_by_a_bit)], CPU, warmup=0, repeats=1)
    assert rows[0]["status"] == "ok" and rows[0]["within_tolerance"] is False
    assert rows[0]["max_abs_err"] == pytest.approx(1e-2, rel=1e-3)


def test_select_peers():
    assert [p.name for p in P.select(["cuda", "reference"])] == ["reference", "cuda"]
    with pytest.raises(ValueError, match="unknown peer"):
        P.select(["xformers"])


def test_a_fused_peer_that_cannot_run_is_unavailable_on_cpu_and_failed_on_a_gpu():
    cpu, gpu = CPU, torch.device("cuda")
    assert S.status_when_not_runnable(P.PEERS["triton"], cpu) == S.STATUS_UNAVAILABLE
    assert S.status_when_not_runnable(P.PEERS["cuda"], cpu) == S.STATUS_UNAVAILABLE
    assert S.status_when_not_runnable(P.PEERS["triton"], gpu) == S.STATUS_FAILED
    assert S.status_when_not_runnable(P.PEERS["cuda"], gpu) == S.STATUS_FAILED
    assert S.status_when_not_runnable(P.PEERS["flex"], cpu) == S.STATUS_FAILED  # not a GPU-only peer
