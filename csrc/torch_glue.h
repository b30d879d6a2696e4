// Helpers of the torch-facing glue (host C++ only): the torch dtype of each kernel DType (from
// dtypes.h) and the current stream.
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

#include <optional>
#include <string>

#include "checks.h"
#include "launchers.h"

namespace mat_kernels {

// The kernel DType of a torch dtype, or nullopt when the kernels take no such type.
inline std::optional<DType> kernel_dtype(c10::ScalarType t) {
    switch (t) {
#define MK_DTYPE_CASE(name, value, scalar, ...) \
    case c10::ScalarType::scalar: return DType::name;
        MK_MASK_DTYPES(MK_DTYPE_CASE)
#undef MK_DTYPE_CASE
        default: return std::nullopt;
    }
}

// "float32, float16, ..." for error messages.
inline std::string attention_dtype_names() {
    std::string names;
#define MK_DTYPE_TEXT(name, value, scalar, device_type, text) names += names.empty() ? text : ", " text;
    MK_ATTENTION_DTYPES(MK_DTYPE_TEXT)
    return names;
}

inline std::string mask_dtype_names() {
    std::string names;
    MK_MASK_DTYPES(MK_DTYPE_TEXT)
#undef MK_DTYPE_TEXT
    return names;
}

// The kernel DType of a mask tensor's dtype (an error naming the argument if it has none).
inline DType to_kernel_dtype(c10::ScalarType t, const char* name) {
    const std::optional<DType> dt = kernel_dtype(t);
    TORCH_CHECK(dt.has_value(), name, " has unsupported dtype ", t, " (expected one of ", mask_dtype_names(), ")");
    return *dt;
}

inline bool is_attention_dtype(c10::ScalarType t) {
    const std::optional<DType> dt = kernel_dtype(t);
    return dt.has_value() && is_attention_dtype(*dt);
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
