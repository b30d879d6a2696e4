"""The compiled CUDA extension ``mat_kernels._C`` (sources in ``csrc/``): ``library.py`` loads it
and registers its fake kernels and autograd. The backend that calls it is
:mod:`mat_kernels.backends.cuda`."""
import warnings as _warnings

_MOVED = ("window_attention", "window_mask_update", "partial_conv_mask_update", "not_supported_reasons",
          "UnverifiedBackendWarning")


def __getattr__(name):
    # ``mat_kernels.cuda`` was the backend module before it moved into ``mat_kernels.backends``.
    if name in _MOVED:
        _warnings.warn(f"mat_kernels.cuda.{name} moved to mat_kernels.backends.cuda.{name} (call the public op "
                       f"with backend='cuda'); the old path will be removed in the next release",
                       DeprecationWarning, stacklevel=2)
        from ..backends import cuda as _backend
        return getattr(_backend, name)
    raise AttributeError(f"module 'mat_kernels.cuda' has no attribute {name!r}")
