"""MAT's two mask-update rules by backend, with pytest-benchmark.

window_mask_update at the masked attention layers' grids (64x64 window 8, 32x32 window 16, with
and without the shift) and partial_conv_mask_update at the partial convolutions of the 512
network (3x3; stride 1 at 512 and at the transformer grids, stride 2 in the encoder).
"""
import pytest
import torch

from mat_kernels import backends, ops
from mat_kernels.bench.timing import synchronized

BACKENDS = ("reference", "triton", "cuda")
WINDOW = [(64, 8, 0), (64, 8, 4), (32, 16, 0), (32, 16, 8)]
PCONV = [(512, 3, 1), (512, 3, 2), (256, 3, 2), (128, 3, 2), (64, 3, 1), (32, 3, 1), (16, 3, 1)]


def _mask(shape, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) > 0.5).to(device=device, dtype=dtype)


def _skip_unless_runs(backend, op, facts):
    why = backends.not_supported_reasons(backend, op, facts)
    if why:
        pytest.skip("; ".join(why))


WINDOW_PARAMS = ([pytest.param("cuda", b, g, w, s, be, id=f"cuda-g{g}w{w}s{s}-b{b}-{be}", marks=pytest.mark.gpu)
                  for (g, w, s) in WINDOW for b in (1, 8) for be in BACKENDS]
                 + [pytest.param("cpu", 1, 16, 8, 4, "reference", id="cpu-g16w8s4-b1-reference")])


@pytest.mark.parametrize("device, batch, grid, window, shift, backend", WINDOW_PARAMS)
def test_window_mask_update(benchmark, device, batch, grid, window, shift, backend):
    device = torch.device(device)
    mask = _mask((batch, grid, grid, 1), device)
    _skip_unless_runs(backend, "window_mask_update", dict(device=device, dtype=mask.dtype, window_size=window))
    fn = lambda: ops.window_mask_update(mask, window_size=window, shift_size=shift, backend=backend)  # noqa: E731
    fn()
    benchmark.group = f"window_mask_update-g{grid}w{window}s{shift}-b{batch}"
    benchmark(synchronized(fn, device))


PCONV_PARAMS = ([pytest.param("cuda", b, r, k, s, be, id=f"cuda-r{r}k{k}s{s}-b{b}-{be}", marks=pytest.mark.gpu)
                 for (r, k, s) in PCONV for b in (1, 8) for be in BACKENDS]
                + [pytest.param("cpu", 1, 64, 3, 2, "reference", id="cpu-r64k3s2-b1-reference")])


@pytest.mark.parametrize("device, batch, res, kernel, stride, backend", PCONV_PARAMS)
def test_partial_conv_mask_update(benchmark, device, batch, res, kernel, stride, backend):
    device = torch.device(device)
    mask = _mask((batch, 1, res, res), device)
    _skip_unless_runs(backend, "partial_conv_mask_update",
                      dict(device=device, dtype=mask.dtype, kernel_size=kernel, stride=stride))
    fn = lambda: ops.partial_conv_mask_update(mask, kernel_size=kernel, stride=stride, backend=backend)  # noqa: E731
    fn()
    benchmark.group = f"partial_conv_mask_update-r{res}k{kernel}s{stride}-b{batch}"
    benchmark(synchronized(fn, device))
