"""The server's request dispatch (a plain ASGI callable, no middleware).

:class:`App` (the server's state, :class:`~tir_agent.service.state.Service`, made callable) sends
each HTTP request to the NeMo-Skills API (:mod:`tir_agent.service.nemo`) or the tir-agent API
(:mod:`tir_agent.service.v1`) by looking at its path: two string comparisons instead of a router,
because the hot paths should cost microseconds on top of the execution itself. What a handler
raises becomes an error reply in its API's shape (:func:`~tir_agent.service._asgi.answer`).
"""

from __future__ import annotations

import re

from starlette.types import Receive, Scope, Send

from tir_agent._log import get_logger
from tir_agent.sandbox.http_api import API_VERSION
from tir_agent.service import nemo, v1
from tir_agent.service._asgi import HTTPError, answer, shutting_down
from tir_agent.service.state import Service

log = get_logger(__name__)

_OTHER_VERSION = re.compile(r"/v(\d+)(/|$)")


class App(Service):
    """The server's ASGI callable: the state of :class:`Service` plus the request dispatch."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request."""
        path: str = scope["path"]
        headers = dict(scope["headers"])
        if path.startswith("/v1/") or path == "/v1":
            await answer(
                v1.handle(self, scope, path[3:], headers, receive, send),
                send,
                v1.send_error,
                path=path,
                stopping=self._stopping,
                cancelled=lambda: v1.cut(self),
            )
            return
        other = _OTHER_VERSION.match(path)
        if other is not None:
            error = HTTPError(
                400,
                "api_version",
                f"this server speaks tir-agent API version {API_VERSION} (paths /v1/...), "
                f"not version {other.group(1)}: use a client of the same tir-agent release",
            )
            await v1.send_error(send, error)
            return
        await answer(
            nemo.handle(self, scope, path, headers, receive, send),
            send,
            nemo.send_error,
            path=path,
            stopping=self._stopping,
            cancelled=shutting_down,
        )

    def _stopping(self) -> bool:
        return self.stopping
