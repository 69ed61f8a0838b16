"""The remote sandbox: sessions on one or more ``tir-agent sandbox serve`` servers over HTTP.

:class:`RemoteSandbox` has the interface of :class:`~tir_agent.sandbox.LocalSandbox`
(``session()``, ``run()``), so ``Agent(sandbox=RemoteSandbox(url))`` works unchanged. It speaks
the tir-agent API version 1 of :mod:`tir_agent.sandbox.http_api` (the wire contract the
server imports too) through the lean keep-alive client of :mod:`tir_agent.sandbox._http`. With several URLs, each new session goes to the server with the
fewest open sessions from this client (ties in turn) and stays there; a server that refuses
connections is skipped for :data:`RETRY_AFTER` seconds. When a session's server dies, ``run``
returns a ``lost`` result that tells the model, and the next ``run`` opens a fresh session on a
live server. See ``docs/remote-sandbox.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import ValidationError

from tir_agent._log import get_logger
from tir_agent.errors import ConfigError, SandboxClosedError, SandboxError, SandboxServiceError
from tir_agent.sandbox import _http
from tir_agent.sandbox import http_api as api
from tir_agent.sandbox.protocol import TracebackVerbosity, check_cell_options
from tir_agent.sandbox.result import ExecutionResult

__all__ = ["LOST_NOTE", "TOO_LARGE_NOTE", "RemoteSandbox", "RemoteSession"]

log = get_logger(__name__)

SLACK = 10.0
"""Seconds the client waits for a run's reply beyond its timeout (the server enforces the limit)."""
DEFAULT_WAIT = 600.0
"""Seconds a run waits (plus :data:`SLACK`) when neither the call nor the client sets a timeout
and the server's default applies."""
CONTROL_TIMEOUT = 30.0
"""Seconds to wait for opening or closing a session."""
OPEN_ROUNDS = 3
"""Rounds over all servers, each with a new session id, before opening a session fails."""
OPEN_BACKOFF = 0.1
"""Seconds slept before the second round of opening a session (twice that before the third)."""
RETRY_AFTER = 5.0
"""Seconds a server that refused a connection is skipped before it is tried again."""
LOST_NOTE = (
    "The sandbox server running this Python session was lost (it stopped, restarted or dropped "
    "the session), so this code did not finish and all variables, imports, functions and files "
    "of the earlier code are gone. The next code runs in a fresh session: re-run what it needs.\n"
)
"""``stderr`` of the result of a ``run`` whose session was lost with its server."""
TOO_LARGE_NOTE = (
    "This code was not run: it is larger than the sandbox server accepts ({detail}). The "
    "session is unchanged. Send shorter code: compute large data in the code instead of writing "
    "it out.\n"
)
"""``stderr`` of the result of a ``run`` whose request the server refused as too large (413)."""


class _Unavailable(Exception):
    """The server could not be reached or is going away (try another one)."""


class _Server:
    """One server: its connection pool and what this client knows of it."""

    def __init__(self, index: int, url: str, origin: _http.Origin) -> None:
        self.index = index
        self.url = url
        self.origin = origin
        self.sessions = 0
        """Sessions this client has open there."""
        self.down_until = 0.0
        """``time.monotonic()`` before which the server is skipped (``0``: up)."""


def _normalize(urls: str | Sequence[str]) -> list[str]:
    items = [urls] if isinstance(urls, str) else list(urls)
    if not items:
        raise ConfigError("RemoteSandbox needs at least one server URL (http://host:port)")
    seen: list[str] = []
    for item in items:
        url = str(item).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"sandbox server URL {item!r} must start with http:// or https:// "
                "(for example http://127.0.0.1:6000)"
            )
        if url in seen:
            raise ConfigError(f"sandbox server URL {url} is given twice")
        seen.append(url)
    return seen


def _error_text(response: _http.HTTPResponse) -> str:
    """``type: message`` of a tir-agent error reply, or the start of whatever the body is."""
    try:
        error = api.ErrorBody.model_validate_json(response.body).error
    except ValidationError:
        return response.body[:200].decode("utf-8", "replace") or "(empty body)"
    return f"{error.type}: {error.message}"


