// Backward of the window attention by recomputation, and its launcher.
//
// With s_ij = scale * q_i.k_j + shift_bias_ij + key_bias_j, P_ij = exp(s_ij - lse_i) (lse saved by
// the forward), dO the incoming gradient and delta_i = sum_d dO_id * O_id:
//   dV_j = sum_i P_ij dO_i
//   dS_ij = P_ij (dO_i . v_j - delta_i)
//   dQ_i = scale * sum_j dS_ij k_j,   dK_j = scale * sum_i dS_ij q_i
// Two kernels on the same stream:
//   window_attention_bwd_dq_kernel<D>    rows = queries; computes delta (stored) and dq
//     grid (B * nW, heads, ceil(N / kRows)), block kThreads
//   window_attention_bwd_dkdv_kernel<D>  rows = keys; reads delta; computes dk and dv
//     grid (B * nW, heads, ceil(N / kRows)), block kThreads
// Shapes: q, k, v, grad_out (B, H, W, C) strided; out, dq, dk, dv (B, H, W, C) contiguous;
// lse, delta (B, heads, H, W) float32. The mask receives no gradient (it is a 0/1 validity map).
#include "attention_common.cuh"
#include "launchers.h"

namespace mat_kernels {
namespace {

template <int D>
__global__ void __launch_bounds__(kThreads) window_attention_bwd_dq_kernel(const WindowAttentionParams p) {
    constexpr int G = Tiling<D>::G, P = Tiling<D>::P, ROWS = Tiling<D>::kRows;
    __shared__ float ks[kTile][D];
    __shared__ float vs[kTile][D];
    __shared__ float kbias[kTile];
    __shared__ int kregion[kTile];

    const int ws = p.window_size, s = p.shift_size, N = ws * ws, hd = p.head_dim;
    const WindowId id = window_id(blockIdx.x, p.H, p.W, ws);
    const int h = blockIdx.y;
    const int row = threadIdx.x / G, g = threadIdx.x % G;
    const int t_raw = blockIdx.z * ROWS + row;
    const bool active = t_raw < N;
    const int t = active ? t_raw : N - 1;  // inactive rows compute on a real token, store nothing
    const Pos qpos = token_pos(id, t, p);
    const int qregion = token_region(id.wy, id.wx, t, p.H, p.W, ws, s);

    float qr[P], dor[P], dq[P];
    float delta = 0.0f;
#pragma unroll
    for (int i = 0; i < P; ++i) {
        const int d = i * G + g;
        const bool in = d < hd;
        qr[i] = in ? load_elem(p.q, p.dtype, offset4(p.q_stride, id.b, qpos.y, qpos.x, h * hd + d)) : 0.0f;
        dor[i] = in ? load_elem(p.grad_out, p.dtype, offset4(p.grad_out_stride, id.b, qpos.y, qpos.x, h * hd + d)) : 0.0f;
        const float oi = in ? load_contig(p.fwd_out, p, id.b, qpos, h * hd + d) : 0.0f;
        delta = fmaf(dor[i], oi, delta);
        dq[i] = 0.0f;
    }
    delta = group_sum<G>(delta);
    const int64_t stat = row_stat_index(p, id.b, h, qpos.y, qpos.x);
    const float lse = p.lse[stat];
    if (active && g == 0) p.delta[stat] = delta;

    for (int k0 = 0; k0 < N; k0 += kTile) {
        __syncthreads();
        load_tile<D>(ks, p.k, p.k_stride, id, h, k0, p);
        load_tile<D>(vs, p.v, p.v_stride, id, h, k0, p);
        for (int j = threadIdx.x; j < kTile; j += kThreads) {
            const int tk = k0 + j;
            if (tk < N) {
                kbias[j] = token_key_bias(p, id.b, token_pos(id, tk, p));
                kregion[j] = token_region(id.wy, id.wx, tk, p.H, p.W, ws, s);
            } else {
                kbias[j] = 0.0f;
                kregion[j] = 0;
            }
        }
        __syncthreads();
#pragma unroll 4
        for (int j = 0; j < kTile; ++j) {
            float dot = 0.0f, dp = 0.0f;
#pragma unroll
            for (int i = 0; i < P; ++i) {
                dot = fmaf(qr[i], ks[j][i * G + g], dot);
                dp = fmaf(dor[i], vs[j][i * G + g], dp);
            }
            dot = group_sum<G>(dot);
            dp = group_sum<G>(dp);
            const float sc = dot * p.scale + shift_bias(qregion, kregion[j]) + kbias[j];
            const float pij = (k0 + j < N) ? expf(sc - lse) : 0.0f;
            const float ds = pij * (dp - delta);
#pragma unroll
            for (int i = 0; i < P; ++i) dq[i] = fmaf(ds, ks[j][i * G + g], dq[i]);
        }
    }

    if (active) {
#pragma unroll
        for (int i = 0; i < P; ++i) {
            const int d = i * G + g;
            if (d < hd) store_elem(p.dq, p.dtype, offset_contig(p, id.b, qpos.y, qpos.x, h * hd + d), dq[i] * p.scale);
        }
    }
}

template <int D>
__global__ void __launch_bounds__(kThreads) window_attention_bwd_dkdv_kernel(const WindowAttentionParams p) {
    constexpr int G = Tiling<D>::G, P = Tiling<D>::P, ROWS = Tiling<D>::kRows;
    __shared__ float qs[kTile][D];
    __shared__ float dos[kTile][D];
    __shared__ float qlse[kTile];
    __shared__ float qdelta[kTile];
    __shared__ int qregion[kTile];

    const int ws = p.window_size, s = p.shift_size, N = ws * ws, hd = p.head_dim;
    const WindowId id = window_id(blockIdx.x, p.H, p.W, ws);
    const int h = blockIdx.y;
    const int row = threadIdx.x / G, g = threadIdx.x % G;
    const int t_raw = blockIdx.z * ROWS + row;
    const bool active = t_raw < N;
    const int t = active ? t_raw : N - 1;
    const Pos kpos = token_pos(id, t, p);
    const int kregion = token_region(id.wy, id.wx, t, p.H, p.W, ws, s);
    const float kbias = token_key_bias(p, id.b, kpos);

    float kr[P], vr[P], dk[P], dv[P];
#pragma unroll
    for (int i = 0; i < P; ++i) {
        const int d = i * G + g;
        const bool in = d < hd;
        kr[i] = in ? load_elem(p.k, p.dtype, offset4(p.k_stride, id.b, kpos.y, kpos.x, h * hd + d)) : 0.0f;
        vr[i] = in ? load_elem(p.v, p.dtype, offset4(p.v_stride, id.b, kpos.y, kpos.x, h * hd + d)) : 0.0f;
        dk[i] = 0.0f;
        dv[i] = 0.0f;
    }

    for (int q0 = 0; q0 < N; q0 += kTile) {
        __syncthreads();
        load_tile<D>(qs, p.q, p.q_stride, id, h, q0, p);
        load_tile<D>(dos, p.grad_out, p.grad_out_stride, id, h, q0, p);
        for (int i = threadIdx.x; i < kTile; i += kThreads) {
            const int tq = q0 + i;
            if (tq < N) {
                const Pos pos = token_pos(id, tq, p);
                const int64_t stat = row_stat_index(p, id.b, h, pos.y, pos.x);
                qlse[i] = p.lse[stat];
                qdelta[i] = p.delta[stat];
                qregion[i] = token_region(id.wy, id.wx, tq, p.H, p.W, ws, s);
            } else {
                qlse[i] = INFINITY;  // exp(s - inf) = 0: padded queries contribute nothing
                qdelta[i] = 0.0f;
                qregion[i] = 0;
            }
        }
        __syncthreads();
#pragma unroll 4
        for (int i = 0; i < kTile; ++i) {
            float dot = 0.0f, dp = 0.0f;
#pragma unroll
            for (int c = 0; c < P; ++c) {
                dot = fmaf(kr[c], qs[i][c * G + g], dot);
                dp = fmaf(vr[c], dos[i][c * G + g], dp);
            }
            dot = group_sum<G>(dot);
            dp = group_sum<G>(dp);
            const float sc = dot * p.scale + shift_bias(qregion[i], kregion) + kbias;
            const float pij = expf(sc - qlse[i]);
            const float ds = pij * (dp - qdelta[i]);
#pragma unroll
            for (int c = 0; c < P; ++c) {
                dv[c] = fmaf(pij, dos[i][c * G + g], dv[c]);
                dk[c] = fmaf(ds, qs[i][c * G + g], dk[c]);
            }
        }
    }

    if (active) {
#pragma unroll
        for (int c = 0; c < P; ++c) {
            const int d = c * G + g;
            if (d < hd) {
                const int64_t off = offset_contig(p, id.b, kpos.y, kpos.x, h * hd + d);
                store_elem(p.dk, p.dtype, off, dk[c] * p.scale);
                store_elem(p.dv, p.dtype, off, dv[c]);
            }
        }
    }
}

template <int D>
const char* launch_bwd(const WindowAttentionParams& p, cudaStream_t stream) {
    const int N = p.window_size * p.window_size;
    const long long windows = static_cast<long long>(p.B) * (p.H / p.window_size) * (p.W / p.window_size);
    const dim3 grid(static_cast<unsigned>(windows), p.num_heads, (N + Tiling<D>::kRows - 1) / Tiling<D>::kRows);
    MK_LAUNCH(window_attention_bwd_dq_kernel<D>, grid, kThreads, stream, p);
    if (const char* err = last_launch_error()) return err;
    // Same stream: the dk/dv kernel starts after every delta has been written.
    MK_LAUNCH(window_attention_bwd_dkdv_kernel<D>, grid, kThreads, stream, p);
    return last_launch_error();
}

}  // namespace

const char* launch_window_attention_bwd(const WindowAttentionParams& p, CUstream_st* stream) {
    if (p.head_dim < 1 || p.head_dim > kMaxHeadDim) return "head_dim out of the supported range";
    if (p.window_size * p.window_size > kMaxWindowTokens) return "window_size**2 exceeds the supported maximum";
    const long long windows = static_cast<long long>(p.B) * (p.H / p.window_size) * (p.W / p.window_size);
    if (windows < 1) return nullptr;
    if (windows > 0x7fffffffLL) return "too many windows for one launch";
    if (p.dtype != DType::kFloat32 && p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16)
        return "unsupported dtype for the attention kernels";
    // head_dim is padded to the next tile width; the kernels zero-fill the extra dims.
    if (p.head_dim <= 32) return launch_bwd<32>(p, stream);
    if (p.head_dim <= 64) return launch_bwd<64>(p, stream);
    return launch_bwd<128>(p, stream);
}

}  // namespace mat_kernels
