"""Deprecated import path: use ``mat_kernels.data.holes`` (this alias is removed in the next release)."""
import warnings as _warnings

from mat_kernels.data.holes import *  # noqa: F401,F403
from mat_kernels.data.holes import __all__  # noqa: F401

_warnings.warn("mat_kernels.masks moved to mat_kernels.data.holes; the old import path will be removed in the next release",
               DeprecationWarning, stacklevel=2)
