"""Loggers for library code: structlog events that go through stdlib ``logging``.

A library must stay silent until the application asks for its logs, without configuring anything
at import. Events are rendered by structlog's configured processors and handed to the stdlib
logger of the module, so they appear only when ``logging`` is set up to show them (the CLI does
that; so can any application: ``logging.basicConfig(level=logging.INFO)``).

structlog is imported on a logger's first use, not at import: the sandbox's template imports
modules that log only on the host side, and whatever it imports is copied into every session
(structlog brings ``rich`` along, about 10 MB of heap).
"""

from __future__ import annotations

import logging
from typing import Any


class _Lazy:
    """A module's logger, made on first use."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.wrap_logger(logging.getLogger(self._name))
        return getattr(self._logger, attr)


def get_logger(name: str) -> Any:
    """The structlog logger of module ``name``, routed through ``logging.getLogger(name)``."""
    return _Lazy(name)
