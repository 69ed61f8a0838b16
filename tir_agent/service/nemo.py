"""The NeMo-Skills sandbox API (REFERENCE.md §5), so their client works unchanged.

``POST /execute`` runs ``ipython`` cells in the named session of ``X-Session-ID`` (created on
first use) and ``python``/``python3``/``pypy3`` code in a fresh session with ``std_input`` as
standard input. Replies carry their four fields (``process_status``, ``stdout``, ``stderr``,
``new_session_created``) and our extras (``state``, ``reason``, ``duration``, ``*_truncated``),
which their client ignores. Errors are ``{"error": "<message>", "type": "<ErrorType>"}``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pydantic_core import to_json
from starlette.types import Receive, Scope, Send

from tir_agent._log import get_logger
from tir_agent.errors import SandboxClosedError, SandboxError
from tir_agent.sandbox.local import LocalSession
from tir_agent.sandbox.result import ExecutionResult
from tir_agent.service._asgi import (
    JSON,
    HTTPError,
    check_run_limits,
    content_is_json,
    log_refusal,
    not_allowed,
    not_found,
    parse,
    read_body,
    send_bytes,
    send_json,
    shutting_down,
)
from tir_agent.service.api import API_VERSION, NemoExecuteRequest

if TYPE_CHECKING:
    from tir_agent.service.app import Service

log = get_logger(__name__)

BACKEND = "tir-agent"
"""The ``backend`` of ``GET /sessions`` (theirs says ``ipython``)."""

STATELESS_LANGUAGES = ("python", "python3", "pypy3")
MAX_NEMO_SESSION_ID = 256

STDIN_SOURCE = """\
import builtins, io, sys
sys.stdin = io.StringIO(DATA)
def input(prompt=""):
    if prompt:
        sys.stdout.write(str(prompt))
    line = sys.stdin.readline()
    if not line:
        raise EOFError("EOF when reading a line")
    return line[:-1] if line.endswith("\\n") else line
builtins.input = input
"""
"""Installs ``std_input`` as ``sys.stdin`` and an ``input()`` reading it. Compiled under its own
file name, so its frames never show in the user's tracebacks, and run in its own namespace."""


def stdin_prelude(data: str) -> str:
    """The cell that gives a stateless run ``data`` as standard input."""
    return f"exec(compile({STDIN_SOURCE!r}, '<std_input>', 'exec'), {{'DATA': {data!r}}})\n"


def reply_bytes(result: ExecutionResult, new_session_created: bool) -> bytes:
    """The ``/execute`` reply body for ``result``: the fields of :class:`NemoExecuteReply`, in its
    order (a plain dict serialized by pydantic-core: a quarter of ``model_construct``'s cost)."""
    return to_json(
        {
            "process_status": result.status,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "new_session_created": new_session_created,
            "state": result.state,
            "reason": result.reason,
            "duration": result.duration,
            "stdout_truncated": result.stdout_truncated,
            "stderr_truncated": result.stderr_truncated,
        }
    )


def lost(why: str, reason: str) -> ExecutionResult:
    """The result reported when a session's interpreter is gone (not the user code's fault)."""
    return ExecutionResult(
        status="error",
        stderr=f"{why}; the Python session was lost, all variables are gone.\n",
        state="lost",
        reason=reason,
    )


async def handle(
    service: Service,
    scope: Scope,
    path: str,
    headers: dict[bytes, bytes],
    receive: Receive,
    send: Send,
) -> None:
    """Answer one request of the NeMo-Skills API (or 404)."""
    method: str = scope["method"]
    if path == "/execute":
        if method != "POST":
            raise not_allowed(method, path, "POST")
        service.authorize(headers)
        await execute(service, headers, receive, send)
    elif path == "/health":
        if method != "GET":
            raise not_allowed(method, path, "GET")
        await health(service, scope, send)
    elif path == "/sessions":
        if method != "GET":
            raise not_allowed(method, path, "GET")
        service.authorize(headers)
        await list_sessions(service, send)
    elif path.startswith("/sessions/"):
        if method != "DELETE":
            raise not_allowed(method, path, "DELETE")
        service.authorize(headers)
        await delete_session(service, path[len("/sessions/") :], send)
    else:
        raise not_found(method, path)


async def send_error(send: Send, error: HTTPError) -> None:
    """A NeMo-Skills style error reply."""
    log_refusal(error)
    body = {"error": error.nemo_error or error.message, "type": error.type}
    await send_json(send, error.status, body, JSON + error.headers)


