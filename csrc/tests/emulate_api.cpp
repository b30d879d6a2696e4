// C entry points over the launchers, for tests/cuda/test_emulated.py (ctypes). Built together with
// the kernel files as host C++ with csrc/tests/host_cuda_shim.h force-included, so the unchanged
// kernels run on the CPU. Tensors are passed as raw pointers with element strides, as the glue
// in csrc/*_api.cpp passes them.
#include <cstdint>

#include "launchers.h"

using namespace mat_kernels;

namespace {

// The fields both attention launchers read, as csrc/window_attention_api.cpp fills them.
WindowAttentionParams attention_params(const void* q, const void* k, const void* v, const int64_t* q_stride,
                                       const int64_t* k_stride, const int64_t* v_stride, int dtype, const void* mask,
                                       int mask_dtype, const int64_t* mask_stride, int B, int H, int W, int C,
                                       int num_heads, int window_size, int shift_size, float scale) {
    WindowAttentionParams p;
    p.q = q;
    p.k = k;
    p.v = v;
    for (int i = 0; i < 4; ++i) {
        p.q_stride[i] = q_stride[i];
        p.k_stride[i] = k_stride[i];
        p.v_stride[i] = v_stride[i];
    }
    p.dtype = static_cast<DType>(dtype);
    p.mask = mask;
    p.mask_dtype = static_cast<DType>(mask_dtype);
    if (mask)
        for (int i = 0; i < 3; ++i) p.mask_stride[i] = mask_stride[i];
    p.B = B;
    p.H = H;
    p.W = W;
    p.C = C;
    p.num_heads = num_heads;
    p.head_dim = C / num_heads;
    p.window_size = window_size;
    p.shift_size = shift_size;
    p.scale = scale;
    return p;
}

}  // namespace

extern "C" {

const char* emu_window_attention_fwd(const void* q, const void* k, const void* v, const int64_t* q_stride,
                                     const int64_t* k_stride, const int64_t* v_stride, int dtype, const void* mask,
                                     int mask_dtype, const int64_t* mask_stride, void* new_mask, void* out,
                                     float* lse, int B, int H, int W, int C, int num_heads, int window_size,
                                     int shift_size, float scale, int force_simt) {
    WindowAttentionParams p = attention_params(q, k, v, q_stride, k_stride, v_stride, dtype, mask, mask_dtype,
                                               mask_stride, B, H, W, C, num_heads, window_size, shift_size, scale);
    p.force_simt = force_simt;
    p.new_mask = new_mask;
    p.out = out;
    p.lse = lse;
    return launch_window_attention_fwd(p, nullptr);
}

const char* emu_window_attention_bwd(const void* grad_out, const int64_t* grad_out_stride, const void* q,
                                     const void* k, const void* v, const int64_t* q_stride, const int64_t* k_stride,
                                     const int64_t* v_stride, int dtype, const void* mask, int mask_dtype,
                                     const int64_t* mask_stride, const void* out, float* lse, float* delta, void* dq,
                                     void* dk, void* dv, int B, int H, int W, int C, int num_heads, int window_size,
                                     int shift_size, float scale) {
    WindowAttentionParams p = attention_params(q, k, v, q_stride, k_stride, v_stride, dtype, mask, mask_dtype,
                                               mask_stride, B, H, W, C, num_heads, window_size, shift_size, scale);
    p.grad_out = grad_out;
    for (int i = 0; i < 4; ++i) p.grad_out_stride[i] = grad_out_stride[i];
    p.fwd_out = out;
    p.lse = lse;
    p.delta = delta;
    p.dq = dq;
    p.dk = dk;
    p.dv = dv;
    return launch_window_attention_bwd(p, nullptr);
}

const char* emu_window_mask_update(const void* mask, int dtype, const int64_t* stride, void* new_mask, int B, int H,
                                   int W, int window_size, int shift_size) {
    return launch_window_mask_update(mask, static_cast<DType>(dtype), stride, new_mask, B, H, W, window_size,
                                     shift_size, nullptr);
}

const char* emu_partial_conv_mask_update(const void* mask, int in_dtype, const int64_t* stride, void* new_mask,
                                         void* ratio, int out_dtype, int B, int H, int W, int H_out, int W_out,
                                         int kernel_size, int conv_stride) {
    return launch_partial_conv_mask_update(mask, static_cast<DType>(in_dtype), stride, new_mask, ratio,
                                           static_cast<DType>(out_dtype), B, H, W, H_out, W_out, kernel_size,
                                           conv_stride, nullptr);
}

}  // extern "C"
