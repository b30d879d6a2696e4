"""Deprecated import path: use ``mat_kernels.train.losses`` (this alias is removed in the next release)."""
import warnings as _warnings

from mat_kernels.train.losses import *  # noqa: F401,F403
from mat_kernels.train.losses import __all__  # noqa: F401

_warnings.warn("mat_kernels.losses moved to mat_kernels.train.losses; the old import path will be removed in the next release",
               DeprecationWarning, stacklevel=2)
