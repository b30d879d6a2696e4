"""benchmarks/gpu_campaign.py on CPU: the specialization plan is what a real proof launches, the
committed compile-time record belongs to today's plan, MAT-like masks hold every kind of window,
and a backend joins the campaign by its name alone."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_campaign as G  # noqa: E402

from mat_kernels import backends  # noqa: E402
from mat_kernels.triton._common import interpreting  # noqa: E402

CPU = torch.device("cpu")
needs_interpreter = pytest.mark.skipif(not interpreting(), reason="plans are recorded under TRITON_INTERPRET=1")


def _keys(log):
    return {G.spec_key(G.specialization(k, a, kw)) for k, _, a, kw in log}


@needs_interpreter
def test_plan_is_what_a_real_proof_launches():
    """The rehearsal's proof run for real (kernels executed, every launch recorded) and the plan of
    the same cases (nothing executed) give the same set of specializations."""
    real = []
    with G.recording(real, run=True, device_config=False):
        for op, name, dname, facts, run, extra in G.prove_cases(CPU, rehearse=True):
            run("triton")
    planned = G.planned_launches(CPU, ("prove",), rehearse=True, device_config=False)
    assert real and _keys(planned) == _keys(real)
    kernels = {G.specialization(k, a, kw)["kernel"] for k, _, a, kw in real}
    assert kernels == {"_window_attention_fwd_kernel", "_window_attention_bwd_preprocess_kernel",
                       "_window_attention_bwd_dkdv_kernel", "_window_attention_bwd_dq_kernel",
                       "_window_mask_update_kernel", "_partial_conv_mask_update_kernel", "_bias_act_fwd_kernel",
                       "_bias_act_grad_kernel"}


@needs_interpreter
def test_device_plan_uses_the_gpu_configuration_and_matches_the_record():
    specs = G.unique_specs(G.planned_launches(CPU))
    from mat_kernels.triton import window_attention as wa
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for s in specs:
        if s["kernel"] == "_window_attention_fwd_kernel":
            c = s["constexprs"]
            cfg = wa.device_config(c["WS"], c["HEAD_DIM"], dt[s["signature"]["Q"][1:]])
            assert (c["BLOCK_M"], c["BLOCK_N"], c["UPCAST"]) == (cfg["BLOCK_M"], cfg["BLOCK_N"], False)
    digest = G.hashlib.sha256("\n".join(sorted(G.spec_key(s) for s in specs)).encode()).hexdigest()[:16]
    with open(os.path.join(ROOT, "benchmarks", "results", "triton-specializations.json")) as f:
        rec = json.load(f)
    assert rec["specializations"] == len(specs) and rec["compile"]["digest"] == digest, (
        "the campaign's Triton specializations changed: rerun `TRITON_INTERPRET=1 python "
        "benchmarks/gpu_campaign.py specs --compile --out benchmarks/results/triton-specializations.json`")
    assert not rec["compile"]["errors"]


@pytest.mark.parametrize("rehearse", [False, True])
def test_masks_hold_every_kind_of_window(rehearse):
    for s in G.attention_shapes(rehearse):
        if s.masked:
            kinds = G.window_kinds(G.mat_key_mask(G.prove_batch(s), s.grid, s.window, s.shift), s.window, s.shift)
            assert min(kinds.values()) > 0, (s, kinds)


def test_masks_missing_a_kind_are_refused():
    with pytest.raises(ValueError, match="lacks a kind of window"):
        G.mat_key_mask(2, 16, 16, 0)  # one window per image, two images: three kinds cannot fit


def test_a_backend_joins_by_its_name(tmp_path, monkeypatch):
    out = G.Output(str(tmp_path / "t.json"), "prove", True, CPU)
    assert G.known_backends(["triton", "newbe"], out) == ["triton"]
    assert any("'newbe' is not registered" in n for n in out.data["notes"])
    assert G.known_backends(["triton", "sdpa"], out) == ["triton", "sdpa"]
    # A backend that a comparison peer already runs is that peer; a new backend whose name a
    # comparison peer of another kind holds gets its own "<name>-backend" peer.
    monkeypatch.setitem(backends.BACKENDS, "flex", "mat_kernels.reference")
    peers = G.backend_peers(["triton", "sdpa", "flex"])
    assert [(p.name, p.backend) for p in peers] == [("triton", "triton"), ("sdpa", "sdpa"),
                                                    ("flex-backend", "flex")]
    assert "sdpa" in G.CAMPAIGN_BACKENDS
    on_disk = json.loads((tmp_path / "t.json").read_text())
    assert on_disk["schema"] == G.SCHEMA and on_disk["finished"] is False
