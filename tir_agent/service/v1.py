"""The tir-agent API, version 1 (paths under ``/v1``; contract in :mod:`tir_agent.sandbox.http_api`).

Every reply, errors included, carries ``X-TIR-Agent-API: 1``; every request except
``GET /v1/health`` must send it too, so a client and a server of different versions (or a
client pointed at something else) fail with a clear 400 ``api_version`` instead of misreading
each other. Sessions are never created implicitly: a ``run`` for an unknown, closed or evicted id
is a 404 ``session_not_found``.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from tir_agent._log import get_logger
from tir_agent.errors import SandboxClosedError, SandboxError
from tir_agent.sandbox.http_api import (
    API_HEADER,
    API_VERSION,
    SESSION_HEADER,
    Health,
    RunRequest,
    SessionList,
    valid_session_id,
)
from tir_agent.sandbox.local import LocalSession
from tir_agent.sandbox.result import ExecutionResult
from tir_agent.service._asgi import (
    Headers,
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
from tir_agent.service.nemo import SHELL_SESSION
from tir_agent.service.state import Service

log = get_logger(__name__)

V1: Headers = [
    (b"content-type", b"application/json"),
    (API_HEADER.lower().encode(), str(API_VERSION).encode()),
]
"""Headers of every reply of this API."""

_VERSION = str(API_VERSION).encode()
_API = API_HEADER.lower().encode()
_SESSION = SESSION_HEADER.lower().encode()
_results = ExecutionResult.__pydantic_serializer__


async def handle(
    service: Service,
    scope: Scope,
    rest: str,
    headers: dict[bytes, bytes],
    receive: Receive,
    send: Send,
) -> None:
    """Answer one request under ``/v1`` (``rest`` is the path after ``/v1``)."""
    method: str = scope["method"]
    path = "/v1" + rest
    if rest == "/health":
        if method != "GET":
            raise not_allowed(method, path, "GET")
        await health(service, send)
        return
    service.authorize(headers)
    check_version(headers)
    if rest.startswith("/sessions/"):
        tail = rest[len("/sessions/") :]
        if tail.endswith("/run"):
            if method != "POST":
                raise not_allowed(method, path, "POST")
            await run(service, session_id(tail[:-4], headers), headers, receive, send)
        elif "/" not in tail:
            if method != "DELETE":
                raise not_allowed(method, path, "DELETE")
            await delete(service, session_id(tail, headers), send)
        else:
            raise not_found(method, path)
    elif rest == "/sessions":
        if method == "POST":
            await create(service, headers, send)
        elif method == "GET":
            await list_sessions(service, send)
        else:
            raise not_allowed(method, path, "GET, POST")
    elif rest == "/run":
        if method != "POST":
            raise not_allowed(method, path, "POST")
        await run_stateless(service, headers, receive, send)
    else:
        raise not_found(method, path)


async def send_error(send: Send, error: HTTPError) -> None:
    """An :class:`~tir_agent.sandbox.http_api.ErrorBody` reply with the API header."""
    log_refusal(error)
    body = {"error": {"type": error.type, "message": error.message}}
    await send_json(send, error.status, body, V1 + error.headers)


def cut(service: Service) -> HTTPError:
    """503 for an execution still running when the shutdown grace ran out."""
    return HTTPError(
        503,
        "shutting_down",
        "the sandbox server shut down before this execution finished (it waited "
        f"{service.config.shutdown_grace:g} s); the session and its state are gone",
        headers=[(b"connection", b"close")],
    )


def check_version(headers: dict[bytes, bytes]) -> None:
    """400 ``api_version`` unless the request says it speaks this API version."""
    sent = headers.get(_API)
    if sent == _VERSION:
        return
    if sent is None:
        message = (
            f"this is a tir-agent sandbox server speaking API version {API_VERSION}: send the "
            f"header '{API_HEADER}: {API_VERSION}' (tir_agent.sandbox.RemoteSandbox does)"
        )
    else:
        message = (
            f"this server speaks tir-agent API version {API_VERSION}, the client version "
            f"{sent.decode('latin-1')!r}: use a client and server of the same tir-agent release"
        )
    raise HTTPError(400, "api_version", message)


def session_id(from_path: str, headers: dict[bytes, bytes]) -> str:
    """The session id of a session request: valid, and the same in the path and the header."""
    check_session_id(from_path)
    sent = headers.get(_SESSION)
    if sent is None:
        raise HTTPError(
            400,
            "bad_request",
            f"missing header {SESSION_HEADER}: {from_path} (the session id of the path; proxies "
            "route on it)",
        )
    if sent.decode("latin-1") != from_path:
        raise HTTPError(
            400,
            "bad_request",
            f"the {SESSION_HEADER} header ({sent.decode('latin-1')!r}) does not match the "
            f"session id of the path ({from_path!r})",
        )
    return from_path


def check_session_id(value: str) -> None:
    """400 unless ``value`` is a valid session id."""
    if not valid_session_id(value):
        raise HTTPError(
            400,
            "bad_request",
            f"invalid session id {value[:140]!r}: use 1-128 letters, digits and '._:-', "
            "starting with a letter or digit",
        )


def unknown_session(value: str) -> HTTPError:
    """404 for a session this server does not have (any more)."""
    return HTTPError(
        404,
        "session_not_found",
        f"no session {value!r} on this server: it was never created here, was deleted, was "
        "closed after being idle or for room, or the server restarted. Its state is gone; "
        "create the session again.",
    )


def run_request(service: Service, body: bytes) -> RunRequest:
    """The body of a ``run`` request, its timeout and output cap within the server's limits."""
    request = parse(RunRequest, body)
    config = service.config
    check_run_limits(
        request.timeout,
        request.max_output_characters,
        max_timeout=config.max_timeout,
        max_output_cap=config.max_output_cap,
    )
    if request.traceback_verbosity is not None and not request.ipython:
        raise HTTPError(
            422,
            "invalid_request",
            'traceback_verbosity applies to IPython cells only: send "ipython": true as well',
        )
    return request


