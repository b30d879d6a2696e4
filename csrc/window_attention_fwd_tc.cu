// Tensor-core (WMMA) forward of the window attention for float16 / bfloat16, and its launcher.
//
// Kernel: window_attention_fwd_tc_kernel<T, D>, T = __half or __nv_bfloat16, D = 32, 64, 128
//   q, k, v   (B, H, W, C) strided, dtype T; out (B, H, W, C) contiguous, dtype T
//   lse       (B, heads, H, W) float32; new_mask (B, H, W) contiguous, mask dtype
//   grid      (B * nW, heads, ceil(N / 64)), block 128 = 4 warps of 16 query rows each
// Same contract and index arithmetic as the SIMT kernel (window_attention_fwd.cu). Each warp
// computes its 16 x 32 score tile S = Q K^T with 16x16x16 WMMA products (fp32 accumulation),
// adds the biases and does the softmax bookkeeping in fp32 (two lanes per row), then O += P V
// with P rounded to T, as flash attention does. WMMA fragments have an unspecified element
// layout, so rows cannot be rescaled inside the accumulators; instead the kernel makes two passes
// over the keys: the first finds each row's logsumexp, the second accumulates exactly normalised
// P V. The extra Q K^T costs little on tensor cores and keeps O in registers.
#include "attention_common.cuh"
#include "launchers.h"

#if !defined(MK_HOST_EMULATION)
#include <mma.h>
#define MK_ALIGN(n) __align__(n)
#else
#define MK_ALIGN(n) alignas(n)
#endif

namespace mat_kernels {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWarps = kThreads / 32;  // 4
constexpr int kTcRows = 16 * kWarps;   // query rows per block
constexpr int kTcKeys = kTile;         // keys per tile

// One warp: S (16 x kTcKeys, fp32, row-major, ld kTcKeys) = Q (16 x D rows of qs) K^T.
template <typename T, int D>
__device__ __forceinline__ void warp_scores(const T* q, const T* k, float* s) {
#pragma unroll
    for (int n = 0; n < kTcKeys / 16; ++n) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;  // K^T: column n is key n
            wmma::load_matrix_sync(a, q + kk * 16, D);
            wmma::load_matrix_sync(b, k + n * 16 * D + kk * 16, D);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(s + n * 16, acc, kTcKeys, wmma::mem_row_major);
    }
    __syncwarp();
}

// One block: window blockIdx.x, head blockIdx.y, query rows [blockIdx.z * kTcRows, + kTcRows);
// warp w owns 16 of them. Two passes over the window's keys (tiles of kTcKeys): the first finds
// each row's logsumexp, the second accumulates exp(S - lse) V; the block stores out and lse.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) window_attention_fwd_tc_kernel(const WindowAttentionParams p) {
    MK_ALIGN(128) __shared__ T qs[kTcRows][D];
    MK_ALIGN(128) __shared__ T ks[kTcKeys][D];
    MK_ALIGN(128) __shared__ T vs[kTcKeys][D];
    MK_ALIGN(128) __shared__ float sf[kWarps][16][kTcKeys];  // scores; then the output staging
    MK_ALIGN(128) __shared__ T ps[kWarps][16][kTcKeys];
    __shared__ float kbias[kTcKeys];
    __shared__ int kregion[kTcKeys];

    const BlockWindow w = block_window(p);
    const WindowId id = w.id;
    const int ws = p.window_size, s = p.shift_size, N = w.N, hd = p.head_dim, h = w.h;
    write_new_mask(p, id);

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int q0 = blockIdx.z * kTcRows;
    load_tile<kTcRows>(qs, p.q, p.q_stride, id, h, q0, p);

    // Softmax bookkeeping: lanes 2r and 2r + 1 share row r of the warp's 16 rows, 16 columns each.
    const int r = lane / 2, half = lane % 2;
    const int t_raw = q0 + warp * 16 + r;
    const int t = t_raw < N ? t_raw : N - 1;  // rows past N use a real token's region; never stored
    const int qregion = token_region(id.wy, id.wx, t, p.H, p.W, ws, s);
    const T* qw = &qs[warp * 16][0];
    float* sw = &sf[warp][0][0];

    // Pass 1: the row maximum and sum, hence the logsumexp.
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < N; k0 += kTcKeys) {
        __syncthreads();  // previous tiles are no longer read (and qs is loaded on the first pass)
        load_tile<kTcKeys>(ks, p.k, p.k_stride, id, h, k0, p);
        load_key_meta<kTcKeys>(kbias, kregion, id, k0, p);
        __syncthreads();
        warp_scores<T, D>(qw, &ks[0][0], sw);
        float sc[16];
        float tmax = -INFINITY;
#pragma unroll
        for (int c = 0; c < 16; ++c) {
            const int j = half * 16 + c;
            sc[c] = (k0 + j < N) ? sw[r * kTcKeys + j] * p.scale + shift_bias(qregion, kregion[j]) + kbias[j]
                                 : -INFINITY;
            tmax = fmaxf(tmax, sc[c]);
        }
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
        const float m_new = fmaxf(m, tmax);  // finite: every tile holds a real key
        float sum = 0.0f;
#pragma unroll
        for (int c = 0; c < 16; ++c) sum += expf(sc[c] - m_new);
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * expf(m - m_new) + sum;
        m = m_new;
    }
    const float lse = m + logf(l);

    // Pass 2: O = sum over key tiles of exp(S - lse) V.
    constexpr int kOut = D / 16;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> o[kOut];
