// CUDA glue of the window attention ops: argument checks, device guard, current stream, output
// allocation, then the extern launchers of window_attention_fwd.cu / window_attention_bwd.cu.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>

#include "checks.h"
#include "launchers.h"
#include "torch_glue.h"

namespace mat_kernels {
namespace {

struct Geometry {
    int64_t B, H, W, C, head_dim;
};

Geometry check_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const std::optional<at::Tensor>& mask, int64_t window_size, int64_t shift_size,
                              int64_t num_heads) {
    CHECK_CUDA(q);
    CHECK_DIM(q, 4);
    TORCH_CHECK(is_attention_dtype(q.scalar_type()), "q must have one of the dtypes ", attention_dtype_names(), ", got ",
                q.scalar_type());
    for (const auto* t : {&k, &v}) {
        const char* name = t == &k ? "k" : "v";
        TORCH_CHECK(t->sizes() == q.sizes(), name, " must have the shape of q ", q.sizes(), ", got ", t->sizes());
        TORCH_CHECK(t->scalar_type() == q.scalar_type(), name, " must have the dtype of q (", q.scalar_type(),
                    "), got ", t->scalar_type());
        TORCH_CHECK(t->device() == q.device(), name, " must be on the device of q (", q.device(), "), got ",
                    t->device());
    }
    const int64_t B = q.size(0), H = q.size(1), W = q.size(2), C = q.size(3);
    TORCH_CHECK(num_heads > 0 && C % num_heads == 0, "num_heads must be positive and divide C=", C, ", got ",
                num_heads);
    const int64_t head_dim = C / num_heads;
    TORCH_CHECK(head_dim <= kMaxHeadDim, "head_dim = C / num_heads must be <= ", kMaxHeadDim, ", got ", head_dim);
    TORCH_CHECK(window_size > 0, "window_size must be positive, got ", window_size);
    TORCH_CHECK(window_size * window_size <= kMaxWindowTokens, "window_size**2 must be <= ", kMaxWindowTokens,
                ", got window_size=", window_size);
    TORCH_CHECK(H % window_size == 0 && W % window_size == 0, "window_size=", window_size,
                " must divide the grid H=", H, ", W=", W);
    TORCH_CHECK(shift_size >= 0 && shift_size < window_size, "shift_size must satisfy 0 <= shift_size < window_size=",
                window_size, ", got ", shift_size);
    TORCH_CHECK(H <= INT32_MAX && W <= INT32_MAX && C <= INT32_MAX && B <= INT32_MAX, "q is too large");
    if (mask.has_value()) {
        const at::Tensor& m = *mask;
        CHECK_SAME_DEVICE(m, q);
        const bool shape_ok = (m.dim() == 4 && m.size(0) == B && m.size(1) == H && m.size(2) == W && m.size(3) == 1) ||
                              (m.dim() == 3 && m.size(0) == B && m.size(1) == H && m.size(2) == W);
        TORCH_CHECK(shape_ok, "mask must have shape (B, H, W, 1) or (B, H, W) with (B, H, W) = (", B, ", ", H, ", ", W,
                    "), got ", m.sizes());
        (void)to_kernel_dtype(m.scalar_type(), "mask");
    }
    return Geometry{B, H, W, C, head_dim};
}

void fill_common(WindowAttentionParams& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const std::optional<at::Tensor>& mask, const Geometry& g, int64_t window_size, int64_t shift_size,
                 int64_t num_heads, double scale) {
    p.q = q.data_ptr();
    p.k = k.data_ptr();
    p.v = v.data_ptr();
    for (int i = 0; i < 4; ++i) {
        p.q_stride[i] = q.stride(i);
        p.k_stride[i] = k.stride(i);
        p.v_stride[i] = v.stride(i);
    }
    p.dtype = to_kernel_dtype(q.scalar_type(), "q");
    if (mask.has_value()) {
        p.mask = mask->data_ptr();
        p.mask_dtype = to_kernel_dtype(mask->scalar_type(), "mask");
        for (int i = 0; i < 3; ++i) p.mask_stride[i] = mask->stride(i);  // a trailing size-1 dim is never indexed
    }
    p.B = static_cast<int>(g.B);
    p.H = static_cast<int>(g.H);
    p.W = static_cast<int>(g.W);
    p.C = static_cast<int>(g.C);
    p.num_heads = static_cast<int>(num_heads);
    p.head_dim = static_cast<int>(g.head_dim);
    p.window_size = static_cast<int>(window_size);
    p.shift_size = static_cast<int>(shift_size);
    p.scale = static_cast<float>(scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> window_attention_fwd_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& mask,
    int64_t window_size, int64_t shift_size, int64_t num_heads, double scale) {
    const Geometry g = check_attention_args(q, k, v, mask, window_size, shift_size, num_heads);
    const c10::DeviceGuard guard(q.device());
    at::Tensor out = at::empty({g.B, g.H, g.W, g.C}, q.options());
    at::Tensor lse = at::empty({g.B, num_heads, g.H, g.W}, q.options().dtype(at::kFloat));
    at::Tensor new_mask = mask.has_value() ? at::empty(mask->sizes(), mask->options())  // contiguous
                                           : at::empty({0}, q.options());
    WindowAttentionParams p;
    fill_common(p, q, k, v, mask, g, window_size, shift_size, num_heads, scale);
    p.out = out.data_ptr();
    p.lse = lse.data_ptr<float>();
    p.new_mask = mask.has_value() ? new_mask.data_ptr() : nullptr;
    // MAT_KERNELS_CUDA_SIMT=1 runs fp16/bf16 on the fp32 SIMT kernel instead of tensor cores.
    const char* simt = std::getenv("MAT_KERNELS_CUDA_SIMT");
    p.force_simt = simt != nullptr && std::strcmp(simt, "1") == 0;
    check_launch(launch_window_attention_fwd(p, current_stream(q.device())), "window_attention_fwd_cuda");
    return {out, lse, new_mask};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> window_attention_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& mask, const at::Tensor& out, const at::Tensor& lse, int64_t window_size,
    int64_t shift_size, int64_t num_heads, double scale) {
    const Geometry g = check_attention_args(q, k, v, mask, window_size, shift_size, num_heads);
    TORCH_CHECK(grad_out.sizes() == q.sizes(), "grad_out must have the shape of q ", q.sizes(), ", got ",
                grad_out.sizes());
    CHECK_DTYPE(grad_out, q.scalar_type());
    CHECK_SAME_DEVICE(grad_out, q);
    TORCH_CHECK(out.sizes() == q.sizes(), "out must have the shape of q ", q.sizes(), ", got ", out.sizes());
    CHECK_DTYPE(out, q.scalar_type());
    CHECK_SAME_DEVICE(out, q);
    CHECK_SHAPE(lse, g.B, num_heads, g.H, g.W);
    CHECK_DTYPE(lse, at::kFloat);
    CHECK_SAME_DEVICE(lse, q);
    const c10::DeviceGuard guard(q.device());
    // The kernels index out and lse as contiguous (they come contiguous from the forward).
    const at::Tensor out_c = out.contiguous();
    const at::Tensor lse_c = lse.contiguous();
    at::Tensor dq = at::empty({g.B, g.H, g.W, g.C}, q.options());
    at::Tensor dk = at::empty_like(dq);
    at::Tensor dv = at::empty_like(dq);
    at::Tensor delta = at::empty_like(lse_c);
    WindowAttentionParams p;
    fill_common(p, q, k, v, mask, g, window_size, shift_size, num_heads, scale);
    p.grad_out = grad_out.data_ptr();
    for (int i = 0; i < 4; ++i) p.grad_out_stride[i] = grad_out.stride(i);
    p.fwd_out = out_c.data_ptr();
    p.lse = const_cast<float*>(lse_c.data_ptr<float>());  // read only in the backward
    p.delta = delta.data_ptr<float>();
    p.dq = dq.data_ptr();
    p.dk = dk.data_ptr();
    p.dv = dv.data_ptr();
    check_launch(launch_window_attention_bwd(p, current_stream(q.device())), "window_attention_bwd_cuda");
    return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(mat_kernels, CUDA, m) {
    m.impl("window_attention_fwd_cuda", &window_attention_fwd_cuda);
    m.impl("window_attention_bwd_cuda", &window_attention_bwd_cuda);
}

}  // namespace mat_kernels
