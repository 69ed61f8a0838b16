"""The ASGI app called in-process, for states a live server shows only for a moment: shutting
down. These requests are refused before the sandbox is touched, so none is started."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tir_agent.service.config import ServiceConfig
from tir_agent.service.server import create_app

pytestmark = pytest.mark.asyncio


async def call(
    app: Any, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "server": ("127.0.0.1", 6000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, done = sent
    reply_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], reply_headers, json.loads(done["body"])


V1 = {"X-TIR-Agent-API": "1", "Content-Type": "application/json"}


async def test_new_work_is_refused_while_shutting_down() -> None:
    app = create_app(ServiceConfig())
    app.service.stopping = True
    status, headers, body = await call(
        app, "POST", "/execute", {"generated_code": "1"}, {"X-Session-ID": "a"}
    )
    assert status == 503
    assert "shutting down" in body["error"]
    assert headers["connection"] == "close"
    for path, extra in [("/v1/run", {}), ("/v1/sessions/a/run", {"X-Session-ID": "a"})]:
        status, headers, body = await call(app, "POST", path, {"code": "1"}, {**V1, **extra})
        assert (status, body["error"]["type"]) == (503, "shutting_down")
        assert headers["x-tir-agent-api"] == "1"
    status, _, body = await call(app, "POST", "/v1/sessions", None, {**V1, "X-Session-ID": "b"})
    assert (status, body["error"]["type"]) == (503, "shutting_down")
    status, _, body = await call(app, "GET", "/health")
    assert (status, body["status"]) == (503, "shutting_down")
    assert app.service.sandbox._proc is None  # nothing was started


async def test_a_server_bug_still_gets_a_json_reply_with_the_api_header() -> None:
    app = create_app(ServiceConfig())

    def broken(session_id: str) -> None:  # stands in for a bug in the server's own code
        raise RuntimeError("boom")

    app.service.registry.get = broken  # type: ignore[assignment,method-assign]
    status, headers, body = await call(
        app, "POST", "/v1/sessions/a/run", {"code": "1"}, {**V1, "X-Session-ID": "a"}
    )
    assert (status, body["error"]["type"]) == (500, "sandbox_error")
    assert "boom" in body["error"]["message"]
    assert headers["x-tir-agent-api"] == "1"