async def execute(
    service: Service, headers: dict[bytes, bytes], receive: Receive, send: Send
) -> None:
    """``POST /execute``."""
    content_is_json(headers)
    body = await read_body(receive, headers, service.config.max_body_bytes)
    request = parse(NemoExecuteRequest, body)
    config = service.config
    check_run_limits(
        request.timeout,
        request.max_output_characters,
        max_timeout=config.max_timeout,
        max_output_cap=config.max_output_cap,
    )
    if service.stopping:
        raise shutting_down()
    language = request.language
    if language == "ipython":
        raw = headers.get(b"x-session-id", b"").strip()
        if not raw:
            raise HTTPError(
                400,
                "bad_request",
                "X-Session-ID header required for ipython sessions (send any id; requests with "
                "the same id share one stateful session)",
                nemo_error="X-Session-ID header required for ipython sessions",
            )
        if len(raw) > MAX_NEMO_SESSION_ID:
            raise HTTPError(
                400, "bad_request", f"X-Session-ID is longer than {MAX_NEMO_SESSION_ID} bytes"
            )
        reply = await run_ipython(service, raw.decode("latin-1"), request)
    elif language in STATELESS_LANGUAGES:
        reply = reply_bytes(await run_python(service, request), False)
    else:
        raise HTTPError(
            400,
            "unsupported_language",
            f"language {language!r} is not supported by this server: use 'ipython' (stateful, "
            "with an X-Session-ID header) or 'python' (one fresh interpreter per request)",
        )
    await send_bytes(send, 200, reply, JSON)


async def run_ipython(service: Service, session_id: str, request: NemoExecuteRequest) -> bytes:
    """One cell in the named session, created on first use."""
    for attempt in range(2):
        entry, created = await service.registry.get_or_create(session_id)
        try:
            result = await entry.session.run(
                request.generated_code,
                timeout=request.timeout,
                max_output_characters=request.max_output_characters,
            )
        except SandboxClosedError:
            if service.stopping:
                raise
            if attempt == 0:
                continue  # evicted between the lookup and the run: start it afresh
            result = lost("The sandbox session was closed during this execution", "closed")
            created = True
        except SandboxError as e:
            log.warning("session.lost", error=str(e))
            result = lost(f"The sandbox session failed ({e})", "sandbox_error")
            created = True
        except asyncio.CancelledError:
            if not service.stopping:
                raise
            result = cut(service)
            created = True
        return reply_bytes(result, created or result.state == "lost")
    raise AssertionError("unreachable")


def cut(service: Service) -> ExecutionResult:
    """The result of an execution still running when the shutdown grace ran out."""
    return lost(
        "The sandbox server shut down before this execution finished "
        f"(it waited {service.config.shutdown_grace:g} s)",
        "shutdown",
    )


async def run_python(service: Service, request: NemoExecuteRequest) -> ExecutionResult:
    """Stateless ``python``: a fresh session whose stdin is ``std_input``."""

    async def work(session: LocalSession) -> ExecutionResult:
        prelude = await session.run(
            stdin_prelude(request.std_input), timeout=max(request.timeout, 5.0)
        )
        if prelude.status != "completed":
            return prelude
        return await session.run(
            request.generated_code,
            timeout=request.timeout,
            max_output_characters=request.max_output_characters,
        )

    try:
        return await service.registry.stateless(work)
    except asyncio.CancelledError:
        if not service.stopping:
            raise
        return cut(service)


async def list_sessions(service: Service, send: Send) -> None:
    """``GET /sessions``: their shape, with our extras per session."""
    sessions = {}
    for entry in service.registry.entries():
        info = entry.info()
        sessions[entry.session_id] = {
            "backend": BACKEND,
            "created": info.created,
            "last_used": info.last_used,
            "alive": True,
            "executions": info.executions,
            "busy": info.busy,
        }
    await send_json(send, 200, {"sessions": sessions, "backend": BACKEND})


async def delete_session(service: Service, session_id: str, send: Send) -> None:
    """``DELETE /sessions/{id}``: 200 or 404 with their messages."""
    entry = await service.registry.delete(session_id)
    if entry is None:
        message = f"IPython session {session_id} not found"
        raise HTTPError(404, "session_not_found", message, nemo_error=message)
    await send_json(send, 200, {"message": f"IPython session {session_id} deleted successfully"})


async def health(service: Service, scope: Scope, send: Send) -> None:
    """``GET /health`` (no token needed): 200 healthy, 503 while shutting down or while the
    sandbox cannot run code (``unhealthy``, with the ``problem``; see :meth:`Service.health`)."""
    server = scope.get("server") or ("", service.config.port)
    code, status, problem = service.health()
    body: dict[str, object] = {
        "status": status,
        "port": server[1],
        "api": BACKEND,
        "version": API_VERSION,
        "sessions": len(service.registry),
    }
    if problem is not None:
        body["problem"] = problem
    await send_json(send, code, body)
