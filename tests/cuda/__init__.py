"""Tests of the compiled CUDA backend (csrc/, mat_kernels/cuda/)."""
