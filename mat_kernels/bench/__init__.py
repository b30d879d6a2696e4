"""Benchmarks of MAT's window attention and of the MAT model, by implementation.

``mat-bench`` (:mod:`mat_kernels.cli.bench`) runs them through ``run``; the pieces are importable for
the pytest-benchmark suite under ``benchmarks/`` and for tests: ``cases`` (the shapes and
the ideal byte/FLOP counts), ``peers`` (the implementations), ``suite`` (one case across the
peers), ``timing``, ``model``, ``report`` and ``env``.
"""
from .cases import AttentionCase, Shape, attention_cases, flop_count, ideal_bytes, mat_attention_shapes
from .peers import PEERS

__all__ = ["AttentionCase", "Shape", "attention_cases", "flop_count", "ideal_bytes", "mat_attention_shapes",
           "PEERS"]
