"""mat_kernels.iopaint and mat_kernels.cli.iopaint (``mat-iopaint``) against a real IOPaint, and IOPaint's weight layout.

The tests marked ``needs_iopaint`` run where IOPaint is installed: ``.ci/run`` runs this file in
a second venv with ``iopaint==1.6.0`` and ``MAT_KERNELS_REQUIRE_IOPAINT=1``, which turns a
missing IOPaint into failures instead of skips. The others need no IOPaint.
"""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import mat_kernels
from mat_kernels import iopaint as mi
from mat_kernels.cli import iopaint as mi_cli
from mat_kernels.checkpoint import CheckpointError, load_generator
from mat_kernels.models import Generator

REPO = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("MAT_KERNELS_REQUIRE_IOPAINT") == "1"
HAVE_IOPAINT = importlib.util.find_spec("iopaint") is not None
needs_iopaint = pytest.mark.skipif(not (HAVE_IOPAINT or REQUIRED),
                                   reason="IOPaint is not installed (.ci/run runs these in its IOPaint venv)")


def _iopaint_layout_state_dict(res=256, seed=3):
    torch.manual_seed(seed)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                  synthesis_kwargs={"use_noise": False})
    return G.state_dict()


# ----------------------------------------------------------------------------------------------
# Without IOPaint
# ----------------------------------------------------------------------------------------------

def test_missing_iopaint_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "iopaint", None)
    monkeypatch.setitem(sys.modules, "iopaint.model", None)
    monkeypatch.setitem(sys.modules, "iopaint.model.mat", None)
    with pytest.raises(mi.IOPaintMissingError) as err:
        mi.require_iopaint()
    assert "\n" not in str(err.value) and "mat_kernels[iopaint]" in str(err.value)
    with pytest.raises(SystemExit) as code:
        mi_cli.main(["start", "--model", "mat"])
    assert code.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mat-iopaint: error: IOPaint is not installed")


def test_iopaint_layout_pth_loads_without_noise_inputs(tmp_path):
    sd = _iopaint_layout_state_dict()
    assert not [k for k in sd if "noise" in k]
    path = tmp_path / "iopaint_G.pth"
    torch.save(sd, path)
    G = load_generator(path)
    assert not any("noise" in k for k in G.state_dict())
    assert all(torch.equal(G.state_dict()[k], v) for k, v in sd.items())


def test_official_layout_with_use_noise_false_drops_only_the_noise(tmp_path):
    torch.manual_seed(4)
    official = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3).eval()
    path = tmp_path / "official_G.pth"
    torch.save(official.state_dict(), path)
    G = load_generator(path, use_noise=False)
    dropped = set(official.state_dict()) - set(G.state_dict())
    assert dropped and all(k.startswith("synthesis.dec.") and "noise_" in k for k in dropped)
    assert load_generator(path).synthesis.dec.Dec_16x16.conv1.use_noise
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
    mask = torch.ones(1, 1, 256, 256)
    mask[..., 60:150, 80:200] = 0
    z = torch.randn(1, 512, generator=g)
    with torch.no_grad():
        torch.manual_seed(240)
        a = official(img, mask, z, noise_mode="none")
        torch.manual_seed(240)
        b = G(img, mask, z, noise_mode="none")
    assert torch.equal(a, b)


def test_read_weights_takes_the_official_layout_without_its_noise(tmp_path):
    torch.manual_seed(4)
    sd = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3).state_dict()
    path = tmp_path / "official_G.pth"
    torch.save({"G_ema": sd}, path)
    got = mi.read_weights(path)
    assert set(got) == {k for k in sd if "noise_" not in k}
    assert all(torch.equal(got[k], sd[k]) for k in got)


def test_some_noise_entries_missing_is_an_error_naming_them(tmp_path):
    torch.manual_seed(4)
    sd = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3).state_dict()
    del sd["synthesis.dec.Dec_64x64.conv0.noise_strength"]
    path = tmp_path / "damaged.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="synthesis.dec.Dec_64x64.conv0.noise_strength"):
        load_generator(path)


@pytest.mark.parametrize("damage", ["renamed", "reshaped"])
def test_read_weights_names_the_file_and_the_key_in_one_line(tmp_path, damage):
    sd = _iopaint_layout_state_dict()
    key = "synthesis.first_stage.to_style.weight"
    if damage == "renamed":
        sd["synthesis.first_stage.to_style.weights"] = sd.pop(key)
    else:
        sd[key] = sd[key][:, :7].clone()
    path = tmp_path / f"{damage}.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        mi.read_weights(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and key in msg


