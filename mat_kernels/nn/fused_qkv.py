"""MAT's q/k/v projections with q and k computed by one GEMM.

q and k both project the L2-normalised tokens, so their weights can be stacked into one
(2C, C) matrix: one GEMM (with the bias add fused into ``addmm``) reads the normalised tokens
once and writes a (..., 2C) tensor whose two halves are q and k. They are returned as views (no
copy): the Triton attention kernels take strided q/k/v, and the reference copies anyway. v
projects the raw tokens with ``attn.v`` as before. Parameter names and values are untouched
(the stacking happens at run time), so official state dicts still load with ``strict=True``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from ..ops import autocast_dtype


def normalize_tokens(x: torch.Tensor) -> torch.Tensor:
    """L2-normalised tokens, computed in (at least) fp32 and returned in x's dtype.

    Tokens of all-hole windows are exactly zero (a partial conv zeroes holes, zero-initialised
    biases keep them zero). F.normalize's eps (1e-12) is 0 in fp16, so an fp16 normalisation gives
    0/0 = NaN there; computed in fp32 the forward is fine but the gradient at a zero token is
    1/eps times the incoming one, which overflows when it is cast back to fp16. fp16 tokens
    therefore use eps = 2^-14 (fp16's smallest normal: no fp16 token below it has a meaningful
    direction). fp32 and fp64 inputs are normalised as they are (bit-identical to F.normalize);
    bf16 has fp32's range and keeps eps.
    """
    if x.dtype == torch.float16 or autocast_dtype(x.device) == torch.float16:
        # Under fp16 autocast the normalised fp32 tokens feed an fp16 GEMM, whose backward hands
        # the 1/eps-scaled gradient of a zero token to fp16: the same eps is needed there.
        return F.normalize(x.float(), p=2.0, dim=-1, eps=2.0 ** -14).to(x.dtype)
    if x.dtype == torch.bfloat16:
        return F.normalize(x.float(), p=2.0, dim=-1).to(x.dtype)
    return F.normalize(x, p=2.0, dim=-1)


def project_qkv_fused(attn, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of ``attn`` (a :class:`mat_kernels.nn.WindowAttention`) for tokens x (..., C).

    Returns three (..., C) tensors; q and k are the halves of one (..., 2C) GEMM output (last
    dimension stride 1, token stride 2C). Same math as ``attn.project_qkv``:
    q = normalize(x) Wq^T * gain + bq, k likewise, v = x Wv^T * gain + bv.
    """
    C = x.shape[-1]
    wq, bq = attn.q.effective_weight_bias()
    wk, bk = attn.k.effective_weight_bias()
    xn = normalize_tokens(x)
    w = torch.cat([wq, wk], dim=0)  # (2C, C)
    flat = xn.reshape(-1, C)
    if bq is not None and bk is not None and autocast_dtype(x.device) is None:
        qk = torch.addmm(torch.cat([bq, bk]), flat, w.t())
    elif bq is not None and bk is not None:
        # Under autocast as the official layers: a half GEMM, then the fp32 bias added in fp32
        # (addmm would round the bias and the sum to the autocast dtype).
        qk = flat.matmul(w.t()) + torch.cat([bq, bk])
    else:  # the official layers always have biases; kept for completeness
        qk = flat.matmul(w.t())
        if bq is not None:
            qk[:, :C] += bq
        if bk is not None:
            qk[:, C:] += bk
    qk = qk.view(*x.shape[:-1], 2 * C)
    return qk[..., :C], qk[..., C:], attn.v(x)
