// Argument checks of the CUDA glue. Each message names the argument and what was expected, so a
// bad call fails in C++ with a readable error before any kernel is launched.
#pragma once

#include <c10/util/Exception.h>

#define CHECK_CUDA(x) TORCH_CHECK((x).is_cuda(), #x " must be a CUDA tensor, got a tensor on ", (x).device())

#define CHECK_SAME_DEVICE(x, y) \
    TORCH_CHECK((x).device() == (y).device(), #x " must be on the same device as " #y " (", (y).device(), "), got ", (x).device())

#define CHECK_DTYPE(x, dt) TORCH_CHECK((x).scalar_type() == (dt), #x " must have dtype ", (dt), ", got ", (x).scalar_type())

#define CHECK_DIM(x, n) TORCH_CHECK((x).dim() == (n), #x " must have ", (n), " dimensions, got shape ", (x).sizes())

// CHECK_SHAPE(x, d0, d1, ...): exact sizes.
#define CHECK_SHAPE(x, ...)                                                                          \
    TORCH_CHECK((x).sizes() == c10::IntArrayRef({__VA_ARGS__}), #x " must have shape (" #__VA_ARGS__ \
                ") = ", c10::IntArrayRef({__VA_ARGS__}), ", got ", (x).sizes())

#define CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
