"""Loggers for library code: structlog events that go through stdlib ``logging``.

A library must stay silent until the application asks for its logs, without configuring anything
at import. Events are rendered by structlog's configured processors and handed to the stdlib
logger of the module, so they appear only when ``logging`` is set up to show them (the CLI does
that; so can any application: ``logging.basicConfig(level=logging.INFO)``).
"""

from __future__ import annotations

import logging
from typing import Any

import structlog


def get_logger(name: str) -> Any:
    """The structlog logger of module ``name``, routed through ``logging.getLogger(name)``."""
    return structlog.wrap_logger(logging.getLogger(name))
