"""The reference backend: the official op sequence in plain PyTorch, on every device and dtype."""
from __future__ import annotations

from typing import List

from ..reference import (bias_act_core as bias_act, partial_conv_mask_update_core as partial_conv_mask_update,
                         window_attention_core as window_attention,
                         window_mask_update_core as window_mask_update)

__all__ = ["not_supported_reasons", "window_attention", "window_mask_update", "partial_conv_mask_update",
           "bias_act"]


def not_supported_reasons(op: str, facts) -> List[str]:
    return []
