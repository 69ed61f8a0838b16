"""Locate the data files shipped with the package (``tools/``, ``prompts/``), and read YAML files
(prompt configs, run configs) with errors that say which file and why.

In a wheel they live in ``tir_agent/_data/``; in a source checkout (editable install) they are the
top-level ``tools/`` and ``prompts/`` folders beside the package.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tir_agent.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """The folder ``name`` (``"tools"`` or ``"prompts"``) of the installed package or checkout."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"tir_agent data folder {name!r} not found; reinstall tir-agent")


def read_yaml(path: Path, *, what: str, error: type[ConfigError] = ConfigError) -> Any:
    """The parsed YAML of ``path`` (``None`` for an empty file); a missing, unreadable or
    malformed file raises ``error`` naming it as ``what`` ("Config file", "Prompt file")."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (OSError, yaml.YAMLError) as e:
        raise error(f"{what} {path} cannot be read: {e}") from e
