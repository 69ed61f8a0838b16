"""The server's state, as the two APIs' handlers see it.

:class:`Service` owns the :class:`LocalSandbox` and the :class:`SessionRegistry`; the handlers
of :mod:`tir_agent.service.nemo` and :mod:`tir_agent.service.v1` take it as their first
argument, and :class:`~tir_agent.service.app.App` dispatches requests to them.
"""

from __future__ import annotations

import hmac
from typing import Literal

from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.local import LocalSandbox
from tir_agent.service._asgi import HTTPError
from tir_agent.service.config import ServiceConfig
from tir_agent.service.registry import SessionRegistry


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
