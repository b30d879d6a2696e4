// Index arithmetic of MAT's shifted windows and its two additive biases.
//
// Everything here is a pure function of integers (and one float), usable from kernels and from
// the host test in csrc/tests/host_index_test.cpp, which is compiled by a plain C++ compiler and
// compared with mat_kernels.reference. Keeping the arithmetic in one place means the kernels and
// the test cannot drift apart.
//
// Frames: the "rolled frame" is the grid after torch.roll(x, (-s, -s), dims=(H, W)); windows are
// cut from it. Token t = ty * ws + tx of window (wy, wx) sits at rolled position
// (wy * ws + ty, wx * ws + tx) and reads the image at ((wy * ws + ty + s) % H, (wx * ws + tx + s) % W).
// Results are written back to that same image position, which is the un-shifted layout.
#pragma once

#if defined(__CUDACC__)
#define MK_HD __host__ __device__ __forceinline__
#else
#define MK_HD inline
#endif

namespace mat_kernels {

// The finite bias MAT adds for a masked pair (not -inf: a window whose keys are all masked must
// degrade to plain attention instead of producing NaN, and two masks add to -200).
constexpr float kMaskBias = -100.0f;

// Image coordinate (row or column) read by window index w, in-window index t, shift s, extent n.
MK_HD int source_coord(int w, int t, int ws, int s, int n) {
    return (w * ws + t + s) % n;
}

// Which of the three stripes of the rolled frame a rolled coordinate p falls in:
// [0, n - ws) -> 0, [n - ws, n - s) -> 1, [n - s, n) -> 2. Only meaningful for s > 0; with s == 0
// every token gets stripe 0 (the official bias is all zeros then).
MK_HD int shift_stripe(int p, int n, int ws, int s) {
    if (s == 0) return 0;
    return p < n - ws ? 0 : (p < n - s ? 1 : 2);
}

// The 9-region label 3 * row_stripe + col_stripe of the rolled position (py, px).
MK_HD int shift_region(int py, int px, int H, int W, int ws, int s) {
    return 3 * shift_stripe(py, H, ws, s) + shift_stripe(px, W, ws, s);
}

// Region label of token t of window (wy, wx).
MK_HD int token_region(int wy, int wx, int t, int H, int W, int ws, int s) {
    return shift_region(wy * ws + t / ws, wx * ws + t % ws, H, W, ws, s);
}

// Shift-region bias between a query and a key of one window: 0 within a region, -100 across.
MK_HD float shift_bias(int query_region, int key_region) {
    return query_region == key_region ? 0.0f : kMaskBias;
}

// Key-validity bias of MAT: exact 0 -> -100, exact 1 -> 0, any other value is added as it is
// (NaN stays NaN). `m` is the mask's own value, in a type that holds it exactly (double for any
// mask dtype): the rule compares the mask's values, never values rounded to the attention dtype.
template <typename T> MK_HD T key_bias(T m) {
    return m == T(0) ? T(kMaskBias) : (m == T(1) ? T(0) : m);
}

// Decompose a window number of the flattened (B * nW) axis: b, wy, wx (window index fastest in
// B_, row-major over windows, as window_partition orders them).
struct WindowId {
    int b, wy, wx;
};

MK_HD WindowId window_id(long long bw, int H, int W, int ws) {
    const int nwx = W / ws, nw = (H / ws) * nwx;
    WindowId id;
    id.b = static_cast<int>(bw / nw);
    const int w = static_cast<int>(bw % nw);
    id.wy = w / nwx;
    id.wx = w % nwx;
    return id;
}

}  // namespace mat_kernels
