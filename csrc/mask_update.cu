// MAT's two mask-update rules as stand-alone kernels, and their launchers.
//
// window_mask_update_kernel
//   mask      (B, H, W) strided, any DType; new_mask (B, H, W) contiguous, same dtype
//   grid      (B * nW), block 256: one block per (shifted) window
// partial_conv_mask_update_kernel
//   mask      (B, 1, H, W) strided, any DType; new_mask, ratio (B, 1, H_out, W_out) contiguous of
//             out_dtype (float32 for bool, else the mask dtype)
//   grid      ceil(B * H_out * W_out / 256), block 256: one thread per output
#include "dtype_utils.cuh"
#include "launchers.h"
#include "mask_window.cuh"

namespace mat_kernels {
namespace {

constexpr int kMaskThreads = 256;

__global__ void __launch_bounds__(kMaskThreads)
window_mask_update_kernel(const void* mask, DType dt, int64_t s0, int64_t s1, int64_t s2, void* new_mask,
                          int H, int W, int ws, int shift) {
    const int64_t stride[3] = {s0, s1, s2};
    window_mask_block(mask, dt, stride, new_mask, H, W, ws, shift, window_id(blockIdx.x, H, W, ws));
}

// The official rule, op by op, in Acc (float; double for float64 masks):
//   S = conv2d(mask, ones(k, k), stride, padding k // 2)      (a box count)
//   ratio = reciprocal(S + 1e-8) * k^2 * clamp(S, 0, 1)      (Python's `k**2 / t` is reciprocal * k**2)
//   new_mask = clamp(S, 0, 1)
// As in the reference, half and bfloat16 masks are computed in float and only the results are
// rounded (once, by store_mask): in half itself 1e-8 underflows, S + 1e-8 is 0 at a hole and the
// ratio would be inf * 0 = NaN there. For float32 this is the official float computation.
template <typename Acc>
__device__ __forceinline__ void partial_conv_rule(double count, Acc& new_mask, Acc& ratio, int k2) {
    const Acc S = static_cast<Acc>(count);
    const Acc u = S + static_cast<Acc>(1e-8);
    const Acc r = static_cast<Acc>(1) / u;  // IEEE division (the build does not use fast math)
    const Acc rk = r * static_cast<Acc>(k2);
    const Acc c = S < static_cast<Acc>(0) ? static_cast<Acc>(0) : (S > static_cast<Acc>(1) ? static_cast<Acc>(1) : S);
    new_mask = c;
    ratio = rk * c;
}

__global__ void __launch_bounds__(kMaskThreads)
partial_conv_mask_update_kernel(const void* mask, DType in, int64_t s0, int64_t s2, int64_t s3, void* new_mask,
                                void* ratio, DType out, int B, int H, int W, int H_out, int W_out, int ksize,
                                int stride) {
    const int64_t total = static_cast<int64_t>(B) * H_out * W_out;
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int ox = static_cast<int>(idx % W_out);
    const int oy = static_cast<int>((idx / W_out) % H_out);
    const int b = static_cast<int>(idx / (static_cast<int64_t>(W_out) * H_out));
    const int pad = ksize / 2;
    // The count is exact in double for binary masks (the only values MAT produces).
    double count = 0.0;
    for (int ky = 0; ky < ksize; ++ky) {
        const int iy = oy * stride - pad + ky;
        if (iy < 0 || iy >= H) continue;  // zero padding
        for (int kx = 0; kx < ksize; ++kx) {
            const int ix = ox * stride - pad + kx;
            if (ix < 0 || ix >= W) continue;
            count += load_mask(mask, in, b * s0 + iy * s2 + ix * s3);
        }
    }
    if (out == DType::kFloat64) {
        double nm, r;
        partial_conv_rule<double>(count, nm, r, ksize * ksize);
        store_mask(new_mask, out, idx, nm);
        store_mask(ratio, out, idx, r);
    } else {
        float nm, r;
        partial_conv_rule<float>(count, nm, r, ksize * ksize);
        // float -> double is exact, so store_mask rounds the float results once to half/bfloat16.
        store_mask(new_mask, out, idx, static_cast<double>(nm));
        store_mask(ratio, out, idx, static_cast<double>(r));
    }
}

}  // namespace

const char* launch_window_mask_update(const void* mask, DType dtype, const int64_t mask_stride[3], void* new_mask,
                                      int B, int H, int W, int window_size, int shift_size, CUstream_st* stream) {
    const long long windows = static_cast<long long>(B) * (H / window_size) * (W / window_size);
    if (windows < 1) return nullptr;
    if (windows > 0x7fffffffLL) return "too many windows for one launch";
    MK_LAUNCH(window_mask_update_kernel, static_cast<unsigned>(windows), kMaskThreads, stream,
        mask, dtype, mask_stride[0], mask_stride[1], mask_stride[2], new_mask, H, W, window_size, shift_size);
    return last_launch_error();
}

const char* launch_partial_conv_mask_update(const void* mask, DType in_dtype, const int64_t mask_stride[4],
                                            void* new_mask, void* ratio, DType out_dtype, int B, int H, int W,
                                            int H_out, int W_out, int kernel_size, int stride, CUstream_st* stream) {
    const long long total = static_cast<long long>(B) * H_out * W_out;
    if (total < 1) return nullptr;
    const long long blocks = (total + kMaskThreads - 1) / kMaskThreads;
    if (blocks > 0x7fffffffLL) return "mask too large for one launch";
    MK_LAUNCH(partial_conv_mask_update_kernel, static_cast<unsigned>(blocks), kMaskThreads, stream,
        mask, in_dtype, mask_stride[0], mask_stride[2], mask_stride[3], new_mask, ratio, out_dtype, B, H, W, H_out,
        W_out, kernel_size, stride);
    return last_launch_error();
}

}  // namespace mat_kernels
