"""Finding pretrained weight files on disk. Nothing in mat_kernels downloads weights."""
from __future__ import annotations

import os
from typing import Optional, Union

import torch

PathLike = Union[str, os.PathLike]


def find_weight_file(path: Optional[PathLike], *, arg: str, env: str, filename: str, what: str,
                     source: str) -> str:
    """Return the first existing file of: ``path`` (the argument named ``arg``), ``$env``, and
    torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints/filename``).

    A ``path`` that does not exist is an error naming ``arg``; finding nothing is an error naming
    the file, every place looked at, and where to put it (``source`` says what the file is).
    """
    if path is not None:
        if os.path.isfile(path):
            return os.fspath(path)
        raise FileNotFoundError(f"{arg}: {what} file {os.fspath(path)!r} does not exist (expected {filename})")
    tried = []
    value = os.environ.get(env)
    if value:
        if os.path.isfile(value):
            return value
        tried.append(f"${env}={value}")
    hub = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if os.path.isfile(hub):
        return hub
    tried.append(hub)
    raise FileNotFoundError(
        f"{what} not found (looked at: {', '.join(tried)}). Nothing is downloaded at run time: copy "
        f"{source} {filename} to {hub}, or point {env} (or the {arg} argument) at it.")
