"""Model-level benchmark: generator inference and a full G+D training step, images/s.

Paths: ``reference`` (``set_backend("reference")``), ``auto`` (the fused kernels where they can
run) and ``compile`` (``torch.compile`` of the model with the ``auto`` backend: the fused
kernels on CUDA, the reference on CPU). Precisions (``dtype``): ``fp32``, ``bf16`` (autocast)
and ``bf16-weights`` (``G.to(torch.bfloat16)``, inference only). Generator rows carry
``rel_err_vs_fp32``: the relative L2 distance of their output from the fp32 eager reference
output for the same weights, inputs and seed (the generator's random draws do not depend on
compilation); ``first_call_s`` is the first call, which for compiled rows is mostly compilation
(the timed calls come after it). The networks come from
``mat_kernels.models``; until that imports, every row says why the model is not available.
Weights are random (nothing is downloaded): throughput does not depend on them.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from typing import Callable, Iterable, List, Optional

import torch
import torch.nn.functional as F

from . import timing
from .suite import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED, TIMING_KEYS, reason_of

Z_DIM = W_DIM = 512
MODEL_PATHS = ("reference", "auto", "compile")
WHATS = ("generator_forward", "train_step")
PRECISIONS = ("fp32", "bf16", "bf16-weights")
# A G+D training step costs about this many generator forwards (measured on a 2-core CPU at
# 256x256, batch 1: 88 s per step, 8.7 s per forward). Used only for the CPU time estimate.
TRAIN_STEP_FORWARDS = 10


class ModelUnavailable(RuntimeError):
    pass


def load_networks():
    """``(Generator, Discriminator)`` classes, or ModelUnavailable with the import error."""
    try:
        from ..models import Discriminator, Generator
    except Exception as exc:
        raise ModelUnavailable(f"model not available: {reason_of(exc)}") from exc
    return Generator, Discriminator


def _inputs(batch: int, resolution: int, device, seed: int = 0):
    """Images in [-1, 1], masks with one rectangular hole per image (1 = known), z, empty c."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1
    mask = torch.ones(batch, 1, resolution, resolution)
    for b in range(batch):
        y, x = (int(t) for t in torch.randint(0, resolution // 2, (2,), generator=g))
        mask[b, :, y:y + resolution // 2, x:x + resolution // 2] = 0
    z = torch.randn(batch, Z_DIM, generator=g)
    c = torch.zeros(batch, 0)
    return tuple(t.to(device) for t in (img, mask, z, c))


def _set_backend(net, name: str) -> None:
    if not hasattr(net, "set_backend"):
        raise ModelUnavailable(f"model not available: {type(net).__name__} has no set_backend()")
    net.set_backend(name)


def _generate(G, img, mask, z, c, noise_mode: str):
    """(image, stage-1 image); stage 1 falls back to the image when G cannot return it."""
    fn = G._orig_mod if hasattr(G, "_orig_mod") else G
    if "return_stg1" in inspect.signature(fn.forward).parameters:
        out = G(img, mask, z, c, noise_mode=noise_mode, return_stg1=True)
    else:
        out = G(img, mask, z, c, noise_mode=noise_mode)
    if isinstance(out, (tuple, list)):
        return out[0], out[1] if len(out) > 1 else out[0]
    return out, out


def _train_step(G, D, opt_g, opt_d, img, mask, z, c):
    """One non-saturating logistic GAN step on both stages, as MAT trains (no R1, whose lazy
    regularisation runs every 16 steps, and no perceptual loss, which needs VGG weights)."""
    fake, fake1 = _generate(G, img, mask, z, c, "random")
    logit, logit1 = D(fake, mask, fake1, c)
    loss_g = F.softplus(-logit).mean() + F.softplus(-logit1).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    with torch.no_grad():
        fake, fake1 = _generate(G, img, mask, z, c, "random")
    f_logit, f_logit1 = D(fake, mask, fake1, c)
    r_logit, r_logit1 = D(img, mask, img, c)
    loss_d = (F.softplus(f_logit).mean() + F.softplus(f_logit1).mean()
              + F.softplus(-r_logit).mean() + F.softplus(-r_logit1).mean())
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return loss_g.detach(), loss_d.detach()


def _row(what, path, batch, resolution, dtype):
    return {"what": what, "path": path, "batch": batch, "resolution": resolution, "dtype": dtype,
            "status": None, "reason": None, **dict.fromkeys(TIMING_KEYS), "images_per_s": None, "peak_mem_bytes": None, "speedup_vs_reference": None, "rel_err_vs_fp32": None,
            "first_call_s": None}


def build_call(Generator, Discriminator, what: str, path: str, batch: int, resolution: int,
               device: torch.device, dtype: str = "fp32") -> Callable[[], object]:
    """One timed iteration of ``what`` ("generator_forward" or "train_step") on ``path``
    ("reference", "auto" or "compile"), with its networks, optimisers and inputs built."""
    if what not in WHATS:
        raise ValueError(f"what must be one of {WHATS}, got {what!r}")
    if path not in MODEL_PATHS:
        raise ValueError(f"path must be one of {MODEL_PATHS}, got {path!r}")
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype must be one of {PRECISIONS}, got {dtype!r}")
    if dtype == "bf16-weights" and what != "generator_forward":
        raise ValueError("bf16-weights is an inference precision: only generator_forward runs with it")
    backend = "reference" if path == "reference" else "auto"

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()

    torch.manual_seed(0)
    G = Generator(z_dim=Z_DIM, c_dim=0, w_dim=W_DIM, img_resolution=resolution, img_channels=3).to(device)
    if dtype == "bf16-weights":
        G = G.to(torch.bfloat16)
    _set_backend(G, backend)
    img, mask, z, c = _inputs(batch, resolution, device)
    if what == "generator_forward":
        G.eval()
        Gr = torch.compile(G) if path == "compile" else G

        def call():
            with torch.no_grad(), amp():
                return _generate(Gr, img, mask, z, c, "const")
        return call
    D = Discriminator(c_dim=0, img_resolution=resolution, img_channels=3).to(device)
    if hasattr(D, "set_backend"):
        D.set_backend(backend)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))
    Gr, Dr = (torch.compile(G), torch.compile(D)) if path == "compile" else (G, D)

    def call():
        with amp():
            return _train_step(Gr, Dr, opt_g, opt_d, img, mask, z, c)
    return call


def _seeded_output(call) -> torch.Tensor:
    """The generator image of one call with the Bernoulli maps drawn from a fixed seed."""
    torch.manual_seed(1)
    return call()[0].float()


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).double().norm() / ref.double().norm()).item()


