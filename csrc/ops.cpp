// Schemas of the compiled ops (namespace mat_kernels, suffix _cuda: the Triton backend registers
// its *_triton ops in the same namespace as a FRAGMENT). Implementations are registered per
// dispatch key elsewhere: CUDA in window_attention_api.cpp / mask_update_api.cpp, fake (meta)
// kernels and autograd in mat_kernels/cuda/library.py.
#include <torch/library.h>

TORCH_LIBRARY(mat_kernels, m) {
    // -> (out (B, H, W, C), lse (B, heads, H, W) float32, new_mask (mask's shape/dtype; empty (0,) when mask is None))
    m.def("window_attention_fwd_cuda(Tensor q, Tensor k, Tensor v, Tensor? mask, int window_size, "
          "int shift_size, int num_heads, float scale) -> (Tensor, Tensor, Tensor)");
    // -> (dq, dk, dv), each (B, H, W, C)
    m.def("window_attention_bwd_cuda(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor? mask, Tensor out, "
          "Tensor lse, int window_size, int shift_size, int num_heads, float scale) -> (Tensor, Tensor, Tensor)");
    // -> new_mask, shape and dtype of mask
    m.def("window_mask_update_cuda(Tensor mask, int window_size, int shift_size) -> Tensor");
    // -> (new_mask, ratio), each (B, 1, H_out, W_out)
    m.def("partial_conv_mask_update_cuda(Tensor mask, int kernel_size, int stride) -> (Tensor, Tensor)");
}
