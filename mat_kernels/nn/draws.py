"""The generator's random draws, as one ``torch.library`` op that compilers leave alone.

MAT's generator draws from torch's global RNG in every forward: two Bernoulli(0.5) {0, 1} maps
(``F.dropout(ones * 0.5, training=True)``, in eval mode too) and, with ``noise_mode="random"``,
``randn(B, 1, H, W)`` per noise layer. A seed gives the released code's images only if each draw
runs the same eager call, on a tensor of the same memory order, in the same sequence.

``mat_kernels::seeded_draw`` is that eager call behind an opaque op: torch.compile's inductor
does not replace it with its own RNG (as it does ``dropout``/``randn``, unless the global
``torch._inductor.config.fallback_random`` is set), so a seed gives the same maps and noise
compiled or not, without any global setting. It carries ``torch.Tag.nondeterministic_seeded``
(never CSE'd or constant-folded; the partitioner saves it instead of recomputing it in the
backward), and it takes the activation the draw follows as its first input: every draw then
depends, through that input, on the result of the previous one, which fixes their order in any
compiled schedule. The maps and the noise take no gradient.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F

KINDS = ("bernoulli_half", "normal")


def _check(kind: str, size: Sequence[int], order: Sequence[int]) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if sorted(order) != list(range(len(size))):
        raise ValueError(f"order must be a permutation of range({len(size)}) (dimensions of size {list(size)}, "
                         f"outermost in memory first), got {list(order)}")


@torch.library.custom_op("mat_kernels::seeded_draw", mutates_args=(),
                         tags=(torch.Tag.nondeterministic_seeded,))
def _seeded_draw(after: torch.Tensor, kind: str, size: List[int], order: List[int],
                 dtype: torch.dtype) -> torch.Tensor:
    _check(kind, size, order)
    stored = [size[d] for d in order]
    if kind == "bernoulli_half":
        # The released call: dropout fills its mask in the memory order of its input.
        drawn = F.dropout(torch.ones(stored, device=after.device, dtype=dtype) * 0.5, training=True)
    else:
        # Drawn in fp32 whatever dtype, so a seed gives the same noise in every precision.
        drawn = torch.randn(stored, device=after.device).to(dtype)
    inverse = sorted(range(len(order)), key=lambda d: order[d])
    return drawn.permute(inverse).contiguous()


@_seeded_draw.register_fake
def _(after, kind, size, order, dtype):
    _check(kind, size, order)
    return after.new_empty(size, dtype=dtype)


def _setup_context(ctx, inputs, output):
    pass


def _backward(ctx, grad):
    return None, None, None, None, None


_seeded_draw.register_autograd(_backward, setup_context=_setup_context)


def seeded_draw(after: torch.Tensor, kind: str, size: Sequence[int], order: Sequence[int] = None,
                dtype: torch.dtype = None) -> torch.Tensor:
    """A ``size`` tensor (contiguous) drawn from torch's global RNG on ``after``'s device.

    kind: "bernoulli_half" = ``F.dropout(ones * 0.5, training=True)`` (values 0 and 1),
    "normal" = ``randn`` in float32. ``order``: the dimensions in memory order, outermost first,
    of the tensor the values are drawn into (default: contiguous), since both fill memory in order.
    ``dtype``: of the result (default ``after.dtype``). ``after``: the activation this draw follows
    (its values are not read); it orders the draws under torch.compile."""
    if not isinstance(after, torch.Tensor):
        raise TypeError(f"after must be a tensor (the activation the draw follows), got {type(after).__name__}")
    size = list(size)
    order = list(range(len(size))) if order is None else [int(d) for d in order]
    _check(kind, size, order)
    return _seeded_draw(after.detach(), kind, size, order, after.dtype if dtype is None else dtype)


def bernoulli_map(after: torch.Tensor, size: Sequence[int], order: Sequence[int] = None) -> torch.Tensor:
    """MAT's always-on Bernoulli(0.5) {0, 1} map in ``after``'s dtype (see :func:`seeded_draw`)."""
    return seeded_draw(after, "bernoulli_half", size, order)


def normal_noise(after: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``randn(size)`` drawn in float32, returned in ``after``'s dtype (see :func:`seeded_draw`)."""
    return seeded_draw(after, "normal", size)
