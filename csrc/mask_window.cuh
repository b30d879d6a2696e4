// The window mask rule as a block-wide device routine, shared by the mask-update kernel and the
// attention forward (which writes the new mask from the same launch).
#pragma once

#include "dtype_utils.cuh"
#include "window_index.cuh"

namespace mat_kernels {

// Block-wide sum of a double; every thread of the block must call it; blockDim.x <= 1024 and a
// multiple of 32. Returns the total to every thread.
__device__ __forceinline__ double block_sum(double x) {
    __shared__ double partial[32];
    __shared__ double total;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    if (warp == 0) {
        const int nwarps = blockDim.x / 32;
        double y = lane < nwarps ? partial[lane] : 0.0;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
        if (lane == 0) total = y;
    }
    __syncthreads();
    return total;
}

// MAT's mask update for one window: every token of window `id` (rolled frame) becomes
// clamp(sum of the window's mask, 0, 1), written at its un-shifted image position of the
// contiguous (B, H, W) `new_mask`. The sum runs in double (exact for binary masks); the clamped
// value is rounded once to the mask dtype, which equals the official clamp(sum in dtype) because
// rounding is monotone and 0 and 1 are exact. For bool the result is "any token valid".
// Called by every thread of a block.
__device__ __forceinline__ void window_mask_block(const void* mask, DType dt, const int64_t* stride,
                                                  void* new_mask, int H, int W, int ws, int s,
                                                  WindowId id) {
    const int N = ws * ws;
    double sum = 0.0;
    for (int t = threadIdx.x; t < N; t += blockDim.x) {
        const int y = source_coord(id.wy, t / ws, ws, s, H);
        const int x = source_coord(id.wx, t % ws, ws, s, W);
        sum += load_mask(mask, dt, id.b * stride[0] + y * stride[1] + x * stride[2]);
    }
    const double total = block_sum(sum);
    const double value = round_to(dt, total < 0.0 ? 0.0 : (total > 1.0 ? 1.0 : total));
    for (int t = threadIdx.x; t < N; t += blockDim.x) {
        const int y = source_coord(id.wy, t / ws, ws, s, H);
        const int x = source_coord(id.wx, t % ws, ws, s, W);
        store_mask(new_mask, dt, (static_cast<int64_t>(id.b) * H + y) * W + x, value);
    }
}

}  // namespace mat_kernels
