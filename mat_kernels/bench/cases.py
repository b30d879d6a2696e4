"""What the benchmark measures: MAT's attention shapes and the ideal cost of each case.

Every transformer layer of MAT's first stage runs window attention on 180 channels, 6 heads of 30.
At the native size (256 or 512 images) the token grids are 64x64, 32x32 and 16x16
(the architecture of the official 512 network); larger inputs to the 512 network give proportionally larger grids with
the same windows and shifts. The cases below are exactly those layers, with and without the
dynamic key mask (the encoder layers carry one, the decoder layers do not).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

CHANNELS = 180
HEADS = 6
HEAD_DIM = CHANNELS // HEADS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
MODES = ("fwd", "fwdbwd")


@dataclass(frozen=True)
class Shape:
    """One attention geometry of MAT: a ``grid`` x ``grid`` token map cut into ``window`` x
    ``window`` windows, cyclically shifted by ``shift``, with or without the key mask."""
    layers: str
    grid: int
    window: int
    shift: int
    masked: bool

    @property
    def name(self) -> str:
        return f"{self.grid}x{self.grid} w{self.window} s{self.shift} {'mask' if self.masked else 'nomask'}"

    @property
    def tokens_per_window(self) -> int:
        return self.window * self.window


@dataclass(frozen=True)
class AttentionCase:
    """One measurement: a shape at a batch size, dtype and direction ("fwd" or "fwdbwd")."""
    shape: Shape
    batch: int
    dtype: str
    mode: str
    channels: int = CHANNELS
    heads: int = HEADS

    @property
    def id(self) -> str:
        s = self.shape
        return (f"g{s.grid}w{s.window}s{s.shift}{'m' if s.masked else 'n'}"
                f"-b{self.batch}-{self.dtype}-{self.mode}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def head_dim(self) -> int:
        return self.channels // self.heads

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"]["name"] = self.shape.name
        d["id"] = self.id
        d["head_dim"] = self.head_dim
        return d


def grids_for_resolution(resolution: int) -> Tuple[int, int, int]:
    """Token grids (64-level, 32-level, 16-level) for an input image of ``resolution``.

    The 256 and 512 networks both reach a 64x64 grid at their native size; the 512 network run
    fully convolutionally on a multiple of 512 scales every grid by ``resolution / 512``.
    """
    if resolution == 256:
        return 64, 32, 16
    if resolution <= 0 or resolution % 512:
        raise ValueError(f"resolution must be 256 or a multiple of 512, got {resolution}")
    f = resolution // 512
    return 64 * f, 32 * f, 16 * f


def mat_attention_shapes(resolution: int = 512) -> List[Shape]:
    """The nine attention geometries of MAT's first stage (encoder layers masked, decoder not).

    tran.0 / tran.4: 64x64 grid, window 8, blocks with shift 0 and 4.
    tran.1 / tran.3: 32x32 grid, window 16, blocks with shift 0 and 8.
    tran.2: 16x16 grid, window 16 = the whole grid, shift forced to 0, no mask.
    """
    g64, g32, g16 = grids_for_resolution(resolution)
    shapes = []
    for grid, window, layers in ((g64, 8, ("tran.0", "tran.4")), (g32, 16, ("tran.1", "tran.3"))):
        for masked, layer in ((True, layers[0]), (False, layers[1])):
            for shift in (0, window // 2):
                shapes.append(Shape(layer, grid, window, shift, masked))
    shapes.append(Shape("tran.2", g16, 16, 0, False))
    return shapes


def reduced_shapes(resolution: int = 512) -> List[Shape]:
    """One shape per layer geometry, the costliest variant: what the CPU run measures."""
    g64, g32, g16 = grids_for_resolution(resolution)
    return [Shape("tran.0", g64, 8, 4, True), Shape("tran.1", g32, 16, 8, True), Shape("tran.2", g16, 16, 0, False)]


def attention_cases(shapes: Sequence[Shape], batches: Iterable[int], dtypes: Iterable[str],
                    modes: Iterable[str]) -> List[AttentionCase]:
    """The cross product, ordered shape-major so results of one shape sit together."""
    batches, dtypes, modes = list(batches), list(dtypes), list(modes)
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {d!r}")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {m!r}")
    for b in batches:
        if b <= 0:
            raise ValueError(f"batch must be positive, got {b}")
    return [AttentionCase(s, b, d, m) for s in shapes for d in dtypes for b in batches for m in modes]


def ideal_bytes(case: AttentionCase, mask_itemsize: Optional[int] = None) -> int:
    """Bytes a perfectly fused kernel must move to or from DRAM.

    Forward: read q, k, v and write out once (+ read the mask and write the updated mask).
    Backward (added for "fwdbwd"): read q, k, v and dout (+ the mask), write dq, dk, dv. Softmax
    statistics, shift biases and window indices are on-chip or recomputed, so they cost nothing.
    ``mask_itemsize`` defaults to the tokens' element size (the benchmark's masks use their dtype).
    """
    T = case.batch * case.shape.grid * case.shape.grid
    e = case.torch_dtype.itemsize
    m = (e if mask_itemsize is None else mask_itemsize) if case.shape.masked else 0
    tokens = T * case.channels * e
    fwd = 4 * tokens + 2 * T * m
    if case.mode == "fwd":
        return fwd
    return fwd + 7 * tokens + T * m


def flop_count(case: AttentionCase) -> int:
    """Matrix-multiply FLOPs: forward q k^T and p v (2 each per multiply-add); backward dv, dp,
    dq, dk (no recomputation counted)."""
    T = case.batch * case.shape.grid * case.shape.grid
    N = case.shape.tokens_per_window
    fwd = 4 * T * N * case.channels
    return fwd if case.mode == "fwd" else 3 * fwd


def make_inputs(case: AttentionCase, device, seed: int = 0):
    """q, k, v (B, G, G, C) and a mask (B, G, G, 1) in the case's dtype (None when unmasked).

    The mask is Bernoulli(1/2) with one window fully masked (the first window of the shifted
    frame), so the all-invalid path of the kernels is always exercised.
    """
    g = torch.Generator().manual_seed(seed)
    B, G, C = case.batch, case.shape.grid, case.channels
    dt = case.torch_dtype
    q, k, v = (torch.randn(B, G, G, C, generator=g).to(device=device, dtype=dt) for _ in range(3))
    mask = None
    if case.shape.masked:
        m = (torch.rand(B, G, G, 1, generator=g) > 0.5).float()
        ws, s = case.shape.window, case.shape.shift
        m[:, s:s + ws, s:s + ws] = 0.0
        mask = m.to(device=device, dtype=dt)
    return q, k, v, mask
