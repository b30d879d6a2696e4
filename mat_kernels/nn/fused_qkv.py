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


def project_qkv_fused(attn, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of ``attn`` (a :class:`mat_kernels.nn.WindowAttention`) for tokens x (..., C).

    Returns three (..., C) tensors; q and k are the halves of one (..., 2C) GEMM output (last
    dimension stride 1, token stride 2C). Same math as ``attn.project_qkv``:
    q = normalize(x) Wq^T * gain + bq, k likewise, v = x Wv^T * gain + bv.
    """
    C = x.shape[-1]
    wq, bq = attn.q.effective_weight_bias()
    wk, bk = attn.k.effective_weight_bias()
    xn = F.normalize(x, p=2.0, dim=-1)
    w = torch.cat([wq, wk], dim=0)  # (2C, C)
    flat = xn.reshape(-1, C)
    if bq is not None and bk is not None:
        qk = torch.addmm(torch.cat([bq, bk]), flat, w.t())
    else:  # the official layers always have biases; kept for completeness
        qk = flat.matmul(w.t())
        if bq is not None:
            qk[:, :C] += bq
        if bk is not None:
            qk[:, C:] += bk
    qk = qk.view(*x.shape[:-1], 2 * C)
    return qk[..., :C], qk[..., C:], attn.v(x)
