"""The server's state and its request dispatch (a plain ASGI callable, no middleware).

:class:`Service` owns the :class:`LocalSandbox` and the :class:`SessionRegistry` and sends each
HTTP request to the NeMo-Skills API (:mod:`tir_agent.service.nemo`) or the tir-agent API
(:mod:`tir_agent.service.v1`) by looking at its path: two string comparisons instead of a router,
because the hot paths should cost microseconds on top of the execution itself. What a handler
raises becomes an error reply in its API's shape (:func:`~tir_agent.service._asgi.answer`).
"""

from __future__ import annotations

import hmac
import re
from typing import Literal

from starlette.types import Receive, Scope, Send

from tir_agent._log import get_logger
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.local import LocalSandbox
from tir_agent.service import nemo, v1
from tir_agent.service._asgi import HTTPError, answer, shutting_down
from tir_agent.service.api import API_VERSION
from tir_agent.service.config import ServiceConfig
from tir_agent.service.registry import SessionRegistry

log = get_logger(__name__)

_OTHER_VERSION = re.compile(r"/v(\d+)(/|$)")


def with_ipython(config: SandboxConfig) -> SandboxConfig:
    """``config`` with IPython preloaded: the NeMo-Skills API runs ``ipython`` cells through
    IPython's shell, which the template then makes once for every session (otherwise each
    session's first cell would import IPython, about half a second)."""
    if "IPython" in config.preload:
        return config
    return config.model_copy(update={"preload": (*config.preload, "IPython")})


class Service:
    """One server: its configuration, sandbox, named sessions and shutdown state."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.sandbox = LocalSandbox(with_ipython(config.sandbox))
        self.registry = SessionRegistry(self.sandbox)
        self.stopping = False
        """Set on SIGTERM/SIGINT: new work is refused (503), in-flight executions finish."""
        self.startup_error: BaseException | None = None
        self.nemo_restarted: set[str] = set()
        """NeMo-Skills session ids whose interpreter was restarted and whose next reply must
        still say ``new_session_created`` (see :mod:`tir_agent.service.nemo`)."""
        self._token = None if config.token is None else config.token.encode()

    def authorize(self, headers: dict[bytes, bytes]) -> None:
        """401 unless the request carries the configured bearer token (constant-time check)."""
        if self._token is None:
            return
        value = headers.get(b"authorization", b"")
        scheme, _, token = value.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token):
            return
        raise HTTPError(
            401,
            "unauthorized",
            "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the "
            "server's token (client option token=..., or $TIR_AGENT_SANDBOX_TOKEN)",
            headers=[(b"www-authenticate", b'Bearer realm="tir-agent sandbox"')],
        )

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

    def health(self) -> tuple[int, Literal["healthy", "shutting_down", "unhealthy"], str | None]:
        """What the health endpoints answer: HTTP status, status and the problem. 503
        ``shutting_down`` after SIGTERM; 503 ``unhealthy`` while the sandbox cannot run code
        (its template died and is being restarted: :attr:`LocalSandbox.problem`); else 200."""
        if self.stopping:
            return 503, "shutting_down", None
        problem = self.sandbox.problem
        if problem is not None:
            return 503, "unhealthy", problem
        return 200, "healthy", None
