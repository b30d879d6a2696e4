"""The implementations compared side by side, each built for one case.

Every peer computes MAT's window attention with the contract of
:func:`mat_kernels.reference.window_attention` -- ``(q, k, v, mask) -> (out, new_mask)`` on
(B, G, G, C) tokens -- and is assembled from the package's own reference pieces (partition,
reverse, key bias, shift bias, mask update), never from a copy of them:

1. ``reference``: the eager reference.
2. ``compile``: ``torch.compile`` of the reference.
3. ``sdpa``: the ``sdpa`` backend (:mod:`mat_kernels.sdpa`): the reference's shift and partition,
   then ``F.scaled_dot_product_attention`` with both ``-100`` biases as one additive float mask
   per window, shared by the heads.
4. ``flex``: the same partition, then compiled FlexAttention with a ``score_mod`` that derives
   the shift-region bias from coordinates and reads the key mask (head_dim zero-padded to a
   power of two when FlexAttention needs it).
5. ``triton`` / 6. ``cuda``: the fused kernels through ``mat_kernels.ops.window_attention``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .. import backends, ops
from .. import reference as ref
from ..reference.attention import windowed_mask_update
from .cases import AttentionCase

AttentionFn = Callable[..., Tuple[torch.Tensor, Optional[torch.Tensor]]]


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    compiles: bool  # uses torch.compile (costly to build; skipped by default on CPU)
    builder: Callable[[AttentionCase, torch.device], AttentionFn]
    backend: Optional[str] = None  # the mat_kernels backend it runs, if any

    def reasons(self, case: AttentionCase, device: torch.device) -> List[str]:
        """Why this peer cannot run ``case`` on ``device`` (empty when it can)."""
        if self.backend is not None:
            facts = dict(device=device, dtype=case.torch_dtype, head_dim=case.head_dim,
                         window_size=case.shape.window,
                         mask_dtype=case.torch_dtype if case.shape.masked else None)
            return backends.not_supported_reasons(self.backend, "window_attention", facts)
        if self.name == "flex":
            try:
                import torch.nn.attention.flex_attention  # noqa: F401
            except Exception as exc:
                return [f"torch.nn.attention.flex_attention is not importable: {exc}"]
        return []

    def build(self, case: AttentionCase, device: torch.device) -> AttentionFn:
        return self.builder(case, device)


def _geometry(case: AttentionCase):
    s = case.shape
    return s.grid, s.window, s.shift, s.tokens_per_window, (s.grid // s.window) ** 2


def _shift_in(case, q, k, v, mask):
    """The reference's shift and partition: q, k, v -> (B_, heads, N, d), mask -> (B_, N, 1)."""
    G, ws, s, N, nW = _geometry(case)
    C, h = q.shape[-1], case.heads
    qw, kw, vw = (ref.to_windows(t, ws, s).view(-1, N, h, C // h).transpose(1, 2) for t in (q, k, v))
    mw = None if mask is None else ref.to_windows(mask, ws, s)
    return qw, kw, vw, mw


def _shift_out(case, out, new_mw):
    """(B_, heads, N, d) attention output and (B_, N, 1) mask back to (B, G, G, *), un-rolled."""
    G, ws, s, N, nW = _geometry(case)
    B_, h, _, d = out.shape
    out = ref.from_windows(out.transpose(1, 2).reshape(B_, N, h * d), ws, s, G, G)
    new_mask = None if new_mw is None else ref.from_windows(new_mw, ws, s, G, G)
    return out, new_mask


def build_reference(case: AttentionCase, device) -> AttentionFn:
    G, ws, s, N, nW = _geometry(case)

    def run(q, k, v, mask):
        return ref.window_attention(q, k, v, mask, window_size=ws, shift_size=s, num_heads=case.heads)
    return run


def build_compile(case: AttentionCase, device) -> AttentionFn:
    G, ws, s, N, nW = _geometry(case)
    compiled = torch.compile(ref.window_attention, dynamic=False)

    def run(q, k, v, mask):
        return compiled(q, k, v, mask, window_size=ws, shift_size=s, num_heads=case.heads)
    return run


def flex_head_dim(head_dim: int) -> int:
    """FlexAttention's Triton templates want a power-of-two head_dim >= 16; MAT's is 30 -> 32."""
    return max(16, 1 << (head_dim - 1).bit_length())


def build_flex(case: AttentionCase, device, compile: bool = True) -> AttentionFn:
    from torch.nn.attention.flex_attention import flex_attention
    G, ws, s, N, nW = _geometry(case)
    nWx = G // ws
    d = case.head_dim
    pad = flex_head_dim(d) - d
    fa = torch.compile(flex_attention, dynamic=False) if compile else flex_attention

    def region(idx, w):
        # Region id (3 * row part + column part) of token idx of window w in the rolled grid;
        # parts split at G - ws and G - s, as in the shift mask of the reference.
        r = (w // nWx) * ws + idx // ws
        c = (w % nWx) * ws + idx % ws
        rp = (r >= G - ws).to(torch.int32) + (r >= G - s).to(torch.int32)
        cp = (c >= G - ws).to(torch.int32) + (c >= G - s).to(torch.int32)
        return rp * 3 + cp

    def run(q, k, v, mask):
        qw, kw, vw, mw = _shift_in(case, q, k, v, mask)
        if pad:
            # Zero channels change neither q.k nor the kept part of p.v.
            qw, kw, vw = (F.pad(t, (0, pad)) for t in (qw, kw, vw))
        keys = None if mw is None else mw.view(-1, N).to(q.dtype)

        def score_mod(score, b, h, q_idx, kv_idx):
            if s:
                w = b % nW
                score = score - 100.0 * (region(q_idx, w) != region(kv_idx, w)).to(score.dtype)
            if keys is not None:
                m = keys[b, kv_idx].to(score.dtype)
                # The reference's key rule: 0 -> -100, 1 -> 0, any other value added as it is.
                score = score + torch.where(m == 0, -100.0, torch.where(m == 1, 0.0, m))
            return score

        out = fa(qw, kw, vw, score_mod=score_mod if (s or keys is not None) else None, scale=d ** -0.5)
        if pad:
            out = out[..., :d]
        new_mw = None if mw is None else windowed_mask_update(mw)
        return _shift_out(case, out, new_mw)
    return run


def _build_backend(name: str):
    def build(case: AttentionCase, device) -> AttentionFn:
        G, ws, s, N, nW = _geometry(case)

        def run(q, k, v, mask):
            return ops.window_attention(q, k, v, mask, window_size=ws, shift_size=s, num_heads=case.heads,
                                        backend=name)
        return run
    return build


# The sdpa backend (mat_kernels.sdpa): the reference's shift and partition, both -100 biases as one
# additive float mask per window shared by the heads, F.scaled_dot_product_attention.
build_sdpa = _build_backend("sdpa")

PEERS: Dict[str, Peer] = {p.name: p for p in (
    Peer("reference", "(1) eager reference", False, build_reference),
    Peer("compile", "(2) torch.compile(reference)", True, build_compile),
    Peer("sdpa", "(3) SDPA backend", False, build_sdpa, backend="sdpa"),
    Peer("flex", "(4) FlexAttention (compiled)", True, build_flex),
    Peer("triton", "(5) Triton", False, _build_backend("triton"), backend="triton"),
    Peer("cuda", "(6) CUDA extension", False, _build_backend("cuda"), backend="cuda"),
)}
PEER_NAMES = tuple(PEERS)


def select(names) -> List[Peer]:
    """Peers by name, in the canonical order; unknown names raise naming the choices."""
    names = list(names)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; choose from {list(PEERS)}")
    return [PEERS[n] for n in PEER_NAMES if n in names]
