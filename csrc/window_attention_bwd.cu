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

// One block: window blockIdx.x, head blockIdx.y, query rows [blockIdx.z * kRows, + kRows). Each
// group of G lanes holds one query's q and grad_out, stores its delta, streams the window's keys
// through shared tiles (k, v, key bias, shift region) and stores dq.
template <int D>
__global__ void __launch_bounds__(kThreads) window_attention_bwd_dq_kernel(const WindowAttentionParams p) {
    constexpr int P = Tiling<D>::P;
    __shared__ KeyTiles<D> kt;

    const RowSlot r = row_slot<D>(p);
    const int N = r.N, hd = p.head_dim;

    float qr[P], dor[P], dq[P];
    load_row<D>(qr, p.q, p.q_stride, r, p);
    load_row<D>(dor, p.grad_out, p.grad_out_stride, r, p);
    float delta = 0.0f;
#pragma unroll
    for (int i = 0; i < P; ++i) {
        const int d = i * Tiling<D>::G + r.g;
        const float oi = d < hd ? load_contig(p.fwd_out, p, r.id.b, r.pos, r.h * hd + d) : 0.0f;
        delta = fmaf(dor[i], oi, delta);
        dq[i] = 0.0f;
    }
    delta = group_sum<Tiling<D>::G>(delta);
    const int64_t stat = row_stat_index(p, r.id.b, r.h, r.pos.y, r.pos.x);
    const float lse = p.lse[stat];
    if (r.active && r.g == 0) p.delta[stat] = delta;

    for (int k0 = 0; k0 < N; k0 += kTile) {
        load_key_tiles<D>(kt, r, k0, p);
#pragma unroll 4
        for (int j = 0; j < kTile; ++j) {
            float dot, dp;
            row_dot2<D>(qr, kt.k[j], dor, kt.v[j], r.g, &dot, &dp);
            const float sc = dot * p.scale + shift_bias(r.region, kt.region[j]) + kt.bias[j];
            const float pij = (k0 + j < N) ? expf(sc - lse) : 0.0f;
            row_axpy<D>(dq, pij * (dp - delta), kt.k[j], r.g);
        }
    }

    if (r.active) store_row<D>(p.dq, dq, p.scale, r, p);
}

// One block: window blockIdx.x, head blockIdx.y, key rows [blockIdx.z * kRows, + kRows). Each
// group of G lanes holds one key's k and v, streams the window's queries through shared tiles
// (q, grad_out, lse, delta, shift region) and stores dk and dv.
template <int D>
__global__ void __launch_bounds__(kThreads) window_attention_bwd_dkdv_kernel(const WindowAttentionParams p) {
    constexpr int P = Tiling<D>::P;
    __shared__ float qs[kTile][D];
    __shared__ float dos[kTile][D];
    __shared__ float qlse[kTile];
    __shared__ float qdelta[kTile];
    __shared__ int qregion[kTile];

    const RowSlot r = row_slot<D>(p);
    const int N = r.N;
    const float kbias = token_key_bias(p, r.id.b, r.pos);

    float kr[P], vr[P], dk[P], dv[P];
    load_row<D>(kr, p.k, p.k_stride, r, p);
    load_row<D>(vr, p.v, p.v_stride, r, p);
#pragma unroll
    for (int c = 0; c < P; ++c) {
        dk[c] = 0.0f;
        dv[c] = 0.0f;
    }

    for (int q0 = 0; q0 < N; q0 += kTile) {
        __syncthreads();
        load_tile<kTile>(qs, p.q, p.q_stride, r.id, r.h, q0, p);
        load_tile<kTile>(dos, p.grad_out, p.grad_out_stride, r.id, r.h, q0, p);
        for (int i = threadIdx.x; i < kTile; i += kThreads) {
            const int tq = q0 + i;
            if (tq < N) {
                const Pos pos = token_pos(r.id, tq, p);
                const int64_t stat = row_stat_index(p, r.id.b, r.h, pos.y, pos.x);
                qlse[i] = p.lse[stat];
                qdelta[i] = p.delta[stat];
                qregion[i] = token_region(r.id.wy, r.id.wx, tq, p.H, p.W, p.window_size, p.shift_size);
            } else {
                qlse[i] = INFINITY;  // exp(s - inf) = 0: padded queries contribute nothing
                qdelta[i] = 0.0f;
                qregion[i] = 0;
            }
        }
        __syncthreads();
#pragma unroll 4
        for (int i = 0; i < kTile; ++i) {
            float dot, dp;
            row_dot2<D>(kr, qs[i], vr, dos[i], r.g, &dot, &dp);
            const float sc = dot * p.scale + shift_bias(qregion[i], r.region) + kbias;
            const float pij = expf(sc - qlse[i]);
            row_axpy<D>(dv, pij, dos[i], r.g);
            row_axpy<D>(dk, pij * (dp - qdelta[i]), qs[i], r.g);
        }
    }

    if (r.active) {
        store_row<D>(p.dk, dk, p.scale, r, p);
        store_row<D>(p.dv, dv, 1.0f, r, p);
    }
}

}  // namespace

const char* launch_window_attention_bwd(const WindowAttentionParams& p, CUstream_st* stream) {
    bool empty = false;
    if (const char* err = check_attention_launch(p, &empty); err != nullptr || empty) return err;
    return visit_padded_head_dim(p.head_dim, [&](auto d) -> const char* {
        constexpr int D = decltype(d)::value;
        const dim3 grid = attention_grid(p, Tiling<D>::kRows);
        MK_LAUNCH(window_attention_bwd_dq_kernel<D>, grid, kThreads, stream, p);
        if (const char* err = last_launch_error()) return err;
        // Same stream: the dk/dv kernel starts after every delta has been written.
        MK_LAUNCH(window_attention_bwd_dkdv_kernel<D>, grid, kThreads, stream, p);
        return last_launch_error();
    });
}

}  // namespace mat_kernels
