"""Deprecated import path: use ``mat_kernels.train.metrics`` (this alias is removed in the next release)."""
import warnings as _warnings

from mat_kernels.train.metrics import *  # noqa: F401,F403
from mat_kernels.train.metrics import __all__  # noqa: F401

_warnings.warn("mat_kernels.metrics moved to mat_kernels.train.metrics; the old import path will be removed in the next release",
               DeprecationWarning, stacklevel=2)
