// Host build of csrc/window_index.cuh, driven by tests/cuda/test_host_index.py, which compares
// every printed value with mat_kernels.reference.
//
// Usage: host_index_test B H W window_size shift_size [mask values...]
// Prints, one record per line:
//   window <bw> <b> <wy> <wx>                 decomposition of each flattened window index
//   src <bw> <t> <y> <x>                      image position read by token t of window bw
//   region <py> <px> <id>                     region label of each rolled-frame position
//   shift_bias <w> <i> <N values>             shift-region bias row of query i in window w (batch 0)
//   key_bias <m> <bias>                       key-validity bias of each given mask value
// Floats are printed with 9 significant digits, which round-trips float32 exactly.
#include <cstdio>
#include <cstdlib>

#include "window_index.cuh"

using namespace mat_kernels;

int main(int argc, char** argv) {
    if (argc < 6) {
        std::fprintf(stderr, "usage: %s B H W window_size shift_size [mask values...]\n", argv[0]);
        return 2;
    }
    const int B = std::atoi(argv[1]), H = std::atoi(argv[2]), W = std::atoi(argv[3]);
    const int ws = std::atoi(argv[4]), s = std::atoi(argv[5]);
    if (ws <= 0 || H % ws || W % ws || s < 0 || s >= ws) {
        std::fprintf(stderr, "bad geometry\n");
        return 2;
    }
    const int N = ws * ws, nW = (H / ws) * (W / ws);
    for (long long bw = 0; bw < static_cast<long long>(B) * nW; ++bw) {
        const WindowId id = window_id(bw, H, W, ws);
        std::printf("window %lld %d %d %d\n", bw, id.b, id.wy, id.wx);
        for (int t = 0; t < N; ++t) {
            std::printf("src %lld %d %d %d\n", bw, t, source_coord(id.wy, t / ws, ws, s, H),
                        source_coord(id.wx, t % ws, ws, s, W));
        }
    }
    for (int py = 0; py < H; ++py)
        for (int px = 0; px < W; ++px) std::printf("region %d %d %d\n", py, px, shift_region(py, px, H, W, ws, s));
    for (int w = 0; w < nW; ++w) {
        const WindowId id = window_id(w, H, W, ws);
        for (int i = 0; i < N; ++i) {
            std::printf("shift_bias %d %d", w, i);
            const int ri = token_region(id.wy, id.wx, i, H, W, ws, s);
            for (int j = 0; j < N; ++j) std::printf(" %.9g", shift_bias(ri, token_region(id.wy, id.wx, j, H, W, ws, s)));
            std::printf("\n");
        }
    }
    for (int a = 6; a < argc; ++a) {
        const float m = std::strtof(argv[a], nullptr);
        std::printf("key_bias %.9g %.9g\n", m, key_bias(m));
    }
    return 0;
}
