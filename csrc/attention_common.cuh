// Pieces shared by the attention kernels (SIMT forward, backward, tensor-core forward) and their
// launchers: tiling constants, the block and thread prologue, addressing of window tokens in the
// (B, H, W, C) image layout, tile and row loads, the key metadata, and the launch checks.
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
#include <type_traits>

#include "dtype_utils.cuh"
#include "mask_window.cuh"
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

// Rows [t0, t0 + Rows) of head h of a strided token tensor into a tile of T (zero rows past N and
// zero dims past head_dim); each value is read as float and converted once to T (exact when T is
// the tensor's own type). Called by every thread of the block.
template <int Rows, typename T, int D>
__device__ __forceinline__ void load_tile(T (*tile)[D], const void* src, const int64_t* st, const WindowId& id, int h,
                                          int t0, const WindowAttentionParams& p) {
    const int N = p.window_size * p.window_size;
    for (int idx = threadIdx.x; idx < Rows * D; idx += kThreads) {
        const int j = idx / D, d = idx % D, t = t0 + j;
        float val = 0.0f;
        if (t < N && d < p.head_dim) {
            const Pos pos = token_pos(id, t, p);
            val = load_elem(src, p.dtype, offset4(st, id.b, pos.y, pos.x, h * p.head_dim + d));
        }
        tile[j][d] = from_float<T>(val);
    }
}

// Key bias and shift region of keys [k0, k0 + Keys) of window id (0 past N). Called by every
// thread of the block.
template <int Keys>
__device__ __forceinline__ void load_key_meta(float* kbias, int* kregion, const WindowId& id, int k0,
                                              const WindowAttentionParams& p) {
    const int ws = p.window_size, N = ws * ws;
    for (int j = threadIdx.x; j < Keys; j += kThreads) {
        const int tk = k0 + j;
        kbias[j] = tk < N ? token_key_bias(p, id.b, token_pos(id, tk, p)) : 0.0f;
        kregion[j] = tk < N ? token_region(id.wy, id.wx, tk, p.H, p.W, ws, p.shift_size) : 0;
    }
}

// Element (b, pos, c) of a contiguous (B, H, W, C) tensor (the forward output read by the backward).
__device__ __forceinline__ float load_contig(const void* src, const WindowAttentionParams& p, int b, Pos pos, int c) {
    return load_elem(src, p.dtype, offset_contig(p, b, pos.y, pos.x, c));
}

// The window and head of a block of an attention grid (B * nW, heads, row tiles).
struct BlockWindow {
    WindowId id;  // window blockIdx.x of the flattened (B * nW) axis
    int h;        // head blockIdx.y
    int N;        // tokens per window, window_size**2
};

__device__ __forceinline__ BlockWindow block_window(const WindowAttentionParams& p) {
    BlockWindow w;
    w.id = window_id(blockIdx.x, p.H, p.W, p.window_size);
    w.h = blockIdx.y;
    w.N = p.window_size * p.window_size;
    return w;
}

// The forward's updated mask of the block's window, written by the window's first block (the
// condition is uniform across the block). Called by every thread of the block.
__device__ __forceinline__ void write_new_mask(const WindowAttentionParams& p, const WindowId& id) {
    if (p.mask != nullptr && p.new_mask != nullptr && blockIdx.y == 0 && blockIdx.z == 0) {
        window_mask_block(p.mask, p.mask_dtype, p.mask_stride, p.new_mask, p.H, p.W, p.window_size, p.shift_size, id);
    }
}

// The token row of one thread of a SIMT block: block z owns rows [z * kRows, (z + 1) * kRows) of
// its window, and thread x is lane g = x % G of row x / G.
struct RowSlot : BlockWindow {
    int g;        // lane within the row's group; it holds dims i * G + g
    bool active;  // the row is a token of the window; rows past N compute but store nothing
    int t;        // the row's token (N - 1 for inactive rows, so that every lane joins the shuffles)
    Pos pos;      // image position of token t
    int region;   // shift region of token t
};

template <int D> __device__ __forceinline__ RowSlot row_slot(const WindowAttentionParams& p) {
    constexpr int G = Tiling<D>::G;
    RowSlot r;
    static_cast<BlockWindow&>(r) = block_window(p);
    r.g = threadIdx.x % G;
    const int t_raw = blockIdx.z * Tiling<D>::kRows + threadIdx.x / G;
    r.active = t_raw < r.N;
    r.t = r.active ? t_raw : r.N - 1;
    r.pos = token_pos(r.id, r.t, p);
    r.region = token_region(r.id.wy, r.id.wx, r.t, p.H, p.W, p.window_size, p.shift_size);
    return r;
}

// The lane's dims of the row's token in head h of a strided token tensor, as float (0 past head_dim).
template <int D>
__device__ __forceinline__ void load_row(float (&x)[Tiling<D>::P], const void* src, const int64_t* st, const RowSlot& r,
                                         const WindowAttentionParams& p) {
#pragma unroll
    for (int i = 0; i < Tiling<D>::P; ++i) {
        const int d = i * Tiling<D>::G + r.g;
        x[i] = d < p.head_dim ? load_elem(src, p.dtype, offset4(st, r.id.b, r.pos.y, r.pos.x, r.h * p.head_dim + d))
                              : 0.0f;
    }
}

