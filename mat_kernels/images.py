"""Deprecated import path: use ``mat_kernels.data.images`` (this alias is removed in the next release)."""
import warnings as _warnings

from mat_kernels.data.images import *  # noqa: F401,F403
from mat_kernels.data.images import __all__  # noqa: F401

_warnings.warn("mat_kernels.images moved to mat_kernels.data.images; the old import path will be removed in the next release",
               DeprecationWarning, stacklevel=2)
