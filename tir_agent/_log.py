"""Loggers for library code: structlog events that go through stdlib ``logging``.

A library must stay silent until the application asks for its logs, without configuring anything
at import. Events are rendered by structlog's configured processors and handed to the stdlib
logger of the module, so they appear only when ``logging`` is set up to show them (the CLI does
that; so can any application: ``logging.basicConfig(level=logging.INFO)``).

An event below the stdlib logger's level is dropped before structlog sees it: structlog's
default processors render every event (timestamp, context variables, the console renderer)
before the stdlib logger discards it, and per-sample events such as the sandbox's
``session.reset`` (DEBUG) would otherwise be rendered for nothing thousands of times in a batch.

structlog is imported on a logger's first use, not at import: the sandbox's template imports
modules that log only on the host side, and whatever it imports is copied into every session
(structlog brings ``rich`` along, about 10 MB of heap).
"""

from __future__ import annotations

import logging
from typing import Any

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
"""structlog's level methods and the stdlib level each logs at."""


def _dropped(*args: Any, **kwargs: Any) -> None:
    """An event nobody listens to."""


class _Lazy:
    """A module's logger, made on first use; events below the stdlib level are not built."""

    __slots__ = ("_logger", "_name", "_std")

    def __init__(self, name: str) -> None:
        self._name = name
        self._std = logging.getLogger(name)
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        level = _LEVELS.get(attr)
        if level is not None and not self._std.isEnabledFor(level):
            return _dropped
        if self._logger is None:
            import structlog

            self._logger = structlog.wrap_logger(self._std)
        return getattr(self._logger, attr)


def get_logger(name: str) -> Any:
    """The structlog logger of module ``name``, routed through ``logging.getLogger(name)``."""
    return _Lazy(name)
