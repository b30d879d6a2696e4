"""mat_kernels: fused kernels and a faithful PyTorch implementation of MAT (CVPR 2022).

Public API: the ops (``window_attention``, ``window_mask_update``, ``partial_conv_mask_update``,
``bias_act``),
the networks (``Generator``, ``Discriminator``, ``set_backend``) and checkpoint loading
(``load_generator``, ``load_discriminator``).
"""
from .ops import bias_act, partial_conv_mask_update, window_attention, window_mask_update

__version__ = "0.1.0"


def __getattr__(name):
    # The networks and the checkpoint loader import lazily so that `import mat_kernels` stays
    # cheap for users of the ops alone.
    import importlib
    if name in ("Generator", "Discriminator", "set_backend"):
        return getattr(importlib.import_module(".models", __name__), name)
    if name in ("load_generator", "load_discriminator", "save_checkpoint"):
        return getattr(importlib.import_module(".checkpoint", __name__), name)
    raise AttributeError(f"module 'mat_kernels' has no attribute {name!r}")


__all__ = ["window_attention", "window_mask_update", "partial_conv_mask_update", "bias_act", "Generator", "Discriminator",
           "set_backend", "load_generator", "load_discriminator", "save_checkpoint", "__version__"]
