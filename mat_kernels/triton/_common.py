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

