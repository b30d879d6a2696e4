"""Test-side route-around for an inductor bug hit by the reference attention's op order.

Inductor's attention pattern matcher (torch/_inductor/fx_passes/fuse_attention.py; inference
graphs, and the training graph of the whole G) takes ``q @ k`` with
``k = t.reshape(B, N, h, d).permute(0, 2, 3, 1)`` for ``q @ k'.transpose(-2, -1)`` and hands the un-permuted (B, N, h, d) tensor to
scaled_dot_product_attention, which then fails to broadcast (torch 2.13):

    def f(q, k, v):  # (B, N, h * d) each, under torch.no_grad()
        q = q.reshape(2, 64, 6, 30).permute(0, 2, 1, 3)
        k = k.reshape(2, 64, 6, 30).permute(0, 2, 3, 1)
        v = v.reshape(2, 64, 6, 30).permute(0, 2, 1, 3)
        return torch.softmax((q @ k) * 0.5, dim=-1) @ v
    torch.compile(f)(*(torch.randn(2, 64, 180) for _ in range(3)))
    # RuntimeError: Attempting to broadcast a dimension of length 64 at -1! ... [2, 64] ... [2, 6]

Permuting k like q and v and transposing its last two dims computes the same product and
compiles. The fixture below swaps in that order for the reference's windowed attention; the same
change in ``mat_kernels.reference.attention.windowed_attention`` makes it unnecessary.
"""
from __future__ import annotations

import inspect

import pytest
import torch

import mat_kernels.reference.attention as reference_attention


def _needs_route_around() -> bool:
    return "permute(0, 2, 3, 1)" in inspect.getsource(reference_attention.windowed_attention)


def _windowed_attention_transposed_k(q, k, v, num_heads, scale, mask_windows=None, shift_bias=None):
    B_, N, C = q.shape
    d = C // num_heads
    q, k, v = (t.reshape(B_, N, num_heads, d).permute(0, 2, 1, 3) for t in (q, k, v))
    attn = (q @ k.transpose(-2, -1)) * scale
    if shift_bias is not None:
        nW = shift_bias.shape[0]
        attn = attn.view(B_ // nW, nW, num_heads, N, N) + shift_bias.to(attn.dtype).unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, N, N)
    new_mask = None
    if mask_windows is not None:
        attn = attn + reference_attention.key_validity_bias(mask_windows.to(attn.dtype))
        with torch.no_grad():
            new_mask = reference_attention.windowed_mask_update(mask_windows)
    attn = torch.softmax(attn, dim=-1)
    return (attn @ v).transpose(1, 2).reshape(B_, N, C), new_mask


@pytest.fixture
def reference_without_inductor_sdpa_bug(monkeypatch):
    if _needs_route_around():
        monkeypatch.setattr(reference_attention, "windowed_attention", _windowed_attention_transposed_k)
