// Pieces shared by the forward and backward attention kernels: tiling constants, addressing of
// window tokens in the (B, H, W, C) image layout, and the per-key bias tile.
//
// Work split (SIMT, fp32 math for every dtype): a block of kThreads threads owns one
// (window, head, row tile). Each token row (a query, or a key in the dk/dv kernel) is handled by a
// group of G = D / 32 adjacent lanes; lane g of the group keeps the 32 dims d = i * G + g,
// i = 0..31, in registers. That interleave makes the lanes of a group read consecutive shared
// memory words (no bank conflicts) and keeps per-thread state at 32 floats per vector for every
// padded head size D in {32, 64, 128}. Dot products are reduced across the group with shuffles.
// Dims in [head_dim, D) are zero-filled, which pads head_dim (e.g. MAT's 30) to D.
#pragma once

#include <cmath>

#include "dtype_utils.cuh"
#include "window_index.cuh"

namespace mat_kernels {

constexpr int kThreads = 128;  // threads per attention block
constexpr int kTile = 32;      // tokens per shared-memory tile

template <int D> struct Tiling {
    static_assert(D == 32 || D == 64 || D == 128, "padded head_dim must be 32, 64 or 128");
    static constexpr int G = D / 32;            // lanes per token row
    static constexpr int P = 32;                // dims per lane
    static constexpr int kRows = kThreads / G;  // token rows per block
};

// Sum over the G lanes of a group (groups are aligned inside a warp). All 32 lanes must call it.
template <int G> __device__ __forceinline__ float group_sum(float x) {
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Image position of token t of window `id`.
struct Pos {
    int y, x;
};

__device__ __forceinline__ Pos token_pos(const WindowId& id, int t, const WindowAttentionParams& p) {
    const int ws = p.window_size;
    return Pos{source_coord(id.wy, t / ws, ws, p.shift_size, p.H), source_coord(id.wx, t % ws, ws, p.shift_size, p.W)};
}

// Element offset of (b, y, x, channel) in a strided (B, H, W, C) tensor.
__device__ __forceinline__ int64_t offset4(const int64_t* st, int b, int y, int x, int c) {
    return b * st[0] + y * st[1] + x * st[2] + c * st[3];
}

// Element offset of (b, y, x, channel) in a contiguous (B, H, W, C) tensor.
__device__ __forceinline__ int64_t offset_contig(const WindowAttentionParams& p, int b, int y, int x, int c) {
    return ((static_cast<int64_t>(b) * p.H + y) * p.W + x) * p.C + c;
}

// Index into the float32 (B, heads, H, W) row statistics (lse, delta).
__device__ __forceinline__ int64_t row_stat_index(const WindowAttentionParams& p, int b, int h, int y, int x) {
    return ((static_cast<int64_t>(b) * p.num_heads + h) * p.H + y) * p.W + x;
}

// Key-validity bias of token t (0 without a mask). The rule is applied to the mask's own value
// (read exactly, as a double, whatever the mask dtype), as the official masked_fill(mask == 0)
// compares the mask's values: never rounded to the attention dtype first (under autocast a
// float32 mask meets half q/k/v; 1e-8 would round to 0 in half and 0.9999 to 1 in bfloat16).
// Only the resulting bias is rounded, to the float32 the scores are held in.
__device__ __forceinline__ float token_key_bias(const WindowAttentionParams& p, int b, Pos pos) {
    if (p.mask == nullptr) return 0.0f;
    const double m = load_mask(p.mask, p.mask_dtype, b * p.mask_stride[0] + pos.y * p.mask_stride[1] +
                                                         pos.x * p.mask_stride[2]);
    return static_cast<float>(key_bias(m));
}

// Load rows [t0, t0 + kTile) of head h of a strided token tensor into a float tile (zero rows past
// N and zero dims past head_dim). Called by every thread of the block.
template <int D>
__device__ __forceinline__ void load_tile(float (*tile)[D], const void* src, const int64_t* st, const WindowId& id,
                                          int h, int t0, const WindowAttentionParams& p) {
    const int N = p.window_size * p.window_size;
    for (int idx = threadIdx.x; idx < kTile * D; idx += kThreads) {
        const int j = idx / D, d = idx % D, t = t0 + j;
        float val = 0.0f;
        if (t < N && d < p.head_dim) {
            const Pos pos = token_pos(id, t, p);
            val = load_elem(src, p.dtype, offset4(st, id.b, pos.y, pos.x, h * p.head_dim + d));
        }
        tile[j][d] = val;
    }
}

// Same for a contiguous (B, H, W, C) tensor (the forward output read by the backward).
__device__ __forceinline__ float load_contig(const void* src, const WindowAttentionParams& p, int b, Pos pos, int c) {
    return load_elem(src, p.dtype, offset_contig(p, b, pos.y, pos.x, c));
}

}  // namespace mat_kernels
