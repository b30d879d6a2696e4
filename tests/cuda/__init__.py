"""Tests of the compiled CUDA backend (csrc/, mat_kernels/_ext.py, mat_kernels/cuda.py)."""
