"""Modules with MAT's official names and signatures, backed by ``mat_kernels.ops``."""
from .attention import Mlp, SwinTransformerBlock, WindowAttention
from .layers import FullyConnectedLayer, bias_act

__all__ = ["FullyConnectedLayer", "Mlp", "SwinTransformerBlock", "WindowAttention", "bias_act"]