def test_set_map_order_checks_its_argument():
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=128, img_channels=3)
    with pytest.raises(ValueError, match="order must be one of"):
        G.set_map_order("channels_last")
    assert G.set_map_order("iopaint").synthesis.first_stage.map_order == "iopaint"


# ----------------------------------------------------------------------------------------------
# With a real IOPaint
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def iopaint_weights(tmp_path_factory):
    """IOPaint's own MAT generator with random weights (seed 31), saved as IOPaint saves it."""
    from iopaint.model.mat import Generator as IOPaintGenerator
    torch.manual_seed(31)
    G = IOPaintGenerator(z_dim=512, c_dim=0, w_dim=512, img_resolution=512, img_channels=3)
    path = tmp_path_factory.mktemp("iopaint") / "Places_512_FullData_G.pth"
    torch.save(G.state_dict(), path)
    return path


@pytest.fixture
def iopaint_mat(iopaint_weights, monkeypatch):
    import iopaint.model.mat as iop_mat
    monkeypatch.setattr(iop_mat, "MAT_MODEL_URL", str(iopaint_weights))  # a local file: no download
    return iop_mat


def _picture(H, W, holes, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), np.uint8)  # IOPaint's convention: 255 = fill
    for t, b, l, r in holes:
        mask[t:b, l:r] = 255
    return image, mask


@needs_iopaint
def test_register_makes_it_iopaints_mat_model(iopaint_mat, iopaint_weights, monkeypatch):
    from iopaint.download import scan_inpaint_models
    from iopaint.model import models
    monkeypatch.setitem(models, "mat", models["mat"])  # restored after the test
    cls = mi.register(iopaint_weights)
    assert models["mat"] is cls and issubclass(cls, iopaint_mat.MAT) and cls.name == "mat"
    assert "mat" in [m.name for m in scan_inpaint_models(iopaint_weights.parent)]


@needs_iopaint
@pytest.mark.parametrize("H, W, holes", [
    (300, 420, [(100, 180, 150, 300)]),                # padded to a 512 square
    (420, 900, [(150, 260, 600, 760), (20, 60, 30, 90)]),  # long side > 800: IOPaint's crop strategy, two boxes
])
def test_same_image_as_iopaints_mat_through_its_call(iopaint_mat, iopaint_weights, H, W, holes):
    from iopaint.schema import InpaintRequest
    image, mask = _picture(H, W, holes)
    config = InpaintRequest(image="", mask="")
    theirs = iopaint_mat.MAT("cpu")          # seeds and builds as IOPaint does; first request
    expected = theirs(image.copy(), mask.copy(), config)
    del theirs
    ours = mi.model_class(iopaint_weights)("cpu")
    assert isinstance(ours.model, mat_kernels.models.Generator)
    got = ours(image.copy(), mask.copy(), config)
    assert got.shape == expected.shape == (H, W, 3)
    diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, f"max difference {diff.max()} levels"
    known = mask < 128
    assert np.array_equal(got[known], image[known][:, ::-1])  # BGR out, as IOPaint's


@needs_iopaint
def test_generator_matches_iopaints_at_batch_2(iopaint_weights):
    from iopaint.model.mat import Generator as IOPaintGenerator
    from mat_kernels.testing import assert_close
    theirs = IOPaintGenerator(z_dim=512, c_dim=0, w_dim=512, img_resolution=512, img_channels=3).eval()
    theirs.load_state_dict(torch.load(iopaint_weights, weights_only=True))
    ours = load_generator(iopaint_weights).set_map_order("iopaint")
    g = torch.Generator().manual_seed(5)
    img = torch.rand(2, 3, 512, 512, generator=g) * 2 - 1
    mask = torch.ones(2, 1, 512, 512)
    mask[0, :, 100:300, 150:400] = 0
    mask[1, :, 0:200, 300:512] = 0
    z = torch.randn(2, 512, generator=g)
    c = torch.zeros(2, 0)
    with torch.no_grad():
        torch.manual_seed(240)
        expected = theirs(img, mask, z, c, truncation_psi=1, noise_mode="none")
        torch.manual_seed(240)
        got = ours(img, mask, z, c, truncation_psi=1, noise_mode="none")
    assert_close(got, expected, "model", "fwd", torch.float32, name="IOPaint's MAT at batch 2")


