"""The DRAM bandwidth table and the environment record."""
import pytest
import torch

from mat_kernels.bench import env


@pytest.mark.parametrize("name, tbps", [
    ("NVIDIA H100 80GB HBM3", 3.35), ("NVIDIA H100 PCIe", 2.0), ("NVIDIA H100 NVL", 3.9),
    ("NVIDIA H200", 4.8), ("NVIDIA GH200 480GB", 4.0), ("NVIDIA A100-SXM4-80GB", 2.039),
    ("NVIDIA A100 80GB PCIe", 1.935), ("NVIDIA A100-SXM4-40GB", 1.555), ("NVIDIA A100-PCIE-40GB", 1.555),
    ("NVIDIA L4", 0.3), ("NVIDIA L40S", 0.864),
])
def test_bandwidth_table(name, tbps):
    bw, source = env.dram_bandwidth(name)
    assert bw == pytest.approx(tbps * 1e12) and "table" in source


def test_bandwidth_unknown_and_override():
    bw, why = env.dram_bandwidth("Some Future GPU")
    assert bw is None and "--dram-bandwidth" in why
    assert env.dram_bandwidth("NVIDIA H100 PCIe", 2.5)[0] == pytest.approx(2.5e12)
    with pytest.raises(ValueError, match="dram-bandwidth"):
        env.dram_bandwidth("x", 0.0)


def test_environment_fields_on_cpu():
    info = env.environment(torch.device("cpu"))
    assert info["device_type"] == "cpu" and info["torch_version"] == torch.__version__
    assert info["dram_bandwidth_bytes_per_s"] is None and info["date"]
    assert env.environment(torch.device("cpu"), 0.05)["dram_bandwidth_bytes_per_s"] == pytest.approx(5e10)
