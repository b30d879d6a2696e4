// The element types of the CUDA backend, named once. The DType enum (launchers.h), the torch
// dtype mapping of the glue (torch_glue.h), the element conversions and the per-dtype dispatch of
// the kernels (dtype_utils.cuh) are all expanded from these lists, so a dtype is added here.
//
// Each entry is X(name, value, scalar, device_type, text):
//   name         enumerator of mat_kernels::DType
//   value        its integer value (tests/cuda/_emulation.py passes these values through ctypes)
//   scalar       the c10::ScalarType enumerator
//   device_type  the element type in kernel code (from cuda_fp16.h / cuda_bf16.h; bool is 1 byte)
//   text         the name in error messages
// No header is included: the glue expands only the first columns, the kernels all of them.
#pragma once

// Types of q, k, v, out, grad_out and the gradients.
#define MK_ATTENTION_DTYPES(X)                \
    X(kFloat32, 0, Float, float, "float32")   \
    X(kFloat16, 1, Half, __half, "float16")   \
    X(kBFloat16, 2, BFloat16, __nv_bfloat16, "bfloat16")

// Types a mask may have besides the attention types.
#define MK_MASK_ONLY_DTYPES(X)                \
    X(kFloat64, 3, Double, double, "float64") \
    X(kBool, 4, Bool, uint8_t, "bool")

// Types of the masks of every op.
#define MK_MASK_DTYPES(X) MK_ATTENTION_DTYPES(X) MK_MASK_ONLY_DTYPES(X)
