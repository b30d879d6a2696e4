// Runs the kernels of csrc/*.cu on the CPU, for tests without a GPU (tests/cuda/test_emulated.py).
//
// Force-included (g++ -include) before a .cu file compiled as C++ with -DMK_HOST_EMULATION.
// A launch runs the grid's blocks one after another on blockDim.x OS threads,
// so __syncthreads is a real barrier, __shared__ variables are function statics (one block at a
// time uses them), and a warp shuffle exchanges values through a per-warp buffer between two
// warp barriers. This checks the kernels' indexing, tiling, online softmax, reductions and
// barriers; it cannot check GPU-only behaviour (memory model, compiler code generation, speed).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>  // dim3, cudaStream_t (types only; no runtime call is made)

#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

// cuda_runtime.h defines these for nvcc; on the host they become plain C++.
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

namespace mk_emu {

inline thread_local dim3 thread_idx;
inline thread_local dim3 block_idx;
inline dim3 block_dim;
inline dim3 grid_dim;
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline double warp_buffer[32][32];  // [warp][lane]; doubles hold float and double exactly

template <typename Body> void launch(dim3 grid, dim3 block, Body body) {
    const unsigned threads = block.x * block.y * block.z;
    grid_dim = grid;
    block_dim = block;
    block_barrier = std::make_unique<std::barrier<>>(threads);
    warp_barriers.clear();
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
    // One OS thread per CUDA thread, reused for every block; the barrier after each block keeps
    // a block's __shared__ statics from being overwritten while other threads still read them.
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([=] {
            thread_idx = dim3(t, 0, 0);
            for (unsigned z = 0; z < grid.z; ++z)
                for (unsigned y = 0; y < grid.y; ++y)
                    for (unsigned x = 0; x < grid.x; ++x) {
                        block_idx = dim3(x, y, z);
                        body();
                        block_barrier->arrive_and_wait();
                    }
        });
    for (auto& th : pool) th.join();
}

}  // namespace mk_emu

#define threadIdx (::mk_emu::thread_idx)
#define blockIdx (::mk_emu::block_idx)
#define blockDim (::mk_emu::block_dim)
#define gridDim (::mk_emu::grid_dim)

inline void __syncthreads() { ::mk_emu::block_barrier->arrive_and_wait(); }

template <typename T> T __shfl_xor_sync(unsigned, T value, int lane_mask) {
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    ::mk_emu::warp_buffer[warp][lane] = static_cast<double>(value);
    ::mk_emu::warp_barriers[warp]->arrive_and_wait();
    const T other = static_cast<T>(::mk_emu::warp_buffer[warp][lane ^ lane_mask]);
    ::mk_emu::warp_barriers[warp]->arrive_and_wait();
    return other;
}

inline void __syncwarp(unsigned = 0xffffffffu) { ::mk_emu::warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }

// WMMA (16x16x16 only). A fragment's element layout is unspecified on the GPU, so code may only
// use it through these collective calls (and uniform element-wise ops); here every lane holds
// the whole tile: A as x[m * 16 + k], B as x[k * 16 + n], accumulators as x[m * 16 + n].
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulator implements 16x16x16 only");
    static constexpr int num_elements = 256;
    T x[256];
};

inline float to_f(float v) { return v; }
inline float to_f(__half v) { return __half2float(v); }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename F, typename V> void fill_fragment(F& f, V v) {
    for (auto& e : f.x) e = v;
}

template <typename T, typename L>
void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
    constexpr bool row = std::is_same_v<L, row_major>;
    for (int m = 0; m < 16; ++m)
        for (int k = 0; k < 16; ++k) f.x[m * 16 + k] = row ? p[m * ldm + k] : p[k * ldm + m];
}

template <typename T, typename L>
void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
    constexpr bool row = std::is_same_v<L, row_major>;
    for (int k = 0; k < 16; ++k)
        for (int n = 0; n < 16; ++n) f.x[k * 16 + n] = row ? p[k * ldm + n] : p[n * ldm + k];
}

template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
    float out[256];
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n) {
            float acc = c.x[m * 16 + n];
            for (int k = 0; k < 16; ++k) acc += to_f(a.x[m * 16 + k]) * to_f(b.x[k * 16 + n]);
            out[m * 16 + n] = acc;
        }
    for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}

// One lane writes (all lanes hold the same tile); the kernel's __syncwarp orders the reads after.
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
    if (threadIdx.x % 32 != 0) return;
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n) {
            if (layout == mem_row_major)
                p[m * ldm + n] = f.x[m * 16 + n];
            else
                p[n * ldm + m] = f.x[m * 16 + n];
        }
}
}  // namespace wmma
}  // namespace nvcuda

// kernel<<<grid, block, 0, stream>>>(args...) for the emulator.
#define MK_LAUNCH(kernel, grid, block, stream, ...) \
    ::mk_emu::launch(dim3(grid), dim3(block), [&] { kernel(__VA_ARGS__); })
