// Helpers of the torch-facing glue (host C++ only): dtype mapping and the current stream.
//
// The current stream and the device guard go through c10's device-generic interfaces
// (c10::impl::getDeviceGuardImpl, c10::DeviceGuard), which dispatch to the CUDA implementation
// registered by libc10_cuda at run time. That keeps the glue free of c10/cuda headers, so it also
// compiles against a CPU-only torch wheel (tests/cuda/test_compile.py checks it does).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "checks.h"
#include "launchers.h"

namespace mat_kernels {

inline DType to_kernel_dtype(c10::ScalarType t, const char* name) {
    switch (t) {
        case c10::ScalarType::Float: return DType::kFloat32;
        case c10::ScalarType::Half: return DType::kFloat16;
        case c10::ScalarType::BFloat16: return DType::kBFloat16;
        case c10::ScalarType::Double: return DType::kFloat64;
        case c10::ScalarType::Bool: return DType::kBool;
        default: break;
    }
    TORCH_CHECK(false, name, " has unsupported dtype ", t, " (expected bool or a floating dtype)");
    return DType::kFloat32;
}

inline bool is_attention_dtype(c10::ScalarType t) {
    return t == c10::ScalarType::Float || t == c10::ScalarType::Half || t == c10::ScalarType::BFloat16;
}

// The stream PyTorch would launch on for `device` (honours torch.cuda.stream contexts).
inline CUstream_st* current_stream(const c10::Device& device) {
    const c10::Stream stream = c10::impl::getDeviceGuardImpl(device.type())->getStream(device);
    return static_cast<CUstream_st*>(stream.native_handle());
}

inline void check_launch(const char* err, const char* op) {
    TORCH_CHECK(err == nullptr, op, ": CUDA kernel launch failed: ", err ? err : "");
}

}  // namespace mat_kernels
