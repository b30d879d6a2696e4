"""The reference as a backend of ``mat_kernels.ops``: runs on every device and dtype."""
from .attention import window_attention
from .mask_update import partial_conv_mask_update, window_mask_update

__all__ = ["window_attention", "window_mask_update", "partial_conv_mask_update", "not_supported_reasons"]


def not_supported_reasons(op: str, facts: dict):
    return []
