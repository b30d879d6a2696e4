"""Command-line tools. ``mat-inpaint`` / ``python -m mat_kernels.cli.inpaint``: see
:mod:`mat_kernels.cli.inpaint`."""
