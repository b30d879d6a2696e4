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

namespace mat_kernels {
namespace {

// One block: window blockIdx.x, head blockIdx.y, query rows [blockIdx.z * kRows, + kRows). Each
// group of G lanes holds one query in registers and streams the window's keys through shared
// tiles of kTile keys (k, v, key bias, shift region), keeping an online softmax; it stores its
// output row and logsumexp.
template <int D>
__global__ void __launch_bounds__(kThreads) window_attention_fwd_kernel(const WindowAttentionParams p) {
    constexpr int P = Tiling<D>::P;
    __shared__ KeyTiles<D> kt;

    const RowSlot r = row_slot<D>(p);
    const int N = r.N;
    write_new_mask(p, r.id);

    float qr[P], acc[P];
    load_row<D>(qr, p.q, p.q_stride, r, p);
#pragma unroll
    for (int i = 0; i < P; ++i) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    for (int k0 = 0; k0 < N; k0 += kTile) {
        load_key_tiles<D>(kt, r, k0, p);

        float sc[kTile];
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < kTile; ++j) {
            const float dot = row_dot<D>(qr, kt.k[j], r.g);
            // Official order: (q k^T) * scale, + shift-region bias, + key bias.
            sc[j] = (k0 + j < N) ? dot * p.scale + shift_bias(r.region, kt.region[j]) + kt.bias[j] : -INFINITY;
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
            row_axpy<D>(acc, pj, kt.v[j], r.g);
        }
        m = m_new;
    }

    if (r.active) {
        store_row<D>(p.out, acc, 1.0f / l, r, p);
        if (r.g == 0) p.lse[row_stat_index(p, r.id.b, r.h, r.pos.y, r.pos.x)] = m + logf(l);
    }
}

}  // namespace

const char* launch_window_attention_fwd(const WindowAttentionParams& p, CUstream_st* stream) {
    bool empty = false;
    if (const char* err = check_attention_launch(p, &empty); err != nullptr || empty) return err;
    // fp16/bf16 use tensor cores (window_attention_fwd_tc.cu) unless the SIMT kernel is forced.
    if (!p.force_simt && p.dtype != DType::kFloat32) return launch_window_attention_fwd_tensor_core(p, stream);
    return visit_padded_head_dim(p.head_dim, [&](auto d) {
        constexpr int D = decltype(d)::value;
        MK_LAUNCH(window_attention_fwd_kernel<D>, attention_grid(p, Tiling<D>::kRows), kThreads, stream, p);
        return last_launch_error();
    });
}

}  // namespace mat_kernels
