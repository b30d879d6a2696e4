"""Fused Triton kernels for MAT's shifted-window contextual attention (forward and backward).

Layout and indexing (no copies of q, k, v, the mask or the output):

* Tokens are read and written in the image layout (B, H, W, C) through strides; head ``h`` uses
  channels [h * head_dim, (h + 1) * head_dim). head_dim is padded inside the kernels to
  ``BLOCK_D`` (the next power of two >= 16, as ``tl.dot`` needs) with masked loads.
* The cyclic shift by -s and the window partition are index arithmetic: token (ty, tx) of window
  (wy, wx) of the rolled frame is image position ((wy*ws + ty + s) % H, (wx*ws + tx + s) % W).
  Writing the output to the same position un-shifts it.
* Biases: key validity (mask value 0 -> -100, 1 -> 0, any other value added as is) and, when
  s > 0, -100 between tokens of different shift regions; region ids come from the rolled-frame
  coordinates. Biases add (-200 possible). Finite biases keep all-hole windows equal to plain
  attention (softmax is shift invariant), never NaN. The rule compares the mask's own values
  (never rounded to q's dtype); a NaN mask value makes its window's outputs and new mask NaN,
  as in the official code (see :func:`mat_kernels.reference.window_attention`).

Forward: one program per (query block, window, head); keys are visited in blocks with an online
softmax (flash-attention style), so no (N, N) matrix exists anywhere and a 256-token window does
not have to fit in registers. Only the per-row log-sum-exp is stored for the backward. The
program of head 0 / query block 0 of each window also writes the updated mask (clamp of the
window's mask sum to [0, 1]) for every token of the window.

Backward (flash-attention-2 style, by recomputation): ``_window_attention_bwd_preprocess_kernel`` computes
delta = rowsum(dO * O); ``_window_attention_bwd_dkdv_kernel`` (one program per key block) loops over query blocks to
accumulate dk and dv; ``_window_attention_bwd_dq_kernel`` (one program per query block) loops over key blocks for dq.
No atomics, so the gradients are deterministic.

Saturated softmax: delta (preprocess kernel, elementwise product and tree sum) and dP (a
``tl.dot``) sum the same terms in different orders, so where the true dS is exactly 0 the kernels
return rounding noise, bounded as tests/triton/test_window_attention.py::test_saturated_softmax_backward
checks (README, "Notes on the Triton kernels").

Scores, softmax statistics and accumulators are fp32. ``tl.dot`` takes its inputs in the input
dtype (probabilities are cast to it before P @ V, as flash attention does); fp32 inputs use
``input_precision="ieee"`` so results do not depend on TF32. Casts to bf16 go through
``_common._cast``, which rounds to nearest even under the interpreter too (its own cast truncates)
and is a plain cast on a GPU. ``OFFS_64`` (chosen by the launchers, see
``_common.needs_int64_offsets``) makes token coordinates, channels and row-statistic indices int64
for tensors whose image spans >= 2**31 elements; otherwise they stay int32.
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from ._common import _cast, _clamp01, interpreting, needs_int64_offsets

# ----------------------------------------------------------------------------------------------
# index helpers (inlined)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _program_window(pid, num_heads, n_win, n_wx):
    """Decode a program id ((b * n_win) + window) * num_heads + head into the head, the batch
    index (int64, for offsets), the window's row and column, and whether the window is in the
    last window row / column (see _region)."""
    h = pid % num_heads
    bw = pid // num_heads
    b = (bw // n_win).to(tl.int64)
    w = bw % n_win
    wy = w // n_wx
    wx = w % n_wx
    return h, b, wy, wx, wy == n_win // n_wx - 1, wx == n_wx - 1


@triton.jit
def _token_yx(n, wy, wx, H, W, shift, WS: tl.constexpr, OFFS_64: tl.constexpr):
    """Image row/col of window tokens ``n`` (rolled-frame window (wy, wx), rolled back by shift).
    OFFS_64 (an image of some tensor spans >= 2**31 elements): as int64, so that every offset
    product with a stride is 64-bit; otherwise int32, as the common case compiles best."""
    y = (wy * WS + n // WS + shift) % H
    x = (wx * WS + n % WS + shift) % W
    if OFFS_64:
        return y.to(tl.int64), x.to(tl.int64)
    else:
        return y, x


@triton.jit
def _channels(h, offs_d, HEAD_DIM: tl.constexpr, OFFS_64: tl.constexpr):
    """Channel indices of head ``h`` (int64 under OFFS_64, see _token_yx)."""
    if OFFS_64:
        return h.to(tl.int64) * HEAD_DIM + offs_d
    else:
        return h * HEAD_DIM + offs_d


@triton.jit
def _row_base(pid, N: tl.constexpr, OFFS_64: tl.constexpr):
    """First index of program ``pid``'s rows in the (B * nW * heads, N) row statistics."""
    if OFFS_64:
        return pid.to(tl.int64) * N
    else:
        return pid * N


