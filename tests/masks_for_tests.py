"""Token-mask patterns shared by every attention and mask-update test (1 = valid, 0 = hole)."""
from __future__ import annotations

import torch

MASK_PATTERNS = ("none", "all_valid", "all_holes", "random", "one_valid_per_window", "large_hole")


def make_mask(pattern: str, B: int, H: int, W: int, window: int, generator=None, dtype=torch.float64):
    """(B, H, W, 1) mask of the given pattern, or None for "none"."""
    if pattern == "none":
        return None
    if pattern == "all_valid":
        m = torch.ones(B, H, W, 1)
    elif pattern == "all_holes":
        m = torch.zeros(B, H, W, 1)
    elif pattern == "random":
        m = (torch.rand(B, H, W, 1, generator=generator) > 0.5).float()
    elif pattern == "one_valid_per_window":
        m = torch.zeros(B, H, W, 1)
        for wy in range(H // window):
            for wx in range(W // window):
                y = wy * window + int(torch.randint(window, (1,), generator=generator))
                x = wx * window + int(torch.randint(window, (1,), generator=generator))
                m[:, y, x] = 1
    elif pattern == "large_hole":
        # A hole that crosses window borders and, for shifted windows, the shift regions:
        # rows and columns from a quarter to the last three quarters plus a few tokens.
        m = torch.ones(B, H, W, 1)
        m[:, H // 4 - 1: H - H // 8, W // 4 - 3: W - 1] = 0
    else:
        raise ValueError(f"unknown mask pattern {pattern!r}")
    return m.to(dtype)
