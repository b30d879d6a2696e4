"""Small @triton.jit helpers shared by the kernel modules."""
import triton
import triton.language as tl


def _probe():
    pass


def _jit_interprets() -> bool:
    """Whether ``triton.jit`` makes interpreted functions in this process (TRITON_INTERPRET=1 when
    the kernel modules are imported; the compile gate's workers run without it)."""
    from triton.runtime.jit import JITFunction
    return not isinstance(triton.jit(_probe), JITFunction)


# A global constexpr (Triton folds it at compile time): the interpreter-only rounding below is
# compiled out of GPU kernels, which keep the plain conversions (cvt.rn on the device).
INTERPRETED = tl.constexpr(_jit_interprets())


@triton.jit
def _round_to(v, DTYPE: tl.constexpr, ACC: tl.constexpr):
    """Round an ACC-precision value to DTYPE and back: how PyTorch stores the result of one
    fp16/bf16 op (a no-op for fp32/fp64)."""
    if INTERPRETED and DTYPE == tl.bfloat16:
        # Round to nearest even by hand: the GPU's cvt.rn.bf16.f32 does so, while the
        # interpreter's own fp32 -> bf16 cast truncates, which would make the CPU tests lie.
        u = v.to(tl.float32).to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return u.to(tl.float32, bitcast=True).to(ACC)
    else:
        return v.to(DTYPE).to(ACC)


@triton.jit
def _cast(v, DTYPE: tl.constexpr):
    """``v.to(DTYPE)`` for fp32 values, rounding to nearest even also for bf16 under the
    interpreter (see _round_to); on a GPU exactly ``v.to(DTYPE)``."""
    if INTERPRETED and DTYPE == tl.bfloat16:
        return _round_to(v, DTYPE, tl.float32).to(DTYPE)  # exact: already a bf16 value
    else:
        return v.to(DTYPE)


def interpreting() -> bool:
    """Whether this package's kernels run in Triton's interpreter: TRITON_INTERPRET=1 was set when
    they were defined (``triton.jit`` decides at decoration, so the kernels' type tells, not the
    environment of today)."""
    return bool(INTERPRETED)


INT32_LIMIT = 2 ** 31


def image_span(t) -> int:
    """Largest element offset of ``t`` within one batch entry: sum of (size - 1) * stride over
    every dim but the first (0 for a tensor with an empty dim)."""
    if t is None or t.numel() == 0:
        return 0
    return sum((n - 1) * abs(s) for n, s in zip(t.shape[1:], t.stride()[1:]))


def needs_int64_offsets(*tensors, numel: int = 0) -> bool:
    """Whether a kernel must compute element offsets in 64 bits (its ``OFFS_64`` constexpr).

    The kernels always make the batch offset 64-bit (b is cast once per program) and Triton passes
    strides >= 2**31 as int64 by itself; what overflows is a product of an int32 coordinate and an
    int32 stride, or a flat index, past 2**31 - 1. That happens when one batch entry of some tensor
    spans 2**31 elements or more (one huge image, or a slice of a huge fused tensor), or when a
    flat index (``numel``, e.g. of the per-row statistics) reaches 2**31. Otherwise the 32-bit path
    is taken, which compiles exactly as before."""
    return numel >= INT32_LIMIT or any(image_span(t) >= INT32_LIMIT for t in tensors if t is not None)


@triton.jit
def _clamp01(v):
    """clamp(v, 0, 1) that keeps NaN, as torch.clamp does: two compares and selects (NaN fails
    both), rather than min/max, whose NaN handling differs between the GPU (drops it) and the
    interpreter, and whose NaN-propagating forms are not available for every float type."""
    return tl.where(v < 0.0, 0.0, tl.where(v > 1.0, 1.0, v))
