// Forward of MAT's shifted-window contextual attention (SIMT, fp32 math), and the forward launcher.
// The launcher sends float16/bfloat16 to the tensor-core kernel (window_attention_fwd_tc.cu)
// unless p.force_simt is set; float32 always runs here.
//
// Kernel: window_attention_fwd_kernel<D>
//   q, k, v   (B, H, W, C) strided, C = heads * head_dim; float32, float16 or bfloat16 (p.dtype, a
//             run-time switch at loads and stores: all math is fp32, so one instance per D suffices)
//   mask      (B, H, W) strided, any DType, or nullptr
//   out       (B, H, W, C) contiguous, p.dtype, un-shifted layout
//   lse       (B, heads, H, W) float32: logsumexp of each query's biased, scaled scores
//   new_mask  (B, H, W) contiguous, mask dtype (written when mask and new_mask are given)
//   grid      (B * nW, heads, ceil(N / kRows)), block kThreads; N = ws * ws
// The cyclic shift and the window partition are index arithmetic (window_index.cuh), so no
// rolled or partitioned copy is made. Scores, softmax and accumulation are fp32; the softmax is
// online over key tiles of kTile keys. Biases are MAT's finite -100 terms, so a window with all
// keys masked degrades to plain attention exactly as in the official code.
#include "attention_common.cuh"
#include "launchers.h"
#include "mask_window.cuh"

namespace mat_kernels {
namespace {

template <int D>
__global__ void __launch_bounds__(kThreads) window_attention_fwd_kernel(const WindowAttentionParams p) {
    constexpr int G = Tiling<D>::G, P = Tiling<D>::P, ROWS = Tiling<D>::kRows;
    __shared__ float ks[kTile][D];
    __shared__ float vs[kTile][D];
    __shared__ float kbias[kTile];
    __shared__ int kregion[kTile];

    const int ws = p.window_size, s = p.shift_size, N = ws * ws, hd = p.head_dim;
    const WindowId id = window_id(blockIdx.x, p.H, p.W, ws);
    const int h = blockIdx.y;

    // One block per window writes the updated mask; the condition is uniform across the block.
    if (p.mask != nullptr && p.new_mask != nullptr && blockIdx.y == 0 && blockIdx.z == 0) {
        window_mask_block(p.mask, p.mask_dtype, p.mask_stride, p.new_mask, p.H, p.W, ws, s, id);
    }

    const int row = threadIdx.x / G, g = threadIdx.x % G;
    const int t_raw = blockIdx.z * ROWS + row;
    const bool active = t_raw < N;
    // Rows past N compute on a valid token (so every lane takes part in the shuffles) and store nothing.
    const int t = active ? t_raw : N - 1;
    const Pos qpos = token_pos(id, t, p);
    const int qregion = token_region(id.wy, id.wx, t, p.H, p.W, ws, s);

    float qr[P], acc[P];
#pragma unroll
    for (int i = 0; i < P; ++i) {
        const int d = i * G + g;
        qr[i] = d < hd ? load_elem(p.q, p.dtype, offset4(p.q_stride, id.b, qpos.y, qpos.x, h * hd + d)) : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;

    for (int k0 = 0; k0 < N; k0 += kTile) {
        __syncthreads();  // the previous tile is no longer read
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

        float sc[kTile];
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < kTile; ++j) {
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < P; ++i) dot = fmaf(qr[i], ks[j][i * G + g], dot);
            dot = group_sum<G>(dot);
            // Official order: (q k^T) * scale, + shift-region bias, + key bias.
            sc[j] = (k0 + j < N) ? dot * p.scale + shift_bias(qregion, kregion[j]) + kbias[j] : -INFINITY;
            tile_max = fmaxf(tile_max, sc[j]);
        }
        // Every tile holds at least one real key and biases are finite, so m_new is finite.
        const float m_new = fmaxf(m, tile_max);
        const float corr = expf(m - m_new);  // 0 on the first tile (m = -inf)
        l *= corr;
#pragma unroll
        for (int i = 0; i < P; ++i) acc[i] *= corr;
#pragma unroll
        for (int j = 0; j < kTile; ++j) {
            const float pj = expf(sc[j] - m_new);  // 0 for padded keys
            l += pj;
#pragma unroll
            for (int i = 0; i < P; ++i) acc[i] = fmaf(pj, vs[j][i * G + g], acc[i]);
        }
        m = m_new;
    }

    if (active) {
        const float inv = 1.0f / l;
#pragma unroll
        for (int i = 0; i < P; ++i) {
            const int d = i * G + g;
            if (d < hd) store_elem(p.out, p.dtype, offset_contig(p, id.b, qpos.y, qpos.x, h * hd + d), acc[i] * inv);
        }
        if (g == 0) p.lse[row_stat_index(p, id.b, h, qpos.y, qpos.x)] = m + logf(l);
    }
}

template <int D>
const char* launch_fwd(const WindowAttentionParams& p, cudaStream_t stream) {
    const int N = p.window_size * p.window_size;
    const long long windows = static_cast<long long>(p.B) * (p.H / p.window_size) * (p.W / p.window_size);
    const dim3 grid(static_cast<unsigned>(windows), p.num_heads, (N + Tiling<D>::kRows - 1) / Tiling<D>::kRows);
    MK_LAUNCH(window_attention_fwd_kernel<D>, grid, kThreads, stream, p);
    return last_launch_error();
}

}  // namespace

const char* launch_window_attention_fwd(const WindowAttentionParams& p, CUstream_st* stream) {
    if (p.head_dim < 1 || p.head_dim > kMaxHeadDim) return "head_dim out of the supported range";
    if (p.window_size * p.window_size > kMaxWindowTokens) return "window_size**2 exceeds the supported maximum";
    const long long windows = static_cast<long long>(p.B) * (p.H / p.window_size) * (p.W / p.window_size);
    if (windows < 1) return nullptr;  // empty batch: nothing to launch
    if (windows > 0x7fffffffLL) return "too many windows for one launch";
    if (p.dtype != DType::kFloat32 && p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16)
        return "unsupported dtype for the attention kernels";
    // fp16/bf16 use tensor cores (window_attention_fwd_tc.cu) unless the SIMT kernel is forced.
    if (!p.force_simt && p.dtype != DType::kFloat32) return launch_window_attention_fwd_tensor_core(p, stream);
    // head_dim is padded to the next tile width; the kernels zero-fill the extra dims.
    if (p.head_dim <= 32) return launch_fwd<32>(p, stream);
    if (p.head_dim <= 64) return launch_fwd<64>(p, stream);
    return launch_fwd<128>(p, stream);
}

}  // namespace mat_kernels
