// Element conversions and per-dtype dispatch of the kernels, expanded from the lists of dtypes.h
// (no torch headers).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "launchers.h"

namespace mat_kernels {

// Conversions of each device element type of dtypes.h: to and from float (attention tensors) and
// to and from double (masks, read exactly and written already exact).
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

__device__ __forceinline__ double to_double(float x) { return static_cast<double>(x); }
__device__ __forceinline__ double to_double(double x) { return x; }
__device__ __forceinline__ double to_double(__half x) { return static_cast<double>(__half2float(x)); }
__device__ __forceinline__ double to_double(__nv_bfloat16 x) { return static_cast<double>(__bfloat162float(x)); }
__device__ __forceinline__ double to_double(uint8_t x) { return x ? 1.0 : 0.0; }

template <typename T> __device__ __forceinline__ T from_double(double x);
template <> __device__ __forceinline__ float from_double<float>(double x) { return static_cast<float>(x); }
template <> __device__ __forceinline__ double from_double<double>(double x) { return x; }
template <> __device__ __forceinline__ __half from_double<__half>(double x) { return __double2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_double<__nv_bfloat16>(double x) {
    return __double2bfloat16(x);
}
template <> __device__ __forceinline__ uint8_t from_double<uint8_t>(double x) { return x != 0.0 ? 1 : 0; }

// The switches below run over the lists of dtypes.h. The dtype is uniform across the grid, so a
// switch costs a predictable branch, while a template per dtype would triple the instantiations
// (and the build time) of kernels that compute in fp32. A DType outside the list reads as 0 and
// is not written; the launchers reject it before any launch.

// Element i of an attention tensor of run-time dtype dt, as float.
__device__ __forceinline__ float load_elem(const void* p, DType dt, int64_t i) {
    switch (dt) {
#define MK_LOAD_ELEM(name, value, scalar, T, text) \
    case DType::name: return to_float(static_cast<const T*>(p)[i]);
        MK_ATTENTION_DTYPES(MK_LOAD_ELEM)
#undef MK_LOAD_ELEM
        default: return 0.0f;
    }
}

// Store x, rounded to nearest, as element i of an attention tensor of run-time dtype dt.
__device__ __forceinline__ void store_elem(void* p, DType dt, int64_t i, float x) {
    switch (dt) {
#define MK_STORE_ELEM(name, value, scalar, T, text) \
    case DType::name: static_cast<T*>(p)[i] = from_float<T>(x); break;
        MK_ATTENTION_DTYPES(MK_STORE_ELEM)
#undef MK_STORE_ELEM
        default: break;
    }
}

// Element i of a mask of run-time dtype dt as a double (exact for every mask dtype).
__device__ __forceinline__ double load_mask(const void* p, DType dt, int64_t i) {
    switch (dt) {
#define MK_LOAD_MASK(name, value, scalar, T, text) \
    case DType::name: return to_double(static_cast<const T*>(p)[i]);
        MK_MASK_DTYPES(MK_LOAD_MASK)
#undef MK_LOAD_MASK
        default: return 0.0;
    }
}

// Write a value (already exact in the target dtype, e.g. 0/1 or a clamped sum) as that dtype.
__device__ __forceinline__ void store_mask(void* p, DType dt, int64_t i, double x) {
    switch (dt) {
#define MK_STORE_MASK(name, value, scalar, T, text) \
    case DType::name: static_cast<T*>(p)[i] = from_double<T>(x); break;
        MK_MASK_DTYPES(MK_STORE_MASK)
#undef MK_STORE_MASK
        default: break;
    }
}

// Round a double to a run-time dtype (and back to double), as a tensor op in that dtype would.
__device__ __forceinline__ double round_to(DType dt, double x) {
    switch (dt) {
#define MK_ROUND_TO(name, value, scalar, T, text) \
    case DType::name: return to_double(from_double<T>(x));
        MK_MASK_DTYPES(MK_ROUND_TO)
#undef MK_ROUND_TO
        default: return x;
    }
}

// Host side: f(TypeTag<T>{}) for the device type T of attention dtype dt; the launchers use it to
// pick a kernel instance per dtype.
template <typename T> struct TypeTag {
    using type = T;
};

template <typename F> const char* visit_attention_dtype(DType dt, F&& f) {
    switch (dt) {
#define MK_VISIT(name, value, scalar, T, text) \
    case DType::name: return f(TypeTag<T>{});
        MK_ATTENTION_DTYPES(MK_VISIT)
#undef MK_VISIT
        default: return "unsupported dtype for the attention kernels";
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