def _error_type(response: _http.HTTPResponse) -> str | None:
    try:
        return api.ErrorBody.model_validate_json(response.body).error.type
    except ValidationError:
        return None


class RemoteSession:
    """A stateful session on a sandbox server. Use through ``async with sandbox.session() as s``.

    If its server is lost, ``run`` returns a ``lost`` result (see :data:`LOST_NOTE`) and the next
    ``run`` continues in a fresh session on a live server.
    """

    def __init__(self, sandbox: RemoteSandbox, server: _Server, session_id: str) -> None:
        self._sandbox = sandbox
        self._server = server
        self.session_id = session_id
        """The current id on the server (a new one after the session was lost)."""
        self._lock = asyncio.Lock()
        self._closed = False
        self._lost = False
        self.executions = 0
        """Cells run (results returned by the server)."""
        self.restarts = 0
        """Times the session was lost with its server and continued on another one."""

    @property
    def server_url(self) -> str:
        """The URL of the server holding the session."""
        return self._server.url

    @property
    def closed(self) -> bool:
        """Whether the session was closed."""
        return self._closed

    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_characters: int | None = None,
        ipython: bool = False,
        traceback_verbosity: TracebackVerbosity | None = None,
    ) -> ExecutionResult:
        """Run one cell in this session; ``None`` means the client's default, else the server's.
        ``ipython`` and ``traceback_verbosity`` as :meth:`LocalSession.run
        <tir_agent.sandbox.local.LocalSession.run>` (the server runs the cell so)."""
        sandbox = self._sandbox
        body, wait = sandbox._run_body(code, timeout, max_output_characters)
        check_cell_options(ipython, traceback_verbosity)
        if ipython:
            body["ipython"] = True
            if traceback_verbosity is not None:
                body["traceback_verbosity"] = traceback_verbosity
        async with self._lock:
            if self._closed:
                raise SandboxClosedError("the remote sandbox session was closed")
            if self._lost:
                await self._reopen()
            server, sid = self._server, self.session_id
            try:
                response = await sandbox._call(
                    server,
                    "POST",
                    f"{api.API_PREFIX}/sessions/{sid}/run",
                    json_body=body,
                    headers={api.SESSION_HEADER: sid},
                    timeout=wait,
                )
            except _Unavailable as e:
                sandbox._mark_down(server, str(e))
                sandbox._forget(server, sid)  # in case only the connection broke
                return self._lose(str(e))
            except TimeoutError:
                sandbox._forget(server, sid)
                return self._lose(f"no reply within {wait:g} s")
            if response.status == 200:
                self.executions += 1
                return sandbox._result(server, response)
            if response.status == 404 and _error_type(response) == "session_not_found":
                return self._lose("the server does not know the session (restarted or re-routed)")
            if response.status >= 500:
                sandbox._forget(server, sid)
                return self._lose(f"HTTP {response.status}: {_error_text(response)}")
            if response.status == 413:
                return sandbox._too_large(server, response)
            raise sandbox._refused(server, response)

    def _lose(self, why: str) -> ExecutionResult:
        self._lost = True
        self._server.sessions -= 1
        log.warning(
            "remote.session.lost",
            session=self.session_id,
            server=self._server.url,
            why=why,
            executions=self.executions,
        )
        return ExecutionResult(status="error", stderr=LOST_NOTE, state="lost", reason="server_lost")

    async def _reopen(self) -> None:
        started = time.perf_counter()
        self._server, self.session_id = await self._sandbox._open_on_any()
        self._lost = False
        self.restarts += 1
        log.info(
            "remote.session.start",
            session=self.session_id,
            server=self._server.url,
            restarts=self.restarts,
            duration=round(time.perf_counter() - started, 6),
        )

    async def close(self) -> None:
        """Close the session on its server (best effort: a server that is gone is only logged)."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sandbox._sessions.discard(self)
            if self._lost:
                return
            self._server.sessions -= 1
            await self._sandbox._delete(self._server, self.session_id)
        log.info("remote.session.stop", session=self.session_id, executions=self.executions)

    async def __aenter__(self) -> RemoteSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class RemoteSandbox:
    """Sandbox sessions on one or more tir-agent sandbox servers (``tir-agent sandbox serve``).

    ``urls``: one URL (a server, or a proxy such as nginx in front of several) or a list of
    servers to spread sessions over. ``token``: the servers' bearer token (default: the
    environment variable ``TIR_AGENT_SANDBOX_TOKEN``). ``timeout`` and ``max_output_characters``:
    defaults of ``run`` (``None``: the server's). ``max_connections``: per server.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        token: str | None = None,
        timeout: float | None = None,
        max_output_characters: int | None = None,
        connect_timeout: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ConfigError("timeout must be > 0 (or None for the server's default)")
        if max_output_characters is not None and max_output_characters < 0:
            raise ConfigError("max_output_characters must be >= 0 (or None for the server's)")
        if connect_timeout <= 0 or max_connections < 1:
            raise ConfigError("connect_timeout must be > 0 and max_connections >= 1")
        self.urls = _normalize(urls)
        """The servers, in the order given."""
        self.timeout = timeout
        self.max_output_characters = max_output_characters
        if token is None:
            token = os.environ.get(api.TOKEN_ENV) or None
        if token is not None and (not token.isprintable() or token != token.strip()):
            raise ConfigError(
                "the sandbox token must be printable and without surrounding whitespace "
                f"(check the token argument or {api.TOKEN_ENV})"
            )
        self._has_token = token is not None
        headers = {api.API_HEADER: str(api.API_VERSION)}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._servers = [
            _Server(
                i,
                url,
                _http.Origin(
                    url,
                    headers=headers,
                    max_connections=max_connections,
                    connect_timeout=connect_timeout,
                ),
            )
            for i, url in enumerate(self.urls)
        ]
        self._sessions: set[RemoteSession] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._turn = 0
        self._closed = False

    # -- sessions

    async def open_session(self) -> RemoteSession:
        """A new session; the caller must ``await session.close()`` (or use :meth:`session`)."""
        if self._closed:
            raise SandboxClosedError("the remote sandbox was closed")
        started = time.perf_counter()
        server, session_id = await self._open_on_any()
        session = RemoteSession(self, server, session_id)
        self._sessions.add(session)
        log.info(
            "remote.session.start",
            session=session_id,
            server=server.url,
            duration=round(time.perf_counter() - started, 6),
        )
        return session

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[RemoteSession]:
        """``async with sandbox.session() as s``: a new session on a server, closed afterwards."""
        s = await self.open_session()
        try:
            yield s
        finally:
            await s.close()

    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_characters: int | None = None,
    ) -> ExecutionResult:
        """Run ``code`` once in a fresh session; a server that cannot be reached (or fails) is
        replaced by the next one."""
        if self._closed:
            raise SandboxClosedError("the remote sandbox was closed")
        body, wait = self._run_body(code, timeout, max_output_characters)
        failures: list[str] = []
        for server in self._candidates():
            server.sessions += 1  # a fresh session while it runs, for spreading
            self._turn = server.index + 1
            try:
                # A random id: proxies that route by X-Session-ID (ingress-nginx's upstream-hash-by
                # sends requests without it to one pod) spread stateless runs too.
                response = await self._call(
                    server,
                    "POST",
                    f"{api.API_PREFIX}/run",
                    json_body=body,
                    headers={api.SESSION_HEADER: uuid.uuid4().hex},
                    timeout=wait,
                )
            except _Unavailable as e:
                self._mark_down(server, str(e))
                failures.append(f"{server.url} ({e})")
                continue
            except TimeoutError as e:
                raise SandboxError(
                    f"sandbox server {server.url} did not answer within {wait:g} s"
                ) from e
            finally:
                server.sessions -= 1
            if response.status == 200:
                return self._result(server, response)
            if response.status >= 500:
                failures.append(f"{server.url} (HTTP {response.status}: {_error_text(response)})")
                log.warning("remote.run.retry", server=server.url, status=response.status)
                continue
            if response.status == 413:
                return self._too_large(server, response)
            raise self._refused(server, response)
        raise SandboxError("no sandbox server could run the code: " + "; ".join(failures))

    async def close(self) -> None:
        """Close every open session (best effort) and all connections."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(s.close() for s in list(self._sessions)), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            server.origin.close()
        log.info("remote.sandbox.stop")

    async def __aenter__(self) -> RemoteSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def health(self) -> dict[str, api.Health]:
        """Each server's ``GET /v1/health`` (open sessions, capacity, active protections), by URL.
        Raises :class:`SandboxError` naming the URL when a server cannot be reached, and
        :class:`SandboxServiceError` when it is not a tir-agent server of this API version."""
        report: dict[str, api.Health] = {}
        for server in self._servers:
            try:
                response = await self._call(
                    server, "GET", f"{api.API_PREFIX}/health", timeout=CONTROL_TIMEOUT
                )
            except (_Unavailable, TimeoutError) as e:
                raise SandboxError(
                    f"sandbox server {server.url} cannot be reached: {str(e) or type(e).__name__}"
                ) from e
            try:
                report[server.url] = api.Health.model_validate_json(response.body)
            except ValidationError as e:
                raise SandboxServiceError(
                    f"sandbox server {server.url} sent a malformed health reply: {e}",
                    status_code=response.status,
                ) from e
        return report

    @property
    def open_sessions(self) -> dict[str, int]:
        """Sessions this client has open, per server URL."""
        return {s.url: s.sessions for s in self._servers}

    # -- internals

    def _run_body(
        self, code: str, timeout: float | None, max_output_characters: int | None
    ) -> tuple[dict[str, Any], float]:
        t = self.timeout if timeout is None else float(timeout)
        cap = self.max_output_characters if max_output_characters is None else max_output_characters
        if (t is not None and t <= 0) or (cap is not None and cap < 0):
            raise ConfigError("timeout must be > 0 and max_output_characters >= 0")
        body: dict[str, Any] = {"code": code}
        if t is not None:
            body["timeout"] = t
        if cap is not None:
            body["max_output_characters"] = cap
        return body, (DEFAULT_WAIT if t is None else t) + SLACK

    def _candidates(self) -> list[_Server]:
        """Servers to try, best first: the live ones by fewest sessions (ties in turn), then the
        ones marked down, soonest retry first (tried only when no live one answers)."""
        now = time.monotonic()
        n = len(self._servers)
        up = [s for s in self._servers if s.down_until <= now]
        down = [s for s in self._servers if s.down_until > now]
        up.sort(key=lambda s: (s.sessions, (s.index - self._turn) % n))
        down.sort(key=lambda s: s.down_until)
        return up + down

    async def _open_on_any(self) -> tuple[_Server, str]:
        """Open a session on the best server: ``(server, session_id)``. A server that cannot be
        reached is skipped; when none answers, all are tried again (up to :data:`OPEN_ROUNDS`
        rounds) with a new id each time, because a proxy in front of several servers (a single
        URL) routes a new id to another server: a server dying behind nginx answers the open
        with a 502 once, and the next id lands on a live one."""
        failures: list[str] = []
        for round_ in range(OPEN_ROUNDS):
            if round_:
                await asyncio.sleep(OPEN_BACKOFF * round_)
            session_id = uuid.uuid4().hex
            server = await self._open_round(session_id, failures)
            if server is not None:
                return server, session_id
        raise SandboxError("no sandbox server reachable to open a session: " + "; ".join(failures))

    async def _open_round(self, session_id: str, failures: list[str]) -> _Server | None:
        for server in self._candidates():
            # Counted before the request, so that sessions opened concurrently spread out.
            server.sessions += 1
            self._turn = server.index + 1
            try:
                response = await self._call(
                    server,
                    "POST",
                    f"{api.API_PREFIX}/sessions",
                    headers={api.SESSION_HEADER: session_id},
                    timeout=CONTROL_TIMEOUT,
                )
            except (_Unavailable, TimeoutError) as e:
                server.sessions -= 1
                why = str(e) or type(e).__name__
                self._mark_down(server, why)
                failures.append(f"{server.url} ({why})")
                continue
            except BaseException:
                server.sessions -= 1
                raise
            if response.status in (200, 201):
                server.down_until = 0.0
                return server
            server.sessions -= 1
            if response.status < 500:
                raise self._refused(server, response)
            failures.append(f"{server.url} (HTTP {response.status}: {_error_text(response)})")
        return None

    async def _call(
        self,
        server: _Server,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float,
    ) -> _http.HTTPResponse:
        """One request, its reply checked: raises :class:`_Unavailable` (try another server),
        :class:`TimeoutError`, or :class:`SandboxServiceError` (wrong server, token, version)."""
        try:
            response = await server.origin.request(
                method, path, json_body=json_body, headers=headers, timeout=timeout
            )
        except _http.HTTPConnectionError as e:
            raise _Unavailable(str(e)) from e
        status = response.status
        version = response.headers.get(api.API_HEADER.lower())
        if status == 401:
            hint = (
                "the token sent was refused"
                if self._has_token
                else "it requires a token and none was given"
            )
            raise SandboxServiceError(
                f"sandbox server {server.url} refused the request (401): {hint}; pass "
                f"RemoteSandbox(..., token=...) or set the environment variable {api.TOKEN_ENV} to "
                "the token the server was started with",
                status_code=401,
            )
        if version is None and status in (502, 503, 504):
            raise _Unavailable(f"HTTP {status} from a proxy: no server behind it answered")
        if version is None:
            raise SandboxServiceError(
                f"{server.url} is not a tir-agent sandbox server of API version {api.API_VERSION}: "
                f"its reply (HTTP {status}) lacks the {api.API_HEADER} header. Is it another service "
                "(a NeMo-Skills sandbox speaks only /execute) or a wrong port? Start one with "
                "`tir-agent sandbox serve`.",
                status_code=status,
            )
        if version != str(api.API_VERSION):
            raise SandboxServiceError(
                f"sandbox server {server.url} speaks tir-agent API version {version}, this client "
                f"version {api.API_VERSION}: install the same tir-agent version on both sides",
                status_code=status,
            )
        if status == 503:
            raise _Unavailable(f"shutting down ({_error_text(response)})")
        return response

    def _result(self, server: _Server, response: _http.HTTPResponse) -> ExecutionResult:
        try:
            return ExecutionResult.model_validate_json(response.body)
        except ValidationError as e:
            raise SandboxServiceError(
                f"sandbox server {server.url} sent a malformed execution result: {e}",
                status_code=response.status,
            ) from e

    def _too_large(self, server: _Server, response: _http.HTTPResponse) -> ExecutionResult:
        """A request over the server's body limit: a refused execution the model can act on
        (like code that raised), not an error that ends the caller's work."""
        detail = _error_text(response)
        log.warning("remote.run.too_large", server=server.url, detail=detail)
        return ExecutionResult(
            status="error", stderr=TOO_LARGE_NOTE.format(detail=detail), reason="too_large"
        )

    def _refused(self, server: _Server, response: _http.HTTPResponse) -> SandboxServiceError:
        return SandboxServiceError(
            f"sandbox server {server.url} refused the request (HTTP {response.status}): "
            f"{_error_text(response)}",
            status_code=response.status,
        )

    def _mark_down(self, server: _Server, why: str) -> None:
        server.down_until = time.monotonic() + RETRY_AFTER
        log.warning("remote.server.down", server=server.url, why=why, retry_after=RETRY_AFTER)

    async def _delete(self, server: _Server, session_id: str, *, quiet: bool = False) -> None:
        """``DELETE`` a session; failures are logged (at debug level if ``quiet``), never raised
        (the server may be gone)."""
        report = log.debug if quiet else log.warning
        try:
            response = await self._call(
                server,
                "DELETE",
                f"{api.API_PREFIX}/sessions/{session_id}",
                headers={api.SESSION_HEADER: session_id},
                timeout=CONTROL_TIMEOUT,
            )
        except (_Unavailable, TimeoutError, SandboxServiceError) as e:
            report("remote.session.close_failed", session=session_id, server=server.url, why=str(e))
            return
        if response.status not in (200, 404):
            report(
                "remote.session.close_failed",
                session=session_id,
                server=server.url,
                why=f"HTTP {response.status}: {_error_text(response)}",
            )

    def _forget(self, server: _Server, session_id: str) -> None:
        """Delete a session the client gave up on, in the background (the server may still hold
        it, busy or broken)."""
        task = asyncio.get_running_loop().create_task(self._delete(server, session_id, quiet=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
