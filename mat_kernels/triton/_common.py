"""Small @triton.jit helpers shared by the kernel modules."""
import triton
import triton.language as tl


@triton.jit
def _round_to(v, DTYPE: tl.constexpr, ACC: tl.constexpr):
    """Round an ACC-precision value to DTYPE and back: how PyTorch stores the result of one
    fp16/bf16 op (a no-op for fp32/fp64)."""
    if DTYPE == tl.bfloat16:
        # Round to nearest even by hand: the GPU's cvt.rn.bf16.f32 does the same, while the
        # interpreter's own fp32 -> bf16 cast truncates, which would make the CPU tests lie.
        u = v.to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return u.to(tl.float32, bitcast=True)
    else:
        return v.to(DTYPE).to(ACC)


def interpreting() -> bool:
    """Whether this package's kernels run in Triton's interpreter: TRITON_INTERPRET=1 was set when
    they were defined (``triton.jit`` decides at decoration, so the kernels' type tells, not the
    environment of today)."""
    from triton.runtime.jit import JITFunction
    return not isinstance(_round_to, JITFunction)


@triton.jit
def _clamp01(v):
    """clamp(v, 0, 1) that keeps NaN, as torch.clamp does: two compares and selects (NaN fails
    both), rather than min/max, whose NaN handling differs between the GPU (drops it) and the
    interpreter, and whose NaN-propagating forms are not available for every float type."""
    return tl.where(v < 0.0, 0.0, tl.where(v > 1.0, 1.0, v))
