// Interface between the torch-facing glue (*.cpp) and the kernel translation units (*.cu).
//
// Neither side sees the other's headers: the .cu files include no torch header (so they build
// with nvcc alone), and the .cpp glue includes no CUDA kernel code. Tensors cross as raw
// pointers plus element strides; every launcher returns nullptr on success or the CUDA error
// string of the launch.
#pragma once

#include <cstdint>

#include "dtypes.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace mat_kernels {

// Element types a kernel can be asked to read or write (the lists of dtypes.h).
#define MK_DTYPE_ENUMERATOR(name, value, ...) name = value,
enum class DType : int { MK_MASK_DTYPES(MK_DTYPE_ENUMERATOR) };
#undef MK_DTYPE_ENUMERATOR

// Whether q, k, v may have type t.
constexpr bool is_attention_dtype(DType t) {
#define MK_DTYPE_IS(name, ...) t == DType::name ||
    return MK_ATTENTION_DTYPES(MK_DTYPE_IS) false;
#undef MK_DTYPE_IS
}

// Everything the attention kernels need. Strides are in elements. q/k/v/grad_out are (B, H, W, C)
// with arbitrary strides; out/dq/dk/dv are written contiguous (B, H, W, C); lse and delta are
// float32 contiguous (B, heads, H, W); the mask is (B, H, W) addressed with its own strides
// (a trailing size-1 dim is dropped by the glue), any DType, or nullptr.
struct WindowAttentionParams {
    const void* q = nullptr;
    const void* k = nullptr;
    const void* v = nullptr;
    int64_t q_stride[4] = {0, 0, 0, 0};
    int64_t k_stride[4] = {0, 0, 0, 0};
    int64_t v_stride[4] = {0, 0, 0, 0};
    DType dtype = DType::kFloat32;  // of q, k, v, out, grad_out, dq, dk, dv

    const void* mask = nullptr;
    DType mask_dtype = DType::kFloat32;
    int64_t mask_stride[3] = {0, 0, 0};
    void* new_mask = nullptr;  // contiguous (B, H, W), mask_dtype; forward only, may be nullptr

    void* out = nullptr;       // forward output
    float* lse = nullptr;      // forward output, read by the backward

    // Backward only.
    const void* grad_out = nullptr;
    int64_t grad_out_stride[4] = {0, 0, 0, 0};
    const void* fwd_out = nullptr;  // the forward's `out`, contiguous
    float* delta = nullptr;         // scratch: rowsum(grad_out * out), (B, heads, H, W)
    void* dq = nullptr;
    void* dk = nullptr;
    void* dv = nullptr;

    int B = 0, H = 0, W = 0, C = 0;
    int num_heads = 0, head_dim = 0;
    int window_size = 0, shift_size = 0;
    float scale = 1.0f;

    // Forward only: 1 forces the fp32 SIMT kernel for fp16/bf16 too (tests use it to cover both
    // paths; the glue sets it from MAT_KERNELS_CUDA_SIMT=1).
    int force_simt = 0;
};

// Largest head_dim and window token count the attention kernels support.
constexpr int kMaxHeadDim = 128;
constexpr int kMaxWindowTokens = 1024;

const char* launch_window_attention_fwd(const WindowAttentionParams& p, CUstream_st* stream);
// Tensor-core forward (fp16/bf16 only), called by launch_window_attention_fwd.
const char* launch_window_attention_fwd_tensor_core(const WindowAttentionParams& p, CUstream_st* stream);
const char* launch_window_attention_bwd(const WindowAttentionParams& p, CUstream_st* stream);

// new_mask (contiguous (B, H, W), same dtype) = the window rule applied to mask (strided (B, H, W)).
const char* launch_window_mask_update(const void* mask, DType dtype, const int64_t mask_stride[3],
                                      void* new_mask, int B, int H, int W, int window_size,
                                      int shift_size, CUstream_st* stream);

// Partial-convolution mask rule on a (B, 1, H, W) mask (strided) of `in_dtype`; new_mask and ratio
// are contiguous (B, 1, H_out, W_out) of `out_dtype` (float32 for a bool input, else in_dtype).
const char* launch_partial_conv_mask_update(const void* mask, DType in_dtype, const int64_t mask_stride[4],
                                            void* new_mask, void* ratio, DType out_dtype, int B, int H,
                                            int W, int H_out, int W_out, int kernel_size, int stride,
                                            CUstream_st* stream);

}  // namespace mat_kernels
