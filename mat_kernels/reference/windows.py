"""Window helpers of MAT/Swin, written as the official op sequence: partition, reverse,
the cyclic shift and the shift-region bias."""
from __future__ import annotations

import torch

# The additive bias MAT uses for a masked pair. It is deliberately finite (not -inf): biases add
# (-200 for a key both invalid and in another shift region) and a window whose keys are all
# masked degrades to plain attention, because softmax is invariant to a common shift.
MASK_BIAS = -100.0


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws, ws, C); window index b * nW + wy * (W // ws) + wx."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B * (H // window_size) * (W // window_size), window_size,
                                                          window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """Exact inverse of :func:`window_partition`: (B * nW, ws, ws, C) -> (B, H, W, C).

    The sizes are spelled out (no -1), so an empty batch (B = 0) works too."""
    B = windows.shape[0] // ((H // window_size) * (W // window_size))
    C = windows.shape[-1]
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, C)


def to_windows(x: torch.Tensor, window_size: int, shift_size: int = 0) -> torch.Tensor:
    """Cyclic shift by -shift_size, then partition: (B, H, W, C) -> (B * nW, ws * ws, C), the
    token order of a shifted Swin block's windows."""
    if shift_size > 0:
        x = torch.roll(x, shifts=(-shift_size, -shift_size), dims=(1, 2))
    windows = window_partition(x, window_size)
    return windows.view(windows.shape[0], window_size * window_size, x.shape[-1])


def from_windows(windows: torch.Tensor, window_size: int, shift_size: int, H: int, W: int) -> torch.Tensor:
    """Exact inverse of :func:`to_windows`: (B * nW, ws * ws, C) -> (B, H, W, C), shifted back."""
    x = window_reverse(windows.reshape(windows.shape[0], window_size, window_size, windows.shape[-1]),
                       window_size, H, W)
    if shift_size > 0:
        x = torch.roll(x, shifts=(shift_size, shift_size), dims=(1, 2))
    return x


def shift_region_ids(H: int, W: int, window_size: int, shift_size: int, device=None) -> torch.Tensor:
    """The 9-region labelling of the rolled grid, (H, W) int64: id = 3 * row_part + col_part.

    Rows split into [0, H - ws), [H - ws, H - s), [H - s, H), columns likewise. Two tokens of a
    shifted window interact without bias only when their ids agree.
    """
    img = torch.zeros((H, W), dtype=torch.int64, device=device)
    bounds = lambda n: (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    for i, hs in enumerate(bounds(H)):
        for j, ws in enumerate(bounds(W)):
            img[hs, ws] = 3 * i + j
    return img


def shift_attention_bias(H: int, W: int, window_size: int, shift_size: int, device=None,
                         dtype=torch.float32) -> torch.Tensor:
    """MAT's ``calculate_mask``: (nW, N, N) with 0 within a region and -100 across regions.

    All zeros when ``shift_size == 0`` (the official block adds it anyway; it is a no-op).
    """
    N = window_size * window_size
    if shift_size == 0:
        return torch.zeros((H // window_size) * (W // window_size), N, N, device=device, dtype=dtype)
    ids = shift_region_ids(H, W, window_size, shift_size, device).to(dtype)
    ids = window_partition(ids[None, :, :, None], window_size).view(-1, N)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return diff.masked_fill(diff != 0, MASK_BIAS).masked_fill(diff == 0, 0.0)