async def run(
    service: Service, sid: str, headers: dict[bytes, bytes], receive: Receive, send: Send
) -> None:
    """``POST /v1/sessions/{id}/run``."""
    content_is_json(headers)
    request = run_request(service, await read_body(receive, headers, service.config.max_body_bytes))
    if service.stopping:
        raise shutting_down()
    entry = service.registry.get(sid)
    if entry is None:
        raise unknown_session(sid)
    try:
        result = await entry.session.run(
            request.code,
            timeout=request.timeout,
            max_output_characters=request.max_output_characters,
            ipython=request.ipython,
            traceback_verbosity=request.traceback_verbosity,
        )
    except SandboxClosedError:
        if service.stopping:
            raise
        raise unknown_session(sid) from None
    except SandboxError as e:
        log.warning("session.lost", error=str(e))
        raise HTTPError(
            500,
            "sandbox_error",
            f"the session failed and is gone ({e}); its state is lost, create it again",
        ) from None
    await send_bytes(send, 200, _results.to_json(result), V1)


async def run_stateless(
    service: Service, headers: dict[bytes, bytes], receive: Receive, send: Send
) -> None:
    """``POST /v1/run``: one execution in a fresh session."""
    content_is_json(headers)
    request = run_request(service, await read_body(receive, headers, service.config.max_body_bytes))
    if service.stopping:
        raise shutting_down()

    async def work(session: LocalSession) -> ExecutionResult:
        return await session.run(
            request.code,
            timeout=request.timeout,
            max_output_characters=request.max_output_characters,
            ipython=request.ipython,
            traceback_verbosity=request.traceback_verbosity,
        )

    result = await service.registry.stateless(work)
    await send_bytes(send, 200, _results.to_json(result), V1)


async def create(service: Service, headers: dict[bytes, bytes], send: Send) -> None:
    """``POST /v1/sessions`` with the new id in ``X-Session-ID``: 201 or 409."""
    sent = headers.get(_SESSION)
    if sent is None:
        raise HTTPError(
            400,
            "bad_request",
            f"POST /v1/sessions needs the new session's id in the {SESSION_HEADER} header",
        )
    sid = sent.decode("latin-1")
    check_session_id(sid)
    if service.stopping:
        raise shutting_down()
    entry = await service.registry.create(sid)
    if entry is None:
        raise HTTPError(
            409,
            "session_exists",
            f"session {sid!r} already exists on this server: choose another id, or delete it first",
        )
    await send_bytes(send, 201, entry.info().model_dump_json().encode(), V1)


async def list_sessions(service: Service, send: Send) -> None:
    """``GET /v1/sessions``."""
    entries = [e for e in service.registry.entries() if e.session_id != SHELL_SESSION]
    listing = SessionList(sessions=[e.info() for e in entries])
    await send_bytes(send, 200, listing.model_dump_json().encode(), V1)


async def delete(service: Service, sid: str, send: Send) -> None:
    """``DELETE /v1/sessions/{id}``: the closed session's info, or 404."""
    entry = service.registry.get(sid)
    if entry is None:
        raise unknown_session(sid)
    info = entry.info()
    if await service.registry.delete(sid) is None:
        raise unknown_session(sid)
    await send_bytes(send, 200, info.model_dump_json().encode(), V1)


async def health(service: Service, send: Send) -> None:
    """``GET /v1/health`` (no token or API header needed): 200, or 503 while shutting down or
    while the sandbox cannot run code (see :meth:`Service.health`)."""
    code, status, problem = service.health()
    body = Health(
        status=status,
        problem=problem,
        sessions=len(service.registry),
        max_sessions=service.config.sandbox.max_sessions,
        protections=service.sandbox.protections.flags(),
    )
    await send_bytes(send, code, body.model_dump_json().encode(), V1)
