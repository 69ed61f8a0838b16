"""The sandbox server: ``create_app`` (an ASGI app) and ``serve`` (uvicorn, graceful shutdown).

One process serves one :class:`~tir_agent.sandbox.LocalSandbox` over both APIs of
:mod:`tir_agent.sandbox.http_api`. ``serve`` runs uvicorn with httptools, without an access
log; on SIGTERM or SIGINT it stops accepting connections, refuses new work with 503, lets
in-flight executions finish for ``shutdown_grace`` seconds (then cuts them with a clear reply),
closes the sandbox so no session process is left, and returns (exit status 0). See
``docs/service.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Generator, MutableMapping
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from tir_agent._log import get_logger
from tir_agent.errors import ConfigError, SandboxError
from tir_agent.service.app import App
from tir_agent.service.config import KEEP_ALIVE as KEEP_ALIVE  # nginx.py's docs point here
from tir_agent.service.config import ServiceConfig, check_exposure, is_loopback
from tir_agent.service.connections import Guard, GuardedProtocol, Listener, descriptor_budget

__all__ = ["ServiceApp", "ServiceConfig", "create_app", "serve"]

log = get_logger(__name__)

LOOP = "asyncio"
"""uvicorn's event loop. ``LocalSandbox`` works on uvloop too (tests/sandbox/test_uvloop.py), but
uvloop measured no faster here (docs/service.md), and asyncio's server stops accepting at once
when shutdown begins."""


class ServiceApp(Starlette):
    """The server's ASGI app: Starlette runs the lifespan (sandbox start and close); HTTP
    requests go straight to :class:`~tir_agent.service.app.App`, past Starlette's router and
    middleware, which would cost more than the dispatch itself on the hot paths."""

    def __init__(self, service: App) -> None:
        super().__init__(lifespan=self._lifespan)
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.service(scope, receive, send)
        elif scope["type"] == "lifespan":
            await super().__call__(scope, receive, self._quiet_failure(send))
        else:
            await super().__call__(scope, receive, send)

    def _quiet_failure(self, send: Send) -> Send:
        """Drop the traceback Starlette attaches to a failed start-up: :func:`serve` raises the
        sandbox's error itself, and its message says what to fix."""

        async def forward(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "lifespan.startup.failed" and self.service.startup_error:
                message = {**message, "message": ""}
            await send(message)

        return forward

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        service = self.service
        started = time.perf_counter()
        try:
            await service.sandbox.start()
        except BaseException as e:
            service.startup_error = e
            raise
        sandbox = service.config.sandbox
        log.info(
            "service.start",
            host=service.config.host,
            port=service.config.port,
            auth=service.config.token is not None,
            protect_state=sandbox.protect_state,
            max_sessions=sandbox.max_sessions,
            protections=service.sandbox.protections.active(),
            duration=round(time.perf_counter() - started, 3),
        )
        missing = [name for name, _ in service.sandbox.protections.missing]
        if missing:  # a server runs other people's code: say it loudly, not only at INFO
            log.warning(
                "service.weak_isolation",
                missing=missing,
                fix="see `python -m tir_agent.sandbox.isolation`; --strict refuses to start so",
            )
        try:
            yield
        finally:
            service.stopping = True
            sessions = len(service.registry)
            await service.sandbox.close()
            log.info("service.stop", sessions_closed=sessions)


def create_app(config: ServiceConfig) -> ServiceApp:
    """The ASGI app of a server; its lifespan starts and closes one ``LocalSandbox``."""
    return ServiceApp(App(config))


class _Server(uvicorn.Server):
    """uvicorn's server, accepting connections under a :class:`Guard` (connection cap and
    deadlines, :mod:`tir_agent.service.connections`), telling the app when shutdown begins and
    exiting 0 on SIGTERM."""

    def __init__(self, config: uvicorn.Config, service: App, url: str, guard: Guard) -> None:
        super().__init__(config)
        self.service = service
        self.url = url
        self.guard = guard
        self._sweeper: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.service.stopping:
            log.info("service.stopping", signal=signal.Signals(sig).name)
        self.service.stopping = True
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the signal after a graceful shutdown, so the process would die of
        # SIGTERM; a server that shut down cleanly exits 0 instead.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own startup, except that our Listener accepts the connections (instead of
        # asyncio's server, which accepts whatever comes, up to the process's last descriptor).
        await self.lifespan.startup()
        if self.lifespan.should_exit:  # the sandbox did not start: raise its error
            if isinstance(self.service.startup_error, Exception):
                raise self.service.startup_error
            sys.exit(3)
        config, guard = self.config, self.guard

        def protocol() -> GuardedProtocol:
            return GuardedProtocol(config, self.server_state, self.lifespan.state, guard)

        # uvicorn only calls close() and wait_closed() on its servers
        self.servers = [Listener(sock, protocol, guard) for sock in sockets or []]  # type: ignore[misc]
        self._sweeper = asyncio.get_running_loop().create_task(guard.run_sweeper())
        self.started = True
        if not self.should_exit:
            print(f"tir-agent sandbox serving on {self.url}", file=sys.stderr, flush=True)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``ConfigError`` if the address cannot be used)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port}: {e}") from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot serve on {host}:{port}: {e.strerror or e} (is another server using the "
            "port? choose another with --port)"
        ) from e
    sock.set_inheritable(True)
    return sock


def serve(config: ServiceConfig) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully and return.

    Raises :class:`ConfigError` for a non-loopback host without a token (unless
    ``allow_insecure``) or an unusable address, and the sandbox's error if it cannot start.
    """
    check_exposure(config)
    if config.token is None and not is_loopback(config.host):
        log.warning("service.insecure", host=config.host)
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    app = create_app(config.model_copy(update={"port": port}))
    guard = Guard(
        max_connections=descriptor_budget(config.max_connections, config.sandbox.max_sessions),
        request_timeout=config.request_timeout,
        keep_alive=config.keep_alive,
        max_header_bytes=config.max_header_bytes,
    )
    uv_config = uvicorn.Config(
        app,
        loop=LOOP,
        http="httptools",
        ws="none",
        lifespan="on",
        interface="asgi3",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # the client address is never used: no middleware for it
        timeout_keep_alive=math.ceil(config.keep_alive),  # GuardedProtocol uses the float
        timeout_graceful_shutdown=int(config.shutdown_grace + 0.999),
    )
    server = _Server(uv_config, app.service, f"http://{shown}:{port}", guard)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        error = app.service.startup_error
        if isinstance(error, Exception):
            raise error
        raise SandboxError("the sandbox server did not start (see the log above)")