def _measure_row(r, Generator, Discriminator, what, path, batch, resolution, device, dtype, warmup, repeats,
                 fp32_outputs) -> None:
    """Time one (what, path, batch, dtype) and, for the generator, its error against fp32."""
    call = None
    try:
        if path == "compile":
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
        call = build_call(Generator, Discriminator, what, path, batch, resolution, device, dtype)
        t0 = time.perf_counter()
        if what == "generator_forward":
            out = _seeded_output(call)  # also compiles / warms the allocator
            r["first_call_s"] = time.perf_counter() - t0  # the compile time, for compiled rows
            if batch not in fp32_outputs:
                ref_call = build_call(Generator, Discriminator, what, "reference", batch, resolution, device, "fp32")
                fp32_outputs[batch] = _seeded_output(ref_call)
                del ref_call
            r["rel_err_vs_fp32"] = _rel_err(out, fp32_outputs[batch])
        else:
            call()  # compile / warm the allocator before the counted warm-up
            r["first_call_s"] = time.perf_counter() - t0
        t = timing.measure(call, device, warmup, repeats, flush_l2=False)
        r.update({key: t[key] for key in TIMING_KEYS}, images_per_s=batch / (t["median_ms"] / 1e3))
        r["peak_mem_bytes"] = timing.peak_memory(call, device)
        r["status"] = STATUS_OK
    except Exception as exc:
        r.update(status=STATUS_FAILED, reason=reason_of(exc))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    del call  # frees the networks before the next path


