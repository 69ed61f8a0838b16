"""Raw ASGI plumbing of the server: read a bounded JSON body, send JSON replies, carry errors.

The hot paths (``POST /execute``, ``POST /v1/sessions/{id}/run``) go through these few functions
only: no request objects, no middleware, one ``dict(scope["headers"])`` per request and reply
bytes built directly, so the server adds little to :meth:`LocalSession.run`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.types import Receive, Send

from tir_agent._log import get_logger
from tir_agent.errors import SandboxClosedError, SandboxError
from tir_agent.sandbox.http_api import ErrorType

Headers = list[tuple[bytes, bytes]]

JSON: Headers = [(b"content-type", b"application/json")]
"""The content type of every reply."""

M = TypeVar("M", bound=BaseModel)

log = get_logger(__name__)
_stdlog = logging.getLogger(__name__)


class HTTPError(Exception):
    """A request the server refuses: becomes a JSON error reply with ``status``."""

    def __init__(
        self,
        status: int,
        type: ErrorType,
        message: str,
        *,
        headers: Iterable[tuple[bytes, bytes]] = (),
        nemo_error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type: ErrorType = type
        self.message = message
        self.headers = list(headers)
        self.nemo_error = nemo_error
        """The ``error`` string of the NeMo-Skills API reply when it differs from ``message``."""


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def content_is_json(headers: dict[bytes, bytes]) -> None:
    """415 unless the request says its body is JSON (a missing Content-Type is accepted)."""
    value = headers.get(b"content-type")
    if value is None:
        return
    media = value.split(b";", 1)[0].strip().lower()
    if media != b"application/json" and not media.endswith(b"+json"):
        raise HTTPError(
            415,
            "unsupported_media_type",
            f"the body must be JSON: send 'Content-Type: application/json' "
            f"(got {media.decode('latin-1')!r})",
        )


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes.

    A ``Content-Length`` above the limit is refused before reading anything; a chunked body is
    counted while it arrives, so an oversized one is never buffered whole.
    """
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise too_large(limit)
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def too_large(limit: int) -> HTTPError:
    """The 413 error; the connection is closed after it (the rest of the body is not read)."""
    return HTTPError(
        413,
        "body_too_large",
        f"the request body is larger than this server's limit of {limit} bytes "
        "(server option --max-body-bytes)",
        headers=[(b"connection", b"close")],
    )


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers) -> None:
    """Send one complete reply with a Content-Length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, value: Any, headers: Headers = JSON) -> None:
    """Send ``value`` as a JSON reply."""
    await send_bytes(send, status, to_json(value), headers)


def parse(model: type[M], body: bytes) -> M:
    """``body`` as ``model``: 400 for malformed JSON, 422 for JSON of the wrong shape."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False)
        if any(item["type"] == "json_invalid" for item in errors):
            raise HTTPError(
                400, "bad_request", f"the body is not valid JSON ({errors[0]['msg']})"
            ) from None
        parts = []
        for item in errors[:5]:
            where = ".".join(str(p) for p in item["loc"]) or "body"
            parts.append(f"{where}: {item['msg']}")
        raise HTTPError(
            422, "invalid_request", f"invalid {model.__name__}: {'; '.join(parts)}"
        ) from None


def check_run_limits(
    timeout: float | None,
    max_output_characters: int | None,
    *,
    max_timeout: float,
    max_output_cap: int,
) -> None:
    """422 for an execution ``timeout`` or output cap above the server's limits (``None``: the
    server's default, always within them). Without this, an infinite or absurd timeout would hold
    a session for ever and a cap beyond 64 bits would fail inside the sandbox (as a 500 that
    wrongly says the session is gone)."""
    if timeout is not None and not timeout <= max_timeout:  # also catches inf and nan
        raise HTTPError(
            422,
            "invalid_request",
            f"timeout: {timeout:g} s is above this server's maximum of {max_timeout:g} s; send a "
            "smaller timeout, or start the server with a larger --max-timeout",
        )
    if max_output_characters is not None and max_output_characters > max_output_cap:
        raise HTTPError(
            422,
            "invalid_request",
            f"max_output_characters: {max_output_characters} is above this server's maximum of "
            f"{max_output_cap}; send a smaller value, or start the server with a larger "
            "--max-output-cap",
        )


def not_allowed(method: str, path: str, allowed: str) -> HTTPError:
    """405 for a known path with the wrong method."""
    return HTTPError(
        405,
        "bad_request",
        f"{method} is not allowed on {path}: use {allowed}",
        headers=[(b"allow", allowed.encode())],
    )


def not_found(method: str, path: str) -> HTTPError:
    """404 for a path neither API has."""
    return HTTPError(
        404,
        "not_found",
        f"no such endpoint: {method} {path} (NeMo-Skills API: /execute, /sessions, /health; "
        "tir-agent API: /v1/...)",
    )


def shutting_down() -> HTTPError:
    """503 for new work once the server is shutting down."""
    return HTTPError(
        503,
        "shutting_down",
        "the sandbox server is shutting down and takes no new work; retry on another server",
        headers=[(b"connection", b"close")],
    )


def log_refusal(error: HTTPError) -> None:
    """A refused request: WARNING for the server's own failures (5xx), else DEBUG."""
    if error.status >= 500:
        log.warning("request.reject", status=error.status, type=error.type)
    elif _stdlog.isEnabledFor(logging.DEBUG):
        log.debug("request.reject", status=error.status, type=error.type)


async def answer(
    route: Awaitable[None],
    send: Send,
    send_error: Callable[[Send, HTTPError], Awaitable[None]],
    *,
    path: str,
    stopping: Callable[[], bool],
    cancelled: Callable[[], HTTPError],
) -> None:
    """Await ``route`` (one request's handler) and turn what it raises into an error reply in
    the API's shape (``send_error``): refusals as they are, a closed sandbox as 503, sandbox
    failures and server bugs as a logged 500 ``sandbox_error``; a request cancelled by the
    shutdown (``stopping()``) gets ``cancelled()``. A client that went away gets nothing."""
    try:
        await route
    except HTTPError as e:
        await send_error(send, e)
    except SandboxClosedError:
        await send_error(send, shutting_down())
    except SandboxError as e:
        log.error("request.error", path=path, error=type(e).__name__)
        await send_error(send, HTTPError(500, "sandbox_error", f"the sandbox failed: {e}"))
    except ClientGone:
        return
    except Exception as e:  # a bug of the server: still a JSON reply the client can read
        log.error("request.error", path=path, error=type(e).__name__, exc_info=True)
        await send_error(send, HTTPError(500, "sandbox_error", f"internal server error: {e!r}"))
    except asyncio.CancelledError:
        if not stopping():
            raise
        await send_error(send, cancelled())
