"""The wire contract of the sandbox service: paths, headers and JSON bodies of both APIs.

The server (:mod:`tir_agent.service.server`) and the client
(:class:`~tir_agent.sandbox.remote.RemoteSandbox`) both import this module, so the two cannot
drift apart. Two APIs share one server:

**NeMo-Skills API** (REFERENCE.md §5; their client works unchanged)::

    POST   /execute          NemoExecuteRequest, header X-Session-ID (required for "ipython")
                             -> 200 NemoExecuteReply
    GET    /sessions         -> 200 {"backend": "ipython", "sessions": {id: {...}}}
    DELETE /sessions/{id}    -> 200 {"message": ...} | 404 {"error": ...}
    GET    /health           -> 200 {"status": "healthy", ...}

**tir-agent API, version 1** (everything :class:`~tir_agent.sandbox.ExecutionResult` carries).
Every reply carries the header ``X-TIR-Agent-API: 1``; a client that does not see it is talking
to something else and must fail clearly instead of misreading the reply. Clients send the same
header; a server of another version answers 400 ``api_version``::

    GET    /v1/health                    -> 200 Health
    POST   /v1/sessions                  header X-Session-ID: <id chosen by the client>
                                         -> 201 SessionInfo | 409 session_exists
    GET    /v1/sessions                  -> 200 SessionList
    POST   /v1/sessions/{id}/run         RunRequest (+ header X-Session-ID: <id>)
                                         -> 200 ExecutionResult | 404 session_not_found
    DELETE /v1/sessions/{id}             -> 200 SessionInfo | 404 session_not_found
    POST   /v1/run                       RunRequest -> 200 ExecutionResult  (fresh session)

Errors of the tir-agent API are ``{"error": {"type": ..., "message": ...}}`` (:class:`ErrorBody`)
with 400 (malformed, ``api_version``, header/path mismatch), 401 (token), 404, 405 (method not
allowed, type ``bad_request``, with ``Allow``), 409, 413 (body too large), 415 (not JSON), 422
(valid JSON of the wrong shape, or a ``timeout``/``max_output_characters`` above the server's
limits), 500 ``sandbox_error`` (the sandbox or the server failed; a client treats it on a
session's run as a lost session) or 503 (shutting down). The NeMo-Skills API answers its errors
as theirs does, ``{"error": message}``, with the same statuses. Two replies are sent before
the request is known, in this API's shape whatever the path: 503 ``overloaded`` to a connection refused at the server's
connection cap, and 431 ``headers_too_large`` to a request head above its limit (see
:mod:`tir_agent.service.connections`).

Session ids are chosen by the client (so a proxy can route by ``X-Session-ID`` from the very
first request) and must match :data:`SESSION_ID_PATTERN`. Session requests of the v1 API carry
the id both in the path and in the header; a mismatch is a 400. A ``run`` for an id the server
does not know (never created, closed, evicted after being idle, or created on a server that has
since died) is a 404 ``session_not_found``: the v1 API never silently creates a fresh session,
so a client always learns that state was lost.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tir_agent.sandbox.protocol import TracebackVerbosity
from tir_agent.sandbox.result import ExecutionResult

API_VERSION = 1
"""Version of the tir-agent API served under :data:`API_PREFIX`."""
API_PREFIX = "/v1"
API_HEADER = "X-TIR-Agent-API"
"""Sent by client and server on every tir-agent API request and reply; value ``"1"``."""
SESSION_HEADER = "X-Session-ID"
"""Session id header (NeMo-Skills' name; nginx routes on it with ``hash $http_x_session_id``)."""
TOKEN_ENV = "TIR_AGENT_SANDBOX_TOKEN"
"""Environment variable holding the bearer token, read by the server and the client."""
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""Valid session ids (full match): 1-128 characters, letters, digits and ``._:-``."""
DEFAULT_PORT = 6000
"""NeMo-Skills' sandbox port, so their ``NEMO_SKILLS_SANDBOX_PORT`` default keeps working."""
MAX_BODY_BYTES = 16 * 1024 * 1024
"""Default request body limit of the server (413 above it): room for a 5 MB ``generated_code``
(NeMo-Skills' server takes one) even when JSON escaping triples it."""

ErrorType = Literal[
    "bad_request",
    "api_version",
    "unauthorized",
    "not_found",
    "session_not_found",
    "session_exists",
    "body_too_large",
    "unsupported_media_type",
    "invalid_request",
    "unsupported_language",
    "shutting_down",
    "overloaded",
    "headers_too_large",
    "sandbox_error",
]


# -- NeMo-Skills API


class NemoExecuteRequest(BaseModel):
    """``POST /execute`` body, NeMo-Skills field names. Unknown fields are ignored, as theirs."""

    model_config = ConfigDict(extra="ignore")

    generated_code: str
    timeout: int | float = Field(10.0, gt=0)
    """Seconds; kept as sent (``1`` or ``10.0``) because their timeout text repeats it."""
    language: str = "ipython"
    """``ipython`` (stateful, needs ``X-Session-ID``), ``python``/``python3``/``pypy3`` (a
    script, ``python -c``, in a fresh session), ``shell`` (``bash``, in the server's one shared
    shell session, so shell requests share files as on their server).
    Anything else (``lean4``) is answered ``process_status: error``."""
    max_output_characters: int = Field(1000, ge=0)
    std_input: str = ""
    """Standard input of a ``python`` or ``shell`` script."""
    traceback_verbosity: str = "Plain"
    """IPython's traceback mode for ``ipython`` cells: ``Plain``, ``Context``, ``Verbose`` or
    ``Minimal`` (their client capitalizes it); another value is answered ``process_status:
    error``."""


class NemoExecuteReply(BaseModel):
    """``POST /execute`` reply: exactly NeMo-Skills' fields (their server sorts the keys).
    ``new_session_created`` is sent for ``ipython`` only, as theirs; the richer fields of
    :class:`~tir_agent.sandbox.ExecutionResult` are on the ``/v1`` API."""

    new_session_created: bool | None = None
    """The session's earlier state is gone (first request, or its interpreter was restarted,
    reported on that request and on the session's next one)."""
    process_status: Literal["completed", "error", "timeout"]
    stderr: str
    stdout: str


# -- tir-agent API v1


class RunRequest(BaseModel):
    """``POST /v1/sessions/{id}/run`` and ``POST /v1/run`` body; ``None`` = server default."""

    model_config = ConfigDict(extra="forbid")

    code: str
    timeout: float | None = Field(None, gt=0)
    max_output_characters: int | None = Field(None, ge=0)
    ipython: bool = False
    """Run the cell through IPython as NeMo-Skills' server does (``LocalSession.run``)."""
    traceback_verbosity: TracebackVerbosity | None = None
    """IPython's traceback mode (``ipython`` cells only; ``None``: ``Plain``)."""


class SessionInfo(BaseModel):
    """One session as the server sees it (times are Unix seconds)."""

    session_id: str
    created: float
    last_used: float
    executions: int = 0
    busy: bool = False


class SessionList(BaseModel):
    sessions: list[SessionInfo]


class Health(BaseModel):
    """``GET /v1/health``."""

    status: Literal["healthy", "shutting_down", "unhealthy"]
    """``unhealthy`` (503): the sandbox cannot run code now (its template died and is being
    restarted); ``problem`` says why."""
    problem: str | None = None
    api: Literal["tir-agent"] = "tir-agent"
    version: int = API_VERSION
    sessions: int
    """Open sessions on this server."""
    max_sessions: int | None
    protections: dict[str, bool]
    """What isolation is active on the server's host (``LocalSandbox.protections``)."""


class ErrorDetail(BaseModel):
    type: ErrorType
    message: str
    """Says what was wrong and how to fix it."""


class ErrorBody(BaseModel):
    error: ErrorDetail


def valid_session_id(session_id: str) -> bool:
    """Whether ``session_id`` may be used as a session id."""
    return SESSION_ID_PATTERN.fullmatch(session_id) is not None


__all__ = [
    "API_HEADER",
    "API_PREFIX",
    "API_VERSION",
    "DEFAULT_PORT",
    "MAX_BODY_BYTES",
    "SESSION_HEADER",
    "SESSION_ID_PATTERN",
    "TOKEN_ENV",
    "ErrorBody",
    "ErrorDetail",
    "ErrorType",
    "ExecutionResult",
    "Health",
    "NemoExecuteReply",
    "NemoExecuteRequest",
    "RunRequest",
    "SessionInfo",
    "SessionList",
    "valid_session_id",
]
