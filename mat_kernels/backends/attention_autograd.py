"""The autograd formula both fused attention backends register on their forward op.

Each fused backend has a forward op ``fwd(q, k, v, mask?, window_size, shift_size, num_heads,
scale) -> (out, lse, new_mask)`` and a backward op ``bwd(dout, q, k, v, mask?, out, lse,
window_size, shift_size, num_heads, scale) -> (dq, dk, dv)``. Gradients flow to q, k, v only:
the mask, the saved log-sum-exp and the new mask are not differentiable.
"""
from __future__ import annotations


def window_attention_autograd(bwd_op):
    """Return ``(backward, setup_context)`` for ``register_autograd`` of a forward op whose
    backward op is ``bwd_op``."""

    def setup_context(ctx, inputs, output):
        q, k, v, mask, window_size, shift_size, num_heads, scale = inputs
        out, lse, new_mask = output
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.geometry = (window_size, shift_size, num_heads, scale)
        ctx.mark_non_differentiable(lse, new_mask)

    def backward(ctx, dout, _dlse, _dnew_mask):
        if dout is None:
            return (None,) * 8
        q, k, v, mask, out, lse = ctx.saved_tensors
        dq, dk, dv = bwd_op(dout, q, k, v, mask, out, lse, *ctx.geometry)
        return dq, dk, dv, None, None, None, None, None

    return backward, setup_context
