// Element conversions shared by the kernels (device code only; no torch headers).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "launchers.h"

namespace mat_kernels {

// Element i of an attention tensor (float32, float16 or bfloat16, chosen at run time) as float.
// The switch is uniform across the grid, so it costs a predictable branch, while a template per
// dtype would triple the instantiations (and the build time) of kernels that compute in fp32.
__device__ __forceinline__ float load_elem(const void* p, DType dt, int64_t i) {
    switch (dt) {
        case DType::kFloat16: return __half2float(static_cast<const __half*>(p)[i]);
        case DType::kBFloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
        default: return static_cast<const float*>(p)[i];
    }
}

__device__ __forceinline__ void store_elem(void* p, DType dt, int64_t i, float x) {
    switch (dt) {
        case DType::kFloat16: static_cast<__half*>(p)[i] = __float2half_rn(x); break;
        case DType::kBFloat16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(x); break;
        default: static_cast<float*>(p)[i] = x; break;
    }
}

// Read element i of a mask of runtime dtype as a double (exact for every supported dtype).
__device__ __forceinline__ double load_mask(const void* p, DType dt, int64_t i) {
    switch (dt) {
        case DType::kBool: return static_cast<const uint8_t*>(p)[i] ? 1.0 : 0.0;
        case DType::kFloat16: return static_cast<double>(__half2float(static_cast<const __half*>(p)[i]));
        case DType::kBFloat16:
            return static_cast<double>(__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]));
        case DType::kFloat64: return static_cast<const double*>(p)[i];
        default: return static_cast<double>(static_cast<const float*>(p)[i]);
    }
}

// Write a value (already exact in the target dtype, e.g. 0/1 or a clamped sum) as that dtype.
__device__ __forceinline__ void store_mask(void* p, DType dt, int64_t i, double x) {
    switch (dt) {
        case DType::kBool: static_cast<uint8_t*>(p)[i] = x != 0.0 ? 1 : 0; break;
        case DType::kFloat16: static_cast<__half*>(p)[i] = __double2half(x); break;
        case DType::kBFloat16: static_cast<__nv_bfloat16*>(p)[i] = __double2bfloat16(x); break;
        case DType::kFloat64: static_cast<double*>(p)[i] = x; break;
        default: static_cast<float*>(p)[i] = static_cast<float>(x); break;
    }
}

// Round a double to a runtime dtype (and back to double), as a tensor op in that dtype would.
__device__ __forceinline__ double round_to(DType dt, double x) {
    switch (dt) {
        case DType::kFloat16: return static_cast<double>(__half2float(__double2half(x)));
        case DType::kBFloat16: return static_cast<double>(__bfloat162float(__double2bfloat16(x)));
        case DType::kFloat64: return x;
        default: return static_cast<double>(static_cast<float>(x));
    }
}

// Host side: the launch status every launcher returns (nullptr when the launch succeeded).
#if defined(MK_HOST_EMULATION)
inline const char* last_launch_error() { return nullptr; }
#else
inline const char* last_launch_error() {
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}
#endif

// kernel<<<grid, block, 0, stream>>>(args...); csrc/tests/host_cuda_shim.h redefines it so the
// kernels can also run on the CPU in tests.
#if !defined(MK_LAUNCH)
#define MK_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif

}  // namespace mat_kernels
