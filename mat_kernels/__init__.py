"""mat_kernels: fused kernels and a faithful PyTorch implementation of MAT (CVPR 2022)."""
from .ops import partial_conv_mask_update, window_attention, window_mask_update

__version__ = "0.1.0"
__all__ = ["window_attention", "window_mask_update", "partial_conv_mask_update", "__version__"]
