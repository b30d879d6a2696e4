"""The order backend="auto" takes (mat_kernels/backends/preferences.py and auto_order)."""
from __future__ import annotations

import torch

from mat_kernels import backends
from mat_kernels.backends import preferences


def _chosen(facts):
    return backends.choose("window_attention", "auto", facts)


def _facts(device="cpu", dtype=torch.float32):
    return dict(device=torch.device(device), dtype=dtype, head_dim=30, window_size=8, mask_dtype=torch.float32)


def test_auto_on_cpu_follows_the_cpu_preferences(monkeypatch):
    from mat_kernels import reference as ref_backend, sdpa as sdpa_backend
    assert backends.CPU_ORDER == preferences.cpu_order(preferences.this_cpu())
    monkeypatch.setattr(backends, "CPU_ORDER", {"window_attention": ("sdpa",)})
    assert _chosen(_facts()) is sdpa_backend.ENTRY_POINTS["window_attention"]
    reference_entry = ref_backend.ENTRY_POINTS["window_attention"]
    assert _chosen(_facts(dtype=torch.float64)) is reference_entry  # sdpa cannot: next one
    monkeypatch.setattr(backends, "CPU_ORDER", {})
    assert _chosen(_facts()) is reference_entry


def test_cpu_order_reads_the_measured_entry_or_the_unmeasured_default(monkeypatch):
    monkeypatch.setattr(preferences, "CPU_PREFERENCES", {("Some CPU", "AVX2"): {"window_attention": ()}})
    assert preferences.cpu_order(("Some CPU", "AVX2")) == {"window_attention": ()}
    assert preferences.cpu_order(("Another CPU", "AVX2")) == dict(preferences.UNMEASURED_CPU["AVX2"])
    assert preferences.cpu_order(("Another CPU", "AVX512")) == {"window_attention": ("sdpa",)}
    assert preferences.cpu_order(("Another CPU", "DEFAULT")) == {}  # unvectorised: the reference


def test_every_recorded_cpu_preference_names_a_backend_and_its_measurement():
    for cpu, order in preferences.CPU_PREFERENCES.items():
        assert cpu in preferences.CPU_MEASUREMENTS, cpu
        for op, names in order.items():
            assert op in backends.OPS and set(names) <= set(backends.BACKENDS), (cpu, op, names)
    for capability, order in preferences.UNMEASURED_CPU.items():
        for op, names in order.items():
            assert op in backends.OPS and set(names) <= set(backends.BACKENDS), (capability, op)


def test_auto_on_cuda_falls_back_to_sdpa_before_the_reference():
    order = backends.auto_order("window_attention", _facts("cuda"))
    assert order == list(preferences.PREFERENCES["window_attention"]) + ["sdpa", "reference"]
    assert "sdpa" not in backends.auto_order("bias_act", _facts("cuda"))
    assert backends.auto_order("window_attention", _facts("meta")) == ["reference"]
