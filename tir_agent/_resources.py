"""Locate the data files shipped with the package (``tools/``, ``prompts/``).

In a wheel they live in ``tir_agent/_data/``; in a source checkout (editable install) they are the
top-level ``tools/`` and ``prompts/`` folders beside the package.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """The folder ``name`` (``"tools"`` or ``"prompts"``) of the installed package or checkout."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"tir_agent data folder {name!r} not found; reinstall tir-agent")
