"""How a command line names itself in ``--help``: the console script's name when run as that
script, ``python -m <module>`` otherwise; and module docstrings as plain help text."""
from __future__ import annotations

import os
import re
import sys


def prog(script: str, module: str) -> str:
    """``script`` (e.g. "mat-bench") when this process was started as that console script, else
    ``python -m module``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name.endswith(".exe"):  # console scripts on Windows
        name = name[:-4]
    return script if name == script else f"python -m {module}"


def plain(doc: str) -> str:
    """A docstring as terminal help: reST ````literal```` markup and ``:role:`x``` references
    reduced to their text."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc or "")
    return re.sub(r"``(.+?)``", r"\1", text, flags=re.S)