#pragma unroll
    for (int jd = 0; jd < kOut; ++jd) wmma::fill_fragment(o[jd], 0.0f);
    for (int k0 = 0; k0 < N; k0 += kTcKeys) {
        __syncthreads();
        load_tile<kTcKeys>(ks, p.k, p.k_stride, id, h, k0, p);
        load_tile<kTcKeys>(vs, p.v, p.v_stride, id, h, k0, p);
        load_key_meta<kTcKeys>(kbias, kregion, id, k0, p);
        __syncthreads();
        warp_scores<T, D>(qw, &ks[0][0], sw);
#pragma unroll
        for (int c = 0; c < 16; ++c) {
            const int j = half * 16 + c;
            const float sc = sw[r * kTcKeys + j] * p.scale + shift_bias(qregion, kregion[j]) + kbias[j];
            ps[warp][r][j] = from_float<T>(k0 + j < N ? expf(sc - lse) : 0.0f);
        }
        __syncwarp();
#pragma unroll
        for (int jd = 0; jd < kOut; ++jd) {
#pragma unroll
            for (int kk = 0; kk < kTcKeys / 16; ++kk) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
                wmma::load_matrix_sync(a, &ps[warp][0][kk * 16], kTcKeys);
                wmma::load_matrix_sync(b, &vs[kk * 16][jd * 16], D);
                wmma::mma_sync(o[jd], a, b, o[jd]);
            }
        }
    }

    // Write out through the warp's staging area (its score buffer, no longer needed).
#pragma unroll
    for (int jd = 0; jd < kOut; ++jd) {
        __syncwarp();
        wmma::store_matrix_sync(sw, o[jd], 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            const int row = e / 16, d = jd * 16 + e % 16, tq = q0 + warp * 16 + row;
            if (tq < N && d < hd) {
                const Pos pos = token_pos(id, tq, p);
                store_elem(p.out, p.dtype, offset_contig(p, id.b, pos.y, pos.x, h * hd + d), sw[e]);
            }
        }
    }
    if (t_raw < N && half == 0) {
        const Pos pos = token_pos(id, t_raw, p);
        p.lse[row_stat_index(p, id.b, h, pos.y, pos.x)] = lse;
    }
}

}  // namespace

const char* launch_window_attention_fwd_tensor_core(const WindowAttentionParams& p, CUstream_st* stream) {
    return visit_attention_dtype(p.dtype, [&](auto tag) -> const char* {
        using T = typename decltype(tag)::type;
        if constexpr (std::is_same_v<T, float>) {
            return "the tensor-core forward takes 16-bit floating dtypes only";
        } else {
            return visit_padded_head_dim(p.head_dim, [&](auto d) {
                auto* kernel = &window_attention_fwd_tc_kernel<T, decltype(d)::value>;  // no comma, for the macro
                MK_LAUNCH(kernel, attention_grid(p, kTcRows), kThreads, stream, p);
                return last_launch_error();
            });
        }
    });
}

}  // namespace mat_kernels
