"""Tests of the compiled CUDA backend (csrc/, mat_kernels/cuda/library.py, mat_kernels/backends/cuda.py)."""