// Store x[i] * scale at the lane's dims of the row's token in a contiguous (B, H, W, C) tensor.
template <int D>
__device__ __forceinline__ void store_row(void* dst, const float (&x)[Tiling<D>::P], float scale, const RowSlot& r,
                                          const WindowAttentionParams& p) {
#pragma unroll
    for (int i = 0; i < Tiling<D>::P; ++i) {
        const int d = i * Tiling<D>::G + r.g;
        if (d < p.head_dim)
            store_elem(dst, p.dtype, offset_contig(p, r.id.b, r.pos.y, r.pos.x, r.h * p.head_dim + d), x[i] * scale);
    }
}

// x . row over the row's dims: the lane's products x[i] * row[i * G + g], summed over its group.
template <int D> __device__ __forceinline__ float row_dot(const float (&x)[Tiling<D>::P], const float* row, int g) {
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < Tiling<D>::P; ++i) dot = fmaf(x[i], row[i * Tiling<D>::G + g], dot);
    return group_sum<Tiling<D>::G>(dot);
}

// The same for two pairs at once: *xa_ra = xa . ra and *xb_rb = xb . rb.
template <int D>
__device__ __forceinline__ void row_dot2(const float (&xa)[Tiling<D>::P], const float* ra, const float (&xb)[Tiling<D>::P],
                                         const float* rb, int g, float* xa_ra, float* xb_rb) {
    float a = 0.0f, b = 0.0f;
#pragma unroll
    for (int i = 0; i < Tiling<D>::P; ++i) {
        a = fmaf(xa[i], ra[i * Tiling<D>::G + g], a);
        b = fmaf(xb[i], rb[i * Tiling<D>::G + g], b);
    }
    *xa_ra = group_sum<Tiling<D>::G>(a);
    *xb_rb = group_sum<Tiling<D>::G>(b);
}

// acc[i] += a * row[i * G + g] over the lane's dims.
template <int D>
__device__ __forceinline__ void row_axpy(float (&acc)[Tiling<D>::P], float a, const float* row, int g) {
#pragma unroll
    for (int i = 0; i < Tiling<D>::P; ++i) acc[i] = fmaf(a, row[i * Tiling<D>::G + g], acc[i]);
}

// A tile of kTile keys of a window in shared memory: their k and v rows, key bias and shift region.
template <int D> struct KeyTiles {
    float k[kTile][D];
    float v[kTile][D];
    float bias[kTile];
    int region[kTile];
};

// Keys [k0, k0 + kTile) of the block's window into `kt`. Called by every thread of the block; the
// barriers order it after the previous tile's reads and before this tile's.
template <int D>
__device__ __forceinline__ void load_key_tiles(KeyTiles<D>& kt, const BlockWindow& w, int k0,
                                               const WindowAttentionParams& p) {
    __syncthreads();
    load_tile<kTile>(kt.k, p.k, p.k_stride, w.id, w.h, k0, p);
    load_tile<kTile>(kt.v, p.v, p.v_stride, w.id, w.h, k0, p);
    load_key_meta<kTile>(kt.bias, kt.region, w.id, k0, p);
    __syncthreads();
}

// Host side, the launchers.

// Windows of the flattened (B * nW) grid axis.
inline long long attention_windows(const WindowAttentionParams& p) {
    return static_cast<long long>(p.B) * (p.H / p.window_size) * (p.W / p.window_size);
}

// The grid (B * nW, heads, ceil(N / rows_per_block)).
inline dim3 attention_grid(const WindowAttentionParams& p, int rows_per_block) {
    const int N = p.window_size * p.window_size;
    return dim3(static_cast<unsigned>(attention_windows(p)), p.num_heads, (N + rows_per_block - 1) / rows_per_block);
}

// The checks every attention launcher makes: an error, or nullptr with *empty set when the batch
// has no window (nothing to launch).
inline const char* check_attention_launch(const WindowAttentionParams& p, bool* empty) {
    *empty = false;
    if (p.head_dim < 1 || p.head_dim > kMaxHeadDim) return "head_dim out of the supported range";
    if (p.window_size * p.window_size > kMaxWindowTokens) return "window_size**2 exceeds the supported maximum";
    const long long windows = attention_windows(p);
    if (windows < 1) {
        *empty = true;
        return nullptr;
    }
    if (windows > 0x7fffffffLL) return "too many windows for one launch";
    if (!is_attention_dtype(p.dtype)) return "unsupported dtype for the attention kernels";
    return nullptr;
}

// f(std::integral_constant<int, D>{}) for head_dim padded to the next tile width D (32, 64 or 128);
// the kernels zero-fill the extra dims.
template <typename F> const char* visit_padded_head_dim(int head_dim, F&& f) {
    if (head_dim <= 32) return f(std::integral_constant<int, 32>{});
    if (head_dim <= 64) return f(std::integral_constant<int, 64>{});
    return f(std::integral_constant<int, 128>{});
}

}  // namespace mat_kernels
