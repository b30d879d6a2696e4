"""The console scripts, one module each (``mat-<name>`` = ``python -m mat_kernels.cli.<name>``): ``bench``,
``info``, ``inpaint``, ``iopaint``, ``train``. Each holds the options and the output; the work is done by
the package it names (:mod:`mat_kernels.bench`, :mod:`mat_kernels.info`, :mod:`mat_kernels.inpaint`,
:mod:`mat_kernels.iopaint`, :mod:`mat_kernels.train`)."""