def time_forward(resolution: int, batch: int, device: torch.device) -> float:
    """Seconds of one eager fp32 generator forward with random weights (network build excluded):
    the unit of :func:`estimate_seconds`. Raises ModelUnavailable when the model does not import."""
    Generator, Discriminator = load_networks()
    call = build_call(Generator, Discriminator, "generator_forward", "reference", batch, resolution, device)
    t0 = time.perf_counter()
    call()
    timing.synchronize(device)
    return time.perf_counter() - t0


def estimate_seconds(forward_s: float, probe_batch: int, batches: Iterable[int], paths: Iterable[str],
                     dtypes: Iterable[str], warmup: int, repeats: int, skip: Iterable[str] = (),
                     whats: Iterable[str] = WHATS) -> float:
    """What :func:`run_model` over ``dtypes`` will take, counted in generator forwards of
    ``forward_s`` seconds at ``probe_batch`` (time taken as proportional to the batch): per row one
    checked or warming call, ``warmup`` and ``repeats``; per dtype and batch one fp32 reference
    output; a training step as TRAIN_STEP_FORWARDS forwards. Compilation time is not included."""
    run_paths = [p for p in paths if p not in set(skip)]
    calls = 1 + warmup + repeats
    forwards = 0.0
    for dt in dtypes:
        for b in batches:
            per_row = len(run_paths) * calls
            n = (per_row + (1 if run_paths else 0)) if "generator_forward" in whats else 0
            if dt != "bf16-weights" and "train_step" in whats:
                n += per_row * TRAIN_STEP_FORWARDS
            forwards += n * b / probe_batch
    return forwards * forward_s


def run_model(resolution: int, batches: Iterable[int], device: torch.device, warmup: int, repeats: int,
              paths: Iterable[str] = MODEL_PATHS, whats: Iterable[str] = WHATS, dtype: str = "fp32",
              on_row_done: Optional[Callable[[dict], None]] = None,
              skip: Optional[dict] = None, networks: Optional[tuple] = None) -> List[dict]:
    """Rows for every (what, batch, path); failures carry their reason, paths in ``skip``
    (path -> reason) are recorded as skipped. ``dtype`` "bf16" runs under ``torch.autocast``,
    "bf16-weights" converts G (its train_step rows are skipped). ``networks``: (Generator,
    Discriminator) classes with MAT's constructor arguments, default :func:`load_networks`."""
    skip = skip or {}
    rows: List[dict] = []
    paths, whats, batches = list(paths), list(whats), list(batches)
    try:
        Generator, Discriminator = networks or load_networks()
    except ModelUnavailable as exc:
        for what in whats:
            for batch in batches:
                for path in paths:
                    r = _row(what, path, batch, resolution, dtype)
                    r.update(status=STATUS_FAILED, reason=str(exc))
                    rows.append(r)
                    if on_row_done:
                        on_row_done(r)
        return rows
    fp32_outputs = {}  # batch -> fp32 eager reference image, for rel_err_vs_fp32
    for what in whats:
        for batch in batches:
            for path in paths:
                r = _row(what, path, batch, resolution, dtype)
                if path in skip or (dtype == "bf16-weights" and what != "generator_forward"):
                    r.update(status=STATUS_SKIPPED, reason=skip.get(path, "bf16 weights are for inference"))
                else:
                    _measure_row(r, Generator, Discriminator, what, path, batch, resolution, device, dtype,
                                 warmup, repeats, fp32_outputs)
                rows.append(r)
                if on_row_done:
                    on_row_done(r)
    for r in rows:
        base = next((b for b in rows if b["what"] == r["what"] and b["batch"] == r["batch"]
                     and b["path"] == "reference" and b["status"] == STATUS_OK), None)
        if base is not None and r["status"] == STATUS_OK:
            r["speedup_vs_reference"] = base["median_ms"] / r["median_ms"]
    return rows
