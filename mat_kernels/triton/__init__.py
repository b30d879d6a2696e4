"""Triton kernels of mat_kernels.

``window_attention.py`` and ``mask_update.py`` hold kernels and launchers, ``bias_act.py`` the
fused bias+activation, ``autograd.py`` the torch.library registration of the attention ops,
``aot.py`` the ahead-of-time compile gate. ``_backend.py`` is what ``mat_kernels.ops`` calls.
"""
