"""Pure-PyTorch reference of MAT's attention, mask updates and bias+activation: the ground truth
of every kernel, and the backend ``"reference"`` (every device and dtype). The public functions
validate their arguments; the ``*_core`` functions are the backend's entry points, run on
arguments :mod:`mat_kernels.ops` already validated."""
from typing import List

from .attention import window_attention, window_attention_core, windowed_attention
from .bias_act import ACTIVATIONS, bias_act, bias_act_core
from .mask_update import (partial_conv_mask_update, partial_conv_mask_update_core, window_mask_update,
                          window_mask_update_core)
from .windows import MASK_BIAS, from_windows, shift_attention_bias, to_windows, window_partition, window_reverse

__all__ = ["window_attention", "windowed_attention", "window_mask_update", "partial_conv_mask_update",
           "bias_act", "ACTIVATIONS", "shift_attention_bias", "window_partition", "window_reverse", "to_windows", "from_windows",
           "MASK_BIAS",
           "window_attention_core", "window_mask_update_core", "partial_conv_mask_update_core", "bias_act_core",
           "not_supported_reasons", "ENTRY_POINTS"]

ENTRY_POINTS = {"window_attention": window_attention_core, "window_mask_update": window_mask_update_core,
                "partial_conv_mask_update": partial_conv_mask_update_core, "bias_act": bias_act_core}


def not_supported_reasons(op: str, facts) -> List[str]:
    return []
