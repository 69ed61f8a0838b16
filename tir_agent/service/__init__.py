"""The sandbox as an HTTP service: the NeMo-Skills sandbox API plus the versioned tir-agent API.

``tir-agent sandbox serve`` (or ``python -m tir_agent.service``) runs :func:`serve`; the wire
contract, shared with the client, is :mod:`tir_agent.sandbox.http_api`; ``docs/service.md``
describes both APIs. Importing this package loads no web framework: :func:`serve`, :func:`create_app` and :class:`ServiceConfig`
load the server on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tir_agent.service.config import ServiceConfig
    from tir_agent.service.server import create_app, serve

__all__ = ["ServiceConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "ServiceConfig":
        from tir_agent.service.config import ServiceConfig

        return ServiceConfig
    if name in ("create_app", "serve"):
        from tir_agent.service import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
