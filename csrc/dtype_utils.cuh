// Element conversions shared by the kernels (device code only; no torch headers).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "launchers.h"

namespace mat_kernels {

template <typename T> struct Convert;

template <> struct Convert<float> {
    static __device__ __forceinline__ float to_float(float x) { return x; }
    static __device__ __forceinline__ float from_float(float x) { return x; }
    // Round a double to this dtype once (the official code casts the mask straight to it).
    static __device__ __forceinline__ float round_double(double x) { return static_cast<float>(x); }
};

template <> struct Convert<__half> {
    static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
    static __device__ __forceinline__ __half from_float(float x) { return __float2half_rn(x); }
    static __device__ __forceinline__ float round_double(double x) { return __half2float(__double2half(x)); }
};

template <> struct Convert<__nv_bfloat16> {
    static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
    static __device__ __forceinline__ float round_double(double x) {
        return __bfloat162float(__double2bfloat16(x));
    }
};

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
inline const char* last_launch_error() {
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace mat_kernels
