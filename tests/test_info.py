"""``mat-info`` (mat_kernels.info and mat_kernels.cli.info): every op x backend with its availability or reasons, exit 0 on
a machine where nothing failed, and a JSON report of a fixed shape (checked by hand: jsonschema
is not a dependency)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mat_kernels import backends, info
from mat_kernels.cli import info as info_cli

# key -> type (or tuple of types) of the report and of its rows.
TOP = {"schema": str, "versions": dict, "device": dict, "extension": dict, "backends": list, "auto": list,
       "checks": list, "check_status": str}
VERSIONS = {"python": str, "platform": str, "torch": str, "torch_cuda": (str, type(None)),
            "triton": (str, type(None)), "triton_error": (str, type(None)), "triton_interpret": bool}
DEVICE = {"type": str, "name": str, "capability": (str, type(None)), "cuda_available": bool, "count": int}
EXTENSION = {"built": bool, "reason": (str, type(None)), "gpu_verified": bool}
BACKEND_ROW = {"op": str, "backend": str, "dtype": str, "available": bool, "reasons": list}
AUTO_ROW = {"op": str, "dtype": str, "order": list, "backend": (str, type(None))}
CHECK_ROW = {"op": str, "backend": str, "dtype": str, "passed": bool, "max_abs_err": (float, type(None)),
             "max_abs_err_grad": (float, type(None)), "message": (str, type(None)), "seconds": (float, int)}


def _conforms(obj: dict, spec: dict, where: str) -> None:
    for key, typ in spec.items():
        assert key in obj, f"{where} is missing {key!r}"
        assert isinstance(obj[key], typ), f"{where}[{key!r}] is {type(obj[key]).__name__}, expected {typ}"


def validate(rep: dict) -> None:
    _conforms(rep, TOP, "report")
    assert rep["schema"] == info.SCHEMA
    _conforms(rep["versions"], VERSIONS, "versions")
    _conforms(rep["device"], DEVICE, "device")
    _conforms(rep["extension"], EXTENSION, "extension")
    for i, r in enumerate(rep["backends"]):
        _conforms(r, BACKEND_ROW, f"backends[{i}]")
        # Unavailable means a reason; available means none.
        assert r["available"] == (not r["reasons"]), r
    for i, r in enumerate(rep["auto"]):
        _conforms(r, AUTO_ROW, f"auto[{i}]")
    for i, r in enumerate(rep["checks"]):
        _conforms(r, CHECK_ROW, f"checks[{i}]")


def test_validate_rejects_a_broken_report():
    rep = info.collect(torch.device("cpu"), check=False)
    validate(rep)
    bad = dict(rep, backends=[dict(rep["backends"][0], available=False, reasons=[])])
    with pytest.raises(AssertionError):
        validate(bad)
    with pytest.raises(AssertionError, match="missing 'auto'"):
        validate({k: v for k, v in rep.items() if k != "auto"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU report; on a GPU the quick check runs instead")
def test_cli_on_cpu_lists_every_backend_with_reasons(tmp_path):
    path = tmp_path / "info.json"
    proc = subprocess.run([sys.executable, "-m", "mat_kernels.cli.info", "--json", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for op in backends.OPS:
        assert op in out
    rep = json.loads(path.read_text())
    validate(rep)
    assert {(r["op"], r["backend"]) for r in rep["backends"]} == {(o, b) for o in backends.OPS
                                                                  for b in backends.BACKENDS}
    # On CPU the reference and sdpa run everything, the fused backends say why not, auto is what
    # the CPU preferences give for this CPU (then the reference).
    for r in rep["backends"]:
        if r["backend"] in ("reference", "sdpa"):
            assert r["available"], r
        elif not rep["versions"]["triton_interpret"] or r["backend"] == "cuda":
            assert not r["available"] and r["reasons"], r
            assert r["reasons"][0] in out  # the printed report shows the reason, not only the JSON
    for a in rep["auto"]:
        assert a["backend"] == (backends.CPU_ORDER.get(a["op"]) or ("reference",))[0], a
    assert rep["checks"] == [] and rep["check_status"].startswith("skipped")
    assert rep["extension"]["built"] == (rep["extension"]["reason"] is None)


def test_a_failing_check_is_reported_and_sets_the_exit_status(monkeypatch, capsys):
    # Pretend a fused backend is available and that its check finds a mismatch.
    def fake_rows(device):
        return [{"op": "window_mask_update", "backend": "triton", "dtype": "fp32", "available": True, "reasons": []}]

    def mismatch(backend, dtype, device):
        raise AssertionError("new_mask differs at [0, 3]")

    monkeypatch.setattr(info, "availability", fake_rows)
    monkeypatch.setitem(info.CHECKS, "window_mask_update", mismatch)
    assert info_cli.main(["--device", "cpu", "--check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  window_mask_update" in out and "new_mask differs at [0, 3]" in out


def test_the_checks_agree_for_the_reference_on_cpu():
    # The harness itself: the reference checked against itself passes with ~zero error (fp32).
    errs = info.CHECKS["window_mask_update"]("reference", torch.float32, torch.device("cpu"))
    assert errs == {"fwd": 0.0}
    errs = info.CHECKS["partial_conv_mask_update"]("reference", torch.float32, torch.device("cpu"))
    assert errs == {"fwd": 0.0}


def test_bad_device_names_the_argument(capsys):
    with pytest.raises(SystemExit):
        info_cli.main(["--device", "nonsense"])
    assert "--device" in capsys.readouterr().err
