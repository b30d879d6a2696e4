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
#include "mask_window.cuh"

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
constexpr int kTcKeys = 32;            // keys per tile

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// Rows [t0, t0 + rows) of head h of a strided token tensor into a T tile (zero past N and past
// head_dim). Values are copied exactly (the tensor already has dtype T). All threads call it.
template <typename T, int D>
__device__ __forceinline__ void load_tile_t(T (*tile)[D], const void* src, const int64_t* st, const WindowId& id,
                                            int h, int t0, int rows, const WindowAttentionParams& p) {
    const int N = p.window_size * p.window_size;
    for (int idx = threadIdx.x; idx < rows * D; idx += kThreads) {
        const int j = idx / D, d = idx % D, t = t0 + j;
        float val = 0.0f;
        if (t < N && d < p.head_dim) {
            const Pos pos = token_pos(id, t, p);
            val = load_elem(src, p.dtype, offset4(st, id.b, pos.y, pos.x, h * p.head_dim + d));
        }
        tile[j][d] = from_float<T>(val);
    }
}

// Key biases and region labels of keys [k0, k0 + kTcKeys). All threads call it.
__device__ __forceinline__ void load_key_info(float* kbias, int* kregion, const WindowId& id, int k0,
                                              const WindowAttentionParams& p) {
    const int ws = p.window_size, N = ws * ws;
    for (int j = threadIdx.x; j < kTcKeys; j += kThreads) {
        const int tk = k0 + j;
        kbias[j] = tk < N ? token_key_bias(p, id.b, token_pos(id, tk, p)) : 0.0f;
        kregion[j] = tk < N ? token_region(id.wy, id.wx, tk, p.H, p.W, ws, p.shift_size) : 0;
    }
}

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

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) window_attention_fwd_tc_kernel(const WindowAttentionParams p) {
    MK_ALIGN(128) __shared__ T qs[kTcRows][D];
    MK_ALIGN(128) __shared__ T ks[kTcKeys][D];
    MK_ALIGN(128) __shared__ T vs[kTcKeys][D];
    MK_ALIGN(128) __shared__ float sf[kWarps][16][kTcKeys];  // scores; then the output staging
    MK_ALIGN(128) __shared__ T ps[kWarps][16][kTcKeys];
    __shared__ float kbias[kTcKeys];
    __shared__ int kregion[kTcKeys];

    const int ws = p.window_size, s = p.shift_size, N = ws * ws, hd = p.head_dim;
    const WindowId id = window_id(blockIdx.x, p.H, p.W, ws);
    const int h = blockIdx.y;
    if (p.mask != nullptr && p.new_mask != nullptr && blockIdx.y == 0 && blockIdx.z == 0) {
        window_mask_block(p.mask, p.mask_dtype, p.mask_stride, p.new_mask, p.H, p.W, ws, s, id);
    }

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int q0 = blockIdx.z * kTcRows;
    load_tile_t<T, D>(qs, p.q, p.q_stride, id, h, q0, kTcRows, p);

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
        load_tile_t<T, D>(ks, p.k, p.k_stride, id, h, k0, kTcKeys, p);
        load_key_info(kbias, kregion, id, k0, p);
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
        load_tile_t<T, D>(ks, p.k, p.k_stride, id, h, k0, kTcKeys, p);
        load_tile_t<T, D>(vs, p.v, p.v_stride, id, h, k0, kTcKeys, p);
        load_key_info(kbias, kregion, id, k0, p);
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

template <typename T, int D>
const char* launch_tc(const WindowAttentionParams& p, cudaStream_t stream) {
    const int N = p.window_size * p.window_size;
    const long long windows = static_cast<long long>(p.B) * (p.H / p.window_size) * (p.W / p.window_size);
    const dim3 grid(static_cast<unsigned>(windows), p.num_heads, (N + kTcRows - 1) / kTcRows);
    auto* kernel = &window_attention_fwd_tc_kernel<T, D>;  // a name without a comma, for the macro
    MK_LAUNCH(kernel, grid, kThreads, stream, p);
    return last_launch_error();
}

template <typename T>
const char* launch_tc_dim(const WindowAttentionParams& p, cudaStream_t stream) {
    if (p.head_dim <= 32) return launch_tc<T, 32>(p, stream);
    if (p.head_dim <= 64) return launch_tc<T, 64>(p, stream);
    return launch_tc<T, 128>(p, stream);
}

}  // namespace

const char* launch_window_attention_fwd_tensor_core(const WindowAttentionParams& p, CUstream_st* stream) {
    switch (p.dtype) {
        case DType::kFloat16: return launch_tc_dim<__half>(p, stream);
        case DType::kBFloat16: return launch_tc_dim<__nv_bfloat16>(p, stream);
        default: return "the tensor-core forward takes float16 or bfloat16 only";
    }
}

}  // namespace mat_kernels