@triton.jit
def _region(n, last_y, last_x, shift, WS: tl.constexpr):
    """A code of MAT's shift region of window tokens ``n``, equal for two tokens of one window
    exactly when their 9-region ids are equal.

    MAT splits rolled-frame rows into [0, H-ws), [H-ws, H-s), [H-s, H) (columns alike). H and W
    are multiples of ws and 0 < s < ws, so within one window the row part can differ only in the
    last window row (wy == H/ws - 1), between local rows < ws-s and >= ws-s. The code is built
    from the local row/col alone (two int compares, no image coordinates kept live), which keeps
    register pressure down. ``last_y``/``last_x``: whether the window is in the last row/col."""
    ry = (last_y & ((n // WS) >= WS - shift)).to(tl.int32)
    rx = (last_x & ((n % WS) >= WS - shift)).to(tl.int32)
    return ry * 2 + rx


@triton.jit
def _key_bias(mv):
    """Official key-validity rule on the mask values as loaded, in the mask's own dtype (bool as
    uint8 0/1): 0 -> -100, 1 -> 0, others (NaN too) unchanged; the bias is returned in fp32.
    Comparing before any cast keeps the rule of the reference (a float64 1e-50 is not 0).
    -100 (here and for shift regions) is the official fill value, the reference's MASK_BIAS; a
    finite fill keeps windows without a valid key equal to plain attention instead of NaN."""
    if mv.dtype == tl.uint8:
        mv = mv.to(tl.float32)
    return tl.where(mv == 0.0, -100.0, tl.where(mv == 1.0, 0.0, mv)).to(tl.float32)


@triton.jit
def _dot(a, b, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr):
    """tl.dot with fp32 accumulation. UPCAST (only set under TRITON_INTERPRET=1 for bf16, whose
    interpreter dot is wrong) multiplies the same bf16-valued operands in fp32."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=DOT_PREC)



@triton.jit
def _tile_ptrs(P, b, y, x, ch, sb, sh, sw, sc):
    """Pointers of a (tokens, channels) tile of the (B, H, W, C) tensor ``P`` at image rows ``y``,
    columns ``x`` and channels ``ch`` of batch ``b``."""
    return P + b * sb + y[:, None] * sh + x[:, None] * sw + ch[None, :] * sc


@triton.jit
def _load_tiles(A, B, b, y, x, ch, ok, d_ok, sab, sah, saw, sac, sbb, sbh, sbw, sbc):
    """Two (tokens, channels) tiles at the same tokens and channels of A and B (zero where a
    token or channel is padding), and the mask of valid elements."""
    mask = ok[:, None] & d_ok[None, :]
    a = tl.load(_tile_ptrs(A, b, y, x, ch, sab, sah, saw, sac), mask=mask, other=0.0)
    bb = tl.load(_tile_ptrs(B, b, y, x, ch, sbb, sbh, sbw, sbc), mask=mask, other=0.0)
    return a, bb, mask


@triton.jit
def _token_ptrs(P, b, y, x, sb, sh, sw):
    """Pointers of the mask values (B, H, W[, 1]) of tokens at image rows ``y``, columns ``x``."""
    return P + b * sb + y * sh + x * sw


@triton.jit
def _block(pid_blk, pid, num_heads, n_win, n_wx, H, W, shift, WS: tl.constexpr, HEAD_DIM: tl.constexpr,
           BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, OFFS_64: tl.constexpr):
    """The tokens of block ``pid_blk`` of the window and head of program ``pid``: head, batch index,
    window row/col, last-row/col flags (see _region), token indices and their validity, channel
    validity and indices, image rows and columns."""
    h, b, wy, wx, last_y, last_x = _program_window(pid, num_heads, n_win, n_wx)
    offs = pid_blk * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    ok = offs < WS * WS
    ch = _channels(h, offs_d, HEAD_DIM, OFFS_64)
    y, x = _token_yx(offs, wy, wx, H, W, shift, WS, OFFS_64)
    return h, b, wy, wx, last_y, last_x, offs, ok, d_ok, ch, y, x


@triton.jit
def _mask_bias(M, b, y, x, ok, smb, smh, smw):
    """_key_bias of the mask values of tokens at image rows ``y``, columns ``x`` (fp32)."""
    return _key_bias(tl.load(_token_ptrs(M, b, y, x, smb, smh, smw), mask=ok, other=0))


@triton.jit
def _shift_bias(row_reg, offs_col, last_y, last_x, shift, WS: tl.constexpr):
    """-100 where a row token's region code ``row_reg`` differs from that of column tokens
    ``offs_col``, else 0: the (rows, cols) shift-region bias."""
    col_reg = _region(offs_col, last_y, last_x, shift, WS)
    return tl.where(row_reg[:, None] != col_reg[None, :], -100.0, 0.0)


@triton.jit
def _scores(q, k, q_reg, M, b, ky, kx, offs_n, n_ok, smb, smh, smw, last_y, last_x, shift, scale,
            WS: tl.constexpr, HAS_MASK: tl.constexpr, HAS_SHIFT: tl.constexpr, DOT_PREC: tl.constexpr,
            UPCAST: tl.constexpr):
    """Biased scores (queries x keys) of a query tile ``q`` against key tile ``k``: scale q k^T,
    plus the shift-region bias (q_reg: the queries' region codes) and the keys' mask bias."""
    s = _dot(q, tl.trans(k), DOT_PREC, UPCAST) * scale
    if HAS_SHIFT:
        s = s + _shift_bias(q_reg, offs_n, last_y, last_x, shift, WS)
    if HAS_MASK:
        s = s + _mask_bias(M, b, ky, kx, n_ok, smb, smh, smw)[None, :]
    return s


@triton.jit
def _key_block(start_n, q, q_reg, K, V, M, b, wy, wx, last_y, last_x, ch, d_ok,
               skb, skh, skw, skc, svb, svh, svw, svc, smb, smh, smw, H, W, shift, scale,
               WS: tl.constexpr, BLOCK_N: tl.constexpr, HAS_MASK: tl.constexpr, HAS_SHIFT: tl.constexpr,
               DOT_PREC: tl.constexpr, UPCAST: tl.constexpr, OFFS_64: tl.constexpr):
    """The key block of BLOCK_N tokens from ``start_n`` for a query tile ``q``: the keys'
    validity, the key and value tiles, and the biased scores (see _scores)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    n_ok = offs_n < WS * WS
    ky, kx = _token_yx(offs_n, wy, wx, H, W, shift, WS, OFFS_64)
    k, v, _kv_mask = _load_tiles(K, V, b, ky, kx, ch, n_ok, d_ok, skb, skh, skw, skc, svb, svh, svw, svc)
    s = _scores(q, k, q_reg, M, b, ky, kx, offs_n, n_ok, smb, smh, smw, last_y, last_x, shift, scale,
                WS, HAS_MASK, HAS_SHIFT, DOT_PREC, UPCAST)
    return n_ok, k, v, s


# ----------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _window_attention_fwd_kernel(Q, K, V, M, O, LSE, NM,
                sqb, sqh, sqw, sqc, skb, skh, skw, skc, svb, svh, svw, svc,
                smb, smh, smw, sob, soh, sow, soc, snb, snh, snw,
                H, W, n_wx, n_win, num_heads, shift, scale,
                WS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HAS_MASK: tl.constexpr,
                HAS_SHIFT: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
              OFFS_64: tl.constexpr):
    """Attention of one query block of one window and head.

    Q, K, V, O: (B, H, W, C), C = num_heads * HEAD_DIM, strided; M, NM: (B, H, W[, 1]) mask and
    updated mask (unused without HAS_MASK); LSE: (B * nW * num_heads, N) fp32, N = WS * WS.
    Grid: (cdiv(N, BLOCK_M), B * nW * num_heads), axis 1 = ((b * nW) + window) * num_heads + head.
    The program loads its BLOCK_M queries, runs an online softmax over the window's keys in
    blocks of BLOCK_N, and writes O and the rows' log-sum-exp; the program of head 0 and query
    block 0 also writes NM for all N tokens of the window.
    """
    N: tl.constexpr = WS * WS
    pid_m = tl.program_id(0)
    pid = tl.program_id(1)  # ((b * n_win) + window) * num_heads + head
    h, b, wy, wx, last_y, last_x, offs_m, m_ok, d_ok, ch, qy, qx = _block(
        pid_m, pid, num_heads, n_win, n_wx, H, W, shift, WS, HEAD_DIM, BLOCK_M, BLOCK_D, OFFS_64)
    q = tl.load(_tile_ptrs(Q, b, qy, qx, ch, sqb, sqh, sqw, sqc), mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    if HAS_SHIFT:
        q_reg = _region(offs_m, last_y, last_x, shift, WS)
    else:
        q_reg = 0  # not read without HAS_SHIFT

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, N, BLOCK_N):
        n_ok, k, v, s = _key_block(start_n, q, q_reg, K, V, M, b, wy, wx, last_y, last_x, ch, d_ok,
                                   skb, skh, skw, skc, svb, svh, svw, svc, smb, smh, smw,
                                   H, W, shift, scale, WS, BLOCK_N, HAS_MASK, HAS_SHIFT, DOT_PREC,
                                   UPCAST, OFFS_64)
        # padded keys are excluded outright (they are not tokens); every block has a real key
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(_cast(p, v.dtype), v, DOT_PREC, UPCAST)
        m_i = m_new

    out = acc / l_i[:, None]
    tl.store(_tile_ptrs(O, b, qy, qx, ch, sob, soh, sow, soc),
             _cast(out, O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    tl.store(LSE + _row_base(pid, N, OFFS_64) + offs_m, m_i + tl.log(l_i), mask=m_ok)

    if HAS_MASK:
        if (h == 0) & (pid_m == 0):
            # mask update: every token of the window gets clamp(sum, 0, 1) (bool: any). The sum
            # is a second pass over the window's mask (N values, one program per window) rather
            # than an accumulator in the attention loop, which would hold registers in every
            # program for the benefit of one.
            # Summed in fp32, in fp64 for fp64 masks (as torch.sum does); a NaN propagates
            # (clamp keeps NaN, as in the official code).
            ACC: tl.constexpr = tl.float64 if M.dtype.element_ty == tl.float64 else tl.float32
            msum = tl.zeros([BLOCK_N], ACC)
            for start_n in range(0, N, BLOCK_N):
                offs_n = start_n + tl.arange(0, BLOCK_N)
                ny, nx = _token_yx(offs_n, wy, wx, H, W, shift, WS, OFFS_64)
                msum += tl.load(_token_ptrs(M, b, ny, nx, smb, smh, smw), mask=offs_n < N, other=0).to(ACC)
            total = _clamp01(tl.sum(msum, 0))
            for start_n in range(0, N, BLOCK_N):
                offs_n = start_n + tl.arange(0, BLOCK_N)
                ny, nx = _token_yx(offs_n, wy, wx, H, W, shift, WS, OFFS_64)
                val = tl.zeros([BLOCK_N], ACC) + total
                tl.store(_token_ptrs(NM, b, ny, nx, snb, snh, snw), _cast(val, NM.dtype.element_ty),
                         mask=offs_n < N)


# ----------------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _window_attention_bwd_preprocess_kernel(O, DO, DELTA,
                    sob, soh, sow, soc, sdb, sdh, sdw, sdc,
                    H, W, n_wx, n_win, num_heads, shift,
                    WS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_D: tl.constexpr, OFFS_64: tl.constexpr):
    """delta[row] = sum_d dO[row, d] * O[row, d] in fp32, rows in (window, head, token) order.

    O, DO: (B, H, W, C); DELTA: (B * nW * num_heads, N) fp32. Grid as the forward's: one program
    per query block of BLOCK_M tokens, window and head."""
    N: tl.constexpr = WS * WS
    pid_m = tl.program_id(0)
    pid = tl.program_id(1)
    h, b, _wy, _wx, _last_y, _last_x, offs_m, m_ok, d_ok, ch, y, x = _block(
        pid_m, pid, num_heads, n_win, n_wx, H, W, shift, WS, HEAD_DIM, BLOCK_M, BLOCK_D, OFFS_64)
    o, do, _ld = _load_tiles(O, DO, b, y, x, ch, m_ok, d_ok, sob, soh, sow, soc, sdb, sdh, sdw, sdc)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + _row_base(pid, N, OFFS_64) + offs_m, delta, mask=m_ok)


@triton.jit
def _window_attention_bwd_dkdv_kernel(Q, K, V, M, DO, LSE, DELTA, DK, DV,
              sqb, sqh, sqw, sqc, skb, skh, skw, skc, svb, svh, svw, svc,
              smb, smh, smw, sdb, sdh, sdw, sdc, sgb, sgh, sgw, sgc,
              H, W, n_wx, n_win, num_heads, shift, scale,
              WS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HAS_MASK: tl.constexpr,
              HAS_SHIFT: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
              OFFS_64: tl.constexpr):
    """dk, dv of one key block of one window and head.

    Q, K, V, DO, DK, DV: (B, H, W, C), DK and DV sharing the strides (sgb, sgh, sgw, sgc); M:
    (B, H, W[, 1]); LSE, DELTA: (B * nW * num_heads, N) fp32. Grid: (cdiv(N, BLOCK_N),
    B * nW * num_heads). The program keeps its BLOCK_N keys and values, loops over the window's
    query blocks with transposed scores (keys x queries), recomputes P from LSE and accumulates
    dv = P^T dO and dk = scale dS^T q."""
    N: tl.constexpr = WS * WS
    pid_n = tl.program_id(0)
    pid = tl.program_id(1)
    h, b, wy, wx, last_y, last_x, offs_n, n_ok, d_ok, ch, ky, kx = _block(
        pid_n, pid, num_heads, n_win, n_wx, H, W, shift, WS, HEAD_DIM, BLOCK_N, BLOCK_D, OFFS_64)
    k, v, kv_mask = _load_tiles(K, V, b, ky, kx, ch, n_ok, d_ok, skb, skh, skw, skc, svb, svh, svw, svc)
    row = _row_base(pid, N, OFFS_64)  # this program's rows of the lse/delta statistics
    # per-key bias (rows of the transposed score tile)
    kbias = tl.zeros([BLOCK_N], tl.float32)
    if HAS_MASK:
        kbias = _mask_bias(M, b, ky, kx, n_ok, smb, smh, smw)
    if HAS_SHIFT:
        k_reg = _region(offs_n, last_y, last_x, shift, WS)

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start_m in range(0, N, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < N
        qy, qx = _token_yx(offs_m, wy, wx, H, W, shift, WS, OFFS_64)
        q, do, _q_mask = _load_tiles(Q, DO, b, qy, qx, ch, m_ok, d_ok, sqb, sqh, sqw, sqc, sdb, sdh, sdw, sdc)
        lse = tl.load(LSE + row + offs_m, mask=m_ok, other=0.0)
        delta = tl.load(DELTA + row + offs_m, mask=m_ok, other=0.0)
        st = _dot(k, tl.trans(q), DOT_PREC, UPCAST) * scale  # (BLOCK_N, BLOCK_M)
        if HAS_SHIFT:
            st = st + _shift_bias(k_reg, offs_m, last_y, last_x, shift, WS)
        st = st + kbias[:, None]
        pt = tl.exp(st - lse[None, :])
        pt = tl.where(n_ok[:, None] & m_ok[None, :], pt, 0.0)
        dv += _dot(_cast(pt, do.dtype), do, DOT_PREC, UPCAST)
        dpt = _dot(v, tl.trans(do), DOT_PREC, UPCAST)
        dst = pt * (dpt - delta[None, :])
        dk += _dot(_cast(dst, q.dtype), q, DOT_PREC, UPCAST)
    dk = dk * scale
    g_off = b * sgb + ky[:, None] * sgh + kx[:, None] * sgw + ch[None, :] * sgc
    tl.store(DK + g_off, _cast(dk, DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + g_off, _cast(dv, DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _window_attention_bwd_dq_kernel(Q, K, V, M, DO, LSE, DELTA, DQ,
            sqb, sqh, sqw, sqc, skb, skh, skw, skc, svb, svh, svw, svc,
            smb, smh, smw, sdb, sdh, sdw, sdc, sgb, sgh, sgw, sgc,
            H, W, n_wx, n_win, num_heads, shift, scale,
            WS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
            BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HAS_MASK: tl.constexpr,
            HAS_SHIFT: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
            OFFS_64: tl.constexpr):
    """dq of one query block of one window and head.

    Q, K, V, DO, DQ: (B, H, W, C), DQ with strides (sgb, sgh, sgw, sgc); M: (B, H, W[, 1]); LSE,
    DELTA: (B * nW * num_heads, N) fp32. Grid: (cdiv(N, BLOCK_M), B * nW * num_heads). The
    program keeps its BLOCK_M queries and output gradients, loops over the window's key blocks,
    recomputes P from LSE and accumulates dq = scale dS k."""
    N: tl.constexpr = WS * WS
    pid_m = tl.program_id(0)
    pid = tl.program_id(1)
    h, b, wy, wx, last_y, last_x, offs_m, m_ok, d_ok, ch, qy, qx = _block(
        pid_m, pid, num_heads, n_win, n_wx, H, W, shift, WS, HEAD_DIM, BLOCK_M, BLOCK_D, OFFS_64)
    q, do, q_mask = _load_tiles(Q, DO, b, qy, qx, ch, m_ok, d_ok, sqb, sqh, sqw, sqc, sdb, sdh, sdw, sdc)
    row = _row_base(pid, N, OFFS_64)
    lse = tl.load(LSE + row + offs_m, mask=m_ok, other=0.0)
    delta = tl.load(DELTA + row + offs_m, mask=m_ok, other=0.0)
    if HAS_SHIFT:
        q_reg = _region(offs_m, last_y, last_x, shift, WS)
    else:
        q_reg = 0  # not read without HAS_SHIFT

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, N, BLOCK_N):
        n_ok, k, v, s = _key_block(start_n, q, q_reg, K, V, M, b, wy, wx, last_y, last_x, ch, d_ok,
                                   skb, skh, skw, skc, svb, svh, svw, svc, smb, smh, smw,
                                   H, W, shift, scale, WS, BLOCK_N, HAS_MASK, HAS_SHIFT, DOT_PREC,
                                   UPCAST, OFFS_64)
        p = tl.exp(s - lse[:, None])
        p = tl.where(m_ok[:, None] & n_ok[None, :], p, 0.0)
        dp = _dot(do, tl.trans(v), DOT_PREC, UPCAST)
        ds = p * (dp - delta[:, None])
        dq += _dot(_cast(ds, k.dtype), k, DOT_PREC, UPCAST)
    dq = dq * scale
    tl.store(_tile_ptrs(DQ, b, qy, qx, ch, sgb, sgh, sgw, sgc), _cast(dq, DQ.dtype.element_ty), mask=q_mask)


# ----------------------------------------------------------------------------------------------
# configurations (a fixed table rather than run-time autotuning: results are reproducible, the
# interpreter stays fast, and every configuration can be compiled ahead of time, see aot_configs)
# ----------------------------------------------------------------------------------------------
def block_d(head_dim: int) -> int:
    """head_dim padded to the next power of two >= 16 (tl.dot needs every dimension >= 16)."""
    return max(16, triton.next_power_of_2(head_dim))


def _padded_tokens(window_size: int) -> int:
    return max(16, triton.next_power_of_2(window_size * window_size))


def device_config(window_size: int, head_dim: int, dtype: torch.dtype) -> dict:
    """Tile sizes and launch options for one shape on a GPU (the ones ``aot_configs`` compiles).

    Returns {"BLOCK_M", "BLOCK_N", "BLOCK_D", "num_warps", "num_stages"} for the forward and the
    backward preprocess, plus optional "dkdv" / "dq" dicts overriding BLOCK_M / BLOCK_N for those
    two backward kernels (see :func:`kernel_tiles`).

    fp16/bf16: query and key tiles of 64 tokens for head_dim <= 32 (MAT's 30: a whole 64-token
    window of window 8 in one tile; 256-token windows of window 16 in 4 x 4 tiles), 32 for
    head_dim <= 64 and 16 above, smaller for small windows.
    fp32, head_dim <= 32: forward 16 queries x 32 keys, dk/dv and dq 32 x 32; 16 x 16 tiles for
    head_dim > 32. The fp32 tiles are chosen per kernel so that every MAT config compiles without
    a spill on sm_80 and sm_90 under Triton 3.6 and 3.9 (the compile gate checks exactly these, see
    ``aot_configs``; README, "Notes on the Triton kernels").
    """
    NP = _padded_tokens(window_size)
    bd = block_d(head_dim)
    if dtype == torch.float32:
        if bd > 32:
            return dict(BLOCK_M=min(16, NP), BLOCK_N=min(16, NP), BLOCK_D=bd, num_warps=4, num_stages=2)
        return dict(BLOCK_M=min(16, NP), BLOCK_N=min(32, NP), BLOCK_D=bd, num_warps=4, num_stages=2,
                    dkdv=dict(BLOCK_M=min(32, NP), BLOCK_N=min(32, NP)),
                    dq=dict(BLOCK_M=min(32, NP), BLOCK_N=min(32, NP)))
    tile = 64 if bd <= 32 else (32 if bd <= 64 else 16)
    return dict(BLOCK_M=min(tile, NP), BLOCK_N=min(tile, NP), BLOCK_D=bd, num_warps=4, num_stages=2)


def kernel_tiles(cfg: dict, kernel: str) -> dict:
    """``cfg`` with the overrides of one kernel ("fwd", "pre", "dkdv" or "dq") applied."""
    out = {k: v for k, v in cfg.items() if k not in ("dkdv", "dq")}
    out.update(cfg.get(kernel, {}))
    return out


def interpreter_config(window_size: int, head_dim: int, dtype: torch.dtype) -> dict:
    """Under TRITON_INTERPRET=1 the cost is per program instance and loop iteration, not per
    register: one query tile per window, key tiles of 64 tokens (so 256-token windows still
    take the multi-block online-softmax path)."""
    NP = _padded_tokens(window_size)
    return dict(BLOCK_M=NP, BLOCK_N=min(64, NP), BLOCK_D=block_d(head_dim), num_warps=4, num_stages=2)


def kernel_config(window_size: int, head_dim: int, dtype: torch.dtype) -> dict:
    """The configuration the launchers use: :func:`device_config`, or
    :func:`interpreter_config` under TRITON_INTERPRET=1."""
    if interpreting():
        return interpreter_config(window_size, head_dim, dtype)
    return device_config(window_size, head_dim, dtype)


# "ieee" keeps fp32 products exact (no TF32); fp16/bf16 products are exact in fp32 either way.
DOT_PREC = "ieee"


def _upcast(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and interpreting()


def _geometry(q: torch.Tensor, window_size: int):
    B, H, W, C = q.shape
    n_wx = W // window_size
    n_win = (H // window_size) * n_wx
    return B, H, W, C, n_wx, n_win


def _mask_args(mask):
    """A (B,H,W[,1]) mask as something a kernel can load, plus its three strides."""
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)  # zero-copy; loads as 0/1
    return mask, mask.stride(0), mask.stride(1), mask.stride(2)


def window_attention_fwd(launch, q, k, v, mask, out, lse, new_mask, window_size, shift_size, num_heads, scale):
    """Launch the forward. ``launch(kernel)`` returns something indexable by the grid (the
    kernel itself in eager mode, ``wrap_triton(kernel)`` inside a ``triton_op``).

    out: (B, H, W, C), lse: (B * nW * heads, N) fp32, new_mask: like mask (ignored without mask).
    """
    B, H, W, C, n_wx, n_win = _geometry(q, window_size)
    head_dim = C // num_heads
    N = window_size * window_size
    cfg = kernel_config(window_size, head_dim, q.dtype)
    has_mask = mask is not None
    if has_mask:
        m, smb, smh, smw = _mask_args(mask)
        nm, snb, snh, snw = _mask_args(new_mask)
    else:
        m, smb, smh, smw = q, 0, 0, 0
        nm, snb, snh, snw = q, 0, 0, 0
    grid = (triton.cdiv(N, cfg["BLOCK_M"]), B * n_win * num_heads)
    offs_64 = needs_int64_offsets(q, k, v, mask, out, new_mask if has_mask else None, numel=lse.numel())
    launch(_window_attention_fwd_kernel)[grid](
        q, k, v, m, out, lse, nm,
        *q.stride(), *k.stride(), *v.stride(), smb, smh, smw, *out.stride(), snb, snh, snw,
        H, W, n_wx, n_win, num_heads, shift_size, scale,
        WS=window_size, HEAD_DIM=head_dim, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        BLOCK_D=cfg["BLOCK_D"], HAS_MASK=has_mask, HAS_SHIFT=shift_size > 0,
        DOT_PREC=DOT_PREC, UPCAST=_upcast(q.dtype), OFFS_64=offs_64, num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"])


def window_attention_bwd(launch, dout, q, k, v, mask, out, lse, delta, dq, dk, dv,
               window_size, shift_size, num_heads, scale):
    """Launch the three backward kernels. delta: (B * nW * heads, N) fp32 scratch;
    dq, dk, dv: (B, H, W, C), dk and dv with equal strides."""
    B, H, W, C, n_wx, n_win = _geometry(q, window_size)
    head_dim = C // num_heads
    N = window_size * window_size
    cfg = kernel_config(window_size, head_dim, q.dtype)
    assert dk.stride() == dv.stride()
    has_mask = mask is not None
    if has_mask:
        m, smb, smh, smw = _mask_args(mask)
    else:
        m, smb, smh, smw = q, 0, 0, 0
    rows = B * n_win * num_heads
    offs_64 = needs_int64_offsets(q, k, v, mask, out, dout, dq, dk, numel=lse.numel())
    launch(_window_attention_bwd_preprocess_kernel)[(triton.cdiv(N, cfg["BLOCK_M"]), rows)](
        out, dout, delta, *out.stride(), *dout.stride(), H, W, n_wx, n_win, num_heads, shift_size,
        WS=window_size, HEAD_DIM=head_dim, BLOCK_M=cfg["BLOCK_M"], BLOCK_D=cfg["BLOCK_D"],
        OFFS_64=offs_64, num_warps=cfg["num_warps"])
    common = dict(WS=window_size, HEAD_DIM=head_dim, BLOCK_D=cfg["BLOCK_D"], HAS_MASK=has_mask,
                  HAS_SHIFT=shift_size > 0, DOT_PREC=DOT_PREC, UPCAST=_upcast(q.dtype), OFFS_64=offs_64)
    t = kernel_tiles(cfg, "dkdv")
    launch(_window_attention_bwd_dkdv_kernel)[(triton.cdiv(N, t["BLOCK_N"]), rows)](
        q, k, v, m, dout, lse, delta, dk, dv,
        *q.stride(), *k.stride(), *v.stride(), smb, smh, smw, *dout.stride(), *dk.stride(),
        H, W, n_wx, n_win, num_heads, shift_size, scale, **common, BLOCK_M=t["BLOCK_M"],
        BLOCK_N=t["BLOCK_N"], num_warps=t["num_warps"], num_stages=t["num_stages"])
    t = kernel_tiles(cfg, "dq")
    launch(_window_attention_bwd_dq_kernel)[(triton.cdiv(N, t["BLOCK_M"]), rows)](
        q, k, v, m, dout, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), smb, smh, smw, *dout.stride(), *dq.stride(),
        H, W, n_wx, n_win, num_heads, shift_size, scale, **common, BLOCK_M=t["BLOCK_M"],
        BLOCK_N=t["BLOCK_N"], num_warps=t["num_warps"], num_stages=t["num_stages"])
