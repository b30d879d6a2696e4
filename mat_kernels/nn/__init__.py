"""Modules with MAT's official names and signatures, backed by ``mat_kernels.ops``."""
from .attention import Mlp, SwinTransformerBlock, WindowAttention
from .blocks import BasicLayer, PatchMerging, PatchUpsampling, feature2token, token2feature
from .layers import (Conv2dLayer, Conv2dLayerPartial, FullyConnectedLayer, MinibatchStdLayer, ModulatedConv2d,
                     StyleConv, ToRGB, apply_bias_act, bias_act, normalize_2nd_moment)
from .resample import conv2d_resample, downsample2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["BasicLayer", "Conv2dLayer", "Conv2dLayerPartial", "FullyConnectedLayer", "MinibatchStdLayer", "Mlp",
           "ModulatedConv2d", "PatchMerging", "PatchUpsampling", "StyleConv", "SwinTransformerBlock", "ToRGB",
           "WindowAttention", "apply_bias_act", "bias_act", "conv2d_resample", "downsample2d", "feature2token",
           "normalize_2nd_moment", "setup_filter", "token2feature", "upfirdn2d", "upsample2d"]
