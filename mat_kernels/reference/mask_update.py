"""MAT's two mask-update rules, in plain PyTorch."""
from __future__ import annotations

import contextlib
from typing import Tuple

import torch
import torch.nn.functional as F

from .. import _checks
from .attention import _as_token_mask, windowed_mask_update
from .windows import from_windows, to_windows


def window_mask_update(mask: torch.Tensor, *, window_size: int, shift_size: int = 0) -> torch.Tensor:
    """The attention layer's mask rule alone: after a (shifted) window attention, every token of
    a window is valid if any token of that window was valid.

    Args:
        mask: (B, H, W, 1) or (B, H, W), bool or float (1 valid, 0 hole).
    Returns:
        The new mask, same shape and dtype, in the un-shifted layout.

    As in :func:`~mat_kernels.reference.window_attention` (the same rule, in every backend): the
    sum runs in at least float32 (float64 masks in float64), a NaN makes its whole window NaN
    (clamp keeps NaN), B = 0 gives an empty mask and zero H or W is a ValueError.
    """
    window_size, shift_size = _checks.as_ints(window_size=window_size, shift_size=shift_size)
    _checks.check_window_mask_update_args(mask, window_size, shift_size)
    return window_mask_update_core(mask, window_size, shift_size)


def window_mask_update_core(mask: torch.Tensor, window_size: int, shift_size: int) -> torch.Tensor:
    """:func:`window_mask_update` for arguments already validated."""
    H, W = mask.shape[1:3]
    new = windowed_mask_update(to_windows(_as_token_mask(mask), window_size, shift_size))
    new = from_windows(new, window_size, shift_size, H, W)
    return new.squeeze(-1) if mask.ndim == 3 else new


def _autocast_off(device_type: str):
    """A context that disables autocast on ``device_type`` if it is on, else does nothing."""
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def partial_conv_mask_update(mask: torch.Tensor, *, kernel_size: int, stride: int = 1
                             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The mask rule of MAT's ``Conv2dLayerPartial``.

    S = conv2d(mask, ones(k, k), stride, padding k // 2) counts valid inputs under each output;
    ``ratio = k^2 / (S + 1e-8) * clamp(S, 0, 1)`` rescales the convolution's activated output and
    ``new_mask = clamp(S, 0, 1)``. Counts include the zero padding, so borders are rescaled even
    for an all-valid mask.

    Precision (a decision of this project; the official code only ever runs in float32): for
    float16 and bfloat16 masks, S and the ratio are computed in float32 and each result is
    rounded once to the mask's dtype. Evaluated in float16 the rule breaks: 1e-8 is below
    float16's smallest subnormal (~6e-8), so ``S + 1e-8`` is exactly 0 at a hole,
    ``k^2 / 0 = inf`` and ``inf * 0 = NaN`` - every hole's ratio, and with it the partial conv's
    output, would be NaN. float32 masks follow the official op sequence unchanged (bit-identical
    results), float64 masks compute in float64.

    Args:
        mask: (B, 1, H, W), bool or float.
        kernel_size: odd window side k.
        stride: the layer's ``down`` factor.
    Returns:
        (new_mask, ratio), each (B, 1, H_out, W_out) in the mask's floating dtype (float32 for bool).

    In every backend: a NaN in the mask makes S, hence new_mask and ratio, NaN at every output
    whose k x k box holds it (as the official conv2d/clamp sequence does); B = 0 gives empty
    results; zero H or W is a ValueError. The mask gets no gradient.
    """
    kernel_size, stride = _checks.as_ints(kernel_size=kernel_size, stride=stride)
    _checks.check_partial_conv_args(mask, kernel_size, stride)
    return partial_conv_mask_update_core(mask, kernel_size, stride)


def partial_conv_mask_update_core(mask: torch.Tensor, kernel_size: int, stride: int
                                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`partial_conv_mask_update` for arguments already validated."""
    out_dtype = torch.float32 if mask.dtype == torch.bool else mask.dtype
    # bool, float16 and bfloat16 masks are counted in float32 (exact for every value they hold).
    m = mask if mask.dtype in (torch.float32, torch.float64) else mask.float()
    weight = torch.ones(1, 1, kernel_size, kernel_size, dtype=m.dtype, device=m.device)
    # Autocast would run the conv in float16/bfloat16 again (and bring the NaN back): keep it off.
    with torch.no_grad(), _autocast_off(m.device.type):
        update = F.conv2d(m, weight, bias=None, stride=stride, padding=kernel_size // 2)
        ratio = kernel_size ** 2 / (update + 1e-8)
        update = torch.clamp(update, 0, 1)
        ratio = torch.mul(ratio, update)
    return update.to(out_dtype), ratio.to(out_dtype)