@needs_iopaint
@pytest.mark.parametrize("damage", ["renamed", "reshaped", "absent"])
def test_launcher_bad_checkpoint_is_one_line(iopaint_weights, tmp_path, capsys, damage):
    sd = torch.load(iopaint_weights, weights_only=True)
    key = "synthesis.dec.Dec_32x32.conv0.bias"
    path = tmp_path / "bad.pth"
    if damage == "renamed":
        sd["synthesis.dec.Dec_32x32.conv0.b"] = sd.pop(key)
    elif damage == "reshaped":
        sd[key] = torch.zeros(3)
    if damage != "absent":
        torch.save(sd, path)
    with pytest.raises(SystemExit) as code:
        mi_cli.main(["--mat-checkpoint", str(path), "start", "--model", "mat", "--port", "1"])
    assert code.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mat-iopaint: error:") and str(path) in lines[0]
    if damage != "absent":
        assert key in lines[0]


# A stand-in for torchvision, put on the server's path only when torchvision cannot be imported.
# IOPaint's server imports it at start for its plugins (segmentation, face restoration), which
# this test does not enable; on CI's CPU-only torch the torchvision wheel on the package index
# (built against CUDA torch) fails to load. Any use of the stand-in raises.
_TORCHVISION_STANDIN = '''
import importlib.abc, importlib.machinery, sys, types

class _Unavailable:
    def __init__(self, name):
        self._name = name
    def __call__(self, *args, **kwargs):
        raise RuntimeError(self._name + ": torchvision is a test stand-in here")
    def __getattr__(self, item):
        return _Unavailable(self._name + "." + item)
    def __mro_entries__(self, bases):
        return (object,)

class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda item: _Unavailable(spec.name + "." + item)
        return module
    def exec_module(self, module):
        pass

sys.meta_path.insert(0, _Finder())
__version__ = "0+standin"
def __getattr__(item):
    return _Unavailable("torchvision." + item)
'''


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_url(array) -> str:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@needs_iopaint
def test_iopaints_http_server_runs_our_model(iopaint_weights, iopaint_mat, tmp_path):
    from PIL import Image
    from iopaint.schema import InpaintRequest
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, env=env)
    if probe.returncode != 0:
        standin = tmp_path / "standin" / "torchvision"
        standin.mkdir(parents=True)
        (standin / "__init__.py").write_text(_TORCHVISION_STANDIN)
        env["PYTHONPATH"] = os.pathsep.join([str(standin.parent), env["PYTHONPATH"]])
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mat_kernels.cli.iopaint", "--mat-checkpoint", str(iopaint_weights), "start",
         "--model", "mat", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
         "--model-dir", str(tmp_path / "models")],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, "server exited: " + (tmp_path / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(base + "/server-config", timeout=5) as r:
                    config = json.load(r)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "server did not start within 180 s"
                time.sleep(1)
        assert "mat" in [m["name"] for m in config["modelInfos"]]
        image, mask = _picture(96, 128, [(30, 60, 40, 90)], seed=1)
        body = json.dumps({"image": _data_url(image), "mask": _data_url(mask)}).encode()
        req = urllib.request.Request(base + "/inpaint", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            assert r.headers["Content-Type"] == "image/png"
            out = np.array(Image.open(io.BytesIO(r.read())))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        log.close()
    assert out.shape == image.shape and out.dtype == np.uint8
    known = mask == 0
    assert np.array_equal(out[known], image[known])
    # The server's first request gives what a freshly initialised model gives in-process.
    expected = mi.model_class(iopaint_weights)("cpu")(image, mask, InpaintRequest(image="", mask=""))[..., ::-1]
    assert np.abs(out.astype(np.int16) - expected.astype(np.int16)).max() <= 1


@pytest.mark.gpu
@needs_iopaint
def test_cuda_fp16_is_finite_and_close_to_fp32(iopaint_weights):
    """fp16 on CUDA (IOPaint's default there) through the fused kernels: finite where IOPaint's
    copy needed its NaN fixes (an all-zero hole region: zero tokens to normalise, windows and
    partial-conv footprints with no known pixel)."""
    from mat_kernels.testing import relative_l2
    cls = mi.model_class(iopaint_weights)
    fp16, fp32 = cls("cuda"), cls("cuda", no_half=True)
    assert (fp16.torch_dtype, fp32.torch_dtype) == (torch.float16, torch.float32)
    img = torch.zeros(1, 3, 512, 512, device="cuda")
    mask = torch.ones(1, 1, 512, 512, device="cuda")
    mask[..., :320, :] = 0
    outs = []
    for m in (fp16, fp32):
        torch.manual_seed(240)
        with torch.no_grad():
            outs.append(m.model(img.to(m.torch_dtype), mask.to(m.torch_dtype), m.z, m.label,
                                truncation_psi=1, noise_mode="none").float())
    assert torch.isfinite(outs[0]).all()
    assert relative_l2(outs[0], outs[1]) < 0.05
