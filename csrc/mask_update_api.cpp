// CUDA glue of the mask-update ops: checks, device guard, current stream, outputs, launch.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <tuple>

#include "checks.h"
#include "launchers.h"
#include "torch_glue.h"

namespace mat_kernels {
namespace {

at::Tensor window_mask_update_cuda(const at::Tensor& mask, int64_t window_size, int64_t shift_size) {
    CHECK_CUDA(mask);
    TORCH_CHECK(mask.dim() == 3 || (mask.dim() == 4 && mask.size(3) == 1),
                "mask must have shape (B, H, W, 1) or (B, H, W), got ", mask.sizes());
    const DType dt = to_kernel_dtype(mask.scalar_type(), "mask");
    const int64_t B = mask.size(0), H = mask.size(1), W = mask.size(2);
    TORCH_CHECK(window_size > 0, "window_size must be positive, got ", window_size);
    TORCH_CHECK(H % window_size == 0 && W % window_size == 0, "window_size=", window_size,
                " must divide the grid H=", H, ", W=", W);
    TORCH_CHECK(shift_size >= 0 && shift_size < window_size, "shift_size must satisfy 0 <= shift_size < window_size=",
                window_size, ", got ", shift_size);
    TORCH_CHECK(B <= INT32_MAX && H <= INT32_MAX && W <= INT32_MAX, "mask is too large");
    const c10::DeviceGuard guard(mask.device());
    at::Tensor new_mask = at::empty(mask.sizes(), mask.options());
    const int64_t stride[3] = {mask.stride(0), mask.stride(1), mask.stride(2)};
    check_launch(launch_window_mask_update(mask.data_ptr(), dt, stride, new_mask.data_ptr(), static_cast<int>(B),
                                           static_cast<int>(H), static_cast<int>(W), static_cast<int>(window_size),
                                           static_cast<int>(shift_size), current_stream(mask.device())),
                 "window_mask_update_cuda");
    return new_mask;
}

std::tuple<at::Tensor, at::Tensor> partial_conv_mask_update_cuda(const at::Tensor& mask, int64_t kernel_size,
                                                                 int64_t stride) {
    CHECK_CUDA(mask);
    TORCH_CHECK(mask.dim() == 4 && mask.size(1) == 1, "mask must have shape (B, 1, H, W), got ", mask.sizes());
    const DType in = to_kernel_dtype(mask.scalar_type(), "mask");
    TORCH_CHECK(kernel_size > 0 && kernel_size % 2 == 1, "kernel_size must be a positive odd int, got ", kernel_size);
    TORCH_CHECK(stride > 0, "stride must be positive, got ", stride);
    const int64_t B = mask.size(0), H = mask.size(2), W = mask.size(3), pad = kernel_size / 2;
    const int64_t H_out = (H + 2 * pad - kernel_size) / stride + 1;
    const int64_t W_out = (W + 2 * pad - kernel_size) / stride + 1;
    TORCH_CHECK(B <= INT32_MAX && H <= INT32_MAX && W <= INT32_MAX, "mask is too large");
    const at::ScalarType out_type = mask.scalar_type() == at::kBool ? at::kFloat : mask.scalar_type();
    const c10::DeviceGuard guard(mask.device());
    at::Tensor new_mask = at::empty({B, 1, H_out, W_out}, mask.options().dtype(out_type));
    at::Tensor ratio = at::empty_like(new_mask);
    const int64_t st[4] = {mask.stride(0), mask.stride(1), mask.stride(2), mask.stride(3)};
    check_launch(launch_partial_conv_mask_update(mask.data_ptr(), in, st, new_mask.data_ptr(), ratio.data_ptr(),
                                                 to_kernel_dtype(out_type, "new_mask"), static_cast<int>(B),
                                                 static_cast<int>(H), static_cast<int>(W), static_cast<int>(H_out),
                                                 static_cast<int>(W_out), static_cast<int>(kernel_size),
                                                 static_cast<int>(stride), current_stream(mask.device())),
                 "partial_conv_mask_update_cuda");
    return {new_mask, ratio};
}

}  // namespace

TORCH_LIBRARY_IMPL(mat_kernels, CUDA, m) {
    m.impl("window_mask_update_cuda", &window_mask_update_cuda);
    m.impl("partial_conv_mask_update_cuda", &partial_conv_mask_update_cuda);
}

}  // namespace mat_kernels
