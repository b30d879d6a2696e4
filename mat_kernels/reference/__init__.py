"""Pure-PyTorch reference of MAT's attention and mask updates: the ground truth of every kernel."""
from .attention import window_attention, windowed_attention
from .mask_update import partial_conv_mask_update, window_mask_update
from .windows import MASK_BIAS, shift_attention_bias, window_partition, window_reverse

__all__ = ["window_attention", "windowed_attention", "window_mask_update", "partial_conv_mask_update",
           "shift_attention_bias", "window_partition", "window_reverse", "MASK_BIAS"]
