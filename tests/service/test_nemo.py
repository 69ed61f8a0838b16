"""The NeMo-Skills API, with the request and reply shapes of REFERENCE.md §5.

Their client (``nemo_skills/code_execution/sandbox.py``) sends ``POST /execute`` with
``{generated_code, std_input, timeout, language, max_output_characters, traceback_verbosity}`` and
``X-Session-ID``, reads ``{process_status, stdout, stderr, new_session_created}``, deletes sessions
with ``DELETE /sessions/{id}`` (200, or 404 for an unknown id) and polls ``GET /health``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.client import Client
from tests.service.conftest import LIGHT

NEMO_FIELDS = {"process_status", "stdout", "stderr", "new_session_created"}
EXTRAS = {"state", "reason", "duration", "stdout_truncated", "stderr_truncated"}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server(*LIGHT) as s:  # protect_state on (the default): timeouts roll back
        yield s


def sid() -> str:
    return str(uuid.uuid4())  # what their client sends


def request(code: str, **fields: object) -> dict[str, object]:
    """A request exactly as their client builds it (``_prepare_request``)."""
    body: dict[str, object] = {
        "generated_code": code,
        "std_input": "",
        "timeout": 10.0,
        "language": "ipython",
        "max_output_characters": 1000,
        "traceback_verbosity": "Plain",
    }
    body.update(fields)
    return body


def execute(client: Client, session: str | None, code: str, **fields: object) -> dict[str, object]:
    headers = {"X-Session-ID": session} if session is not None else {}
    reply = client.request("POST", "/execute", request(code, **fields), headers=headers)
    assert reply.status == 200, reply.raw
    assert reply.headers["content-type"] == "application/json"
    assert set(reply.body) == NEMO_FIELDS | EXTRAS
    return reply.body  # type: ignore[no-any-return]


def test_ipython_keeps_state_and_reports_new_sessions(client: Client) -> None:
    s = sid()
    first = execute(client, s, "x = 41\nx + 1")
    assert first["process_status"] == "completed"
    assert first["stdout"] == "42\n"
    assert first["stderr"] == ""
    assert first["new_session_created"] is True
    second = execute(client, s, "x")
    assert second["stdout"] == "41\n"
    assert second["new_session_created"] is False


def test_ipython_without_session_header_is_400(client: Client) -> None:
    reply = client.request("POST", "/execute", request("1 + 1"))
    assert reply.status == 400
    assert reply.body["error"] == "X-Session-ID header required for ipython sessions"
    reply = client.request("POST", "/execute", request("1 + 1"), headers={"X-Session-ID": ""})
    assert reply.status == 400


def test_error_reply_has_the_short_traceback(client: Client) -> None:
    body = execute(client, sid(), "1 / 0")
    assert body["process_status"] == "error"
    assert body["stderr"] == (
        "Traceback (most recent call last):\n    1 / 0\nZeroDivisionError: division by zero\n"
    )
    assert body["reason"] == "exception"
    assert body["state"] == "kept"


def test_output_is_cut_at_max_output_characters(client: Client) -> None:
    body = execute(client, sid(), "print('a' * 50)", max_output_characters=10)
    assert body["stdout"] == "a" * 10 + "<output cut>"
    assert body["stdout_truncated"] is True
    assert body["stderr_truncated"] is False


def test_timeout_keeps_the_state_and_says_so(client: Client) -> None:
    s = sid()
    execute(client, s, "x = 7")
    body = execute(client, s, "x = 8\nwhile True: pass", timeout=0.5)
    assert body["process_status"] == "timeout"
    assert body["stderr"].startswith("Execution timed out after 0.5 seconds\n")  # type: ignore[union-attr]
    assert body["state"] == "rolled_back"
    assert body["reason"] == "timeout"
    # their client replays history only when new_session_created is true: here nothing was lost
    assert body["new_session_created"] is False
    after = execute(client, s, "x")
    assert after["stdout"] == "7\n"
    assert after["new_session_created"] is False


def test_delete_session_then_404_and_a_fresh_session(client: Client) -> None:
    s = sid()
    execute(client, s, "y = 1")
    reply = client.request("DELETE", f"/sessions/{s}", headers={"X-Session-ID": s})
    assert reply.status == 200
    assert reply.body == {"message": f"IPython session {s} deleted successfully"}
    reply = client.request("DELETE", f"/sessions/{s}", headers={"X-Session-ID": s})
    assert reply.status == 404
    assert reply.body["error"] == f"IPython session {s} not found"
    again = execute(client, s, "y")
    assert again["new_session_created"] is True
    assert again["process_status"] == "error"
    assert "NameError" in again["stderr"]  # type: ignore[operator]


def test_list_sessions_shape(client: Client) -> None:
    s = sid()
    execute(client, s, "1")
    reply = client.request("GET", "/sessions")
    assert reply.status == 200
    assert reply.body["backend"] == "tir-agent"
    info = reply.body["sessions"][s]
    assert info["alive"] is True
    assert info["backend"] == "tir-agent"
    assert info["created"] <= info["last_used"]
    assert info["executions"] == 1


def test_python_is_stateless_and_reads_std_input(client: Client) -> None:
    code = "import sys\nname = input()\nrest = sys.stdin.read()\nprint(name.upper(), rest.split())"
    body = execute(client, None, code, language="python", std_input="ada\n1 2\n3\n")
    assert body["process_status"] == "completed"
    assert body["stdout"] == "ADA ['1', '2', '3']\n"
    assert body["new_session_created"] is False
    for language in ("python3", "pypy3"):
        body = execute(client, None, "print(name)", language=language)
        assert body["process_status"] == "error"  # a fresh interpreter each time
        assert "NameError" in body["stderr"]  # type: ignore[operator]


def test_python_input_past_the_end_is_eof_like_python(client: Client) -> None:
    body = execute(client, None, "a = input('? ')\nb = input()", language="python", std_input="1")
    assert body["process_status"] == "error"
    assert body["stdout"] == "? "
    assert body["stderr"] == (
        "Traceback (most recent call last):\n    b = input()\nEOFError: EOF when reading a line\n"
    )


@pytest.mark.parametrize("language", ["shell", "lean4", "cobol"])
def test_other_languages_are_refused(client: Client, language: str) -> None:
    reply = client.request(
        "POST", "/execute", request("echo hi", language=language), headers={"X-Session-ID": "x"}
    )
    assert reply.status == 400
    assert reply.body["type"] == "unsupported_language"
    assert language in reply.body["error"]


def test_health_needs_nothing(client: Client, server: ServerProcess) -> None:
    reply = client.request("GET", "/health")
    assert reply.status == 200
    assert reply.body["status"] == "healthy"
    assert reply.body["port"] == server.port


def test_malformed_requests_get_clear_errors(client: Client) -> None:
    reply = client.request("POST", "/execute", {"code": "1"}, headers={"X-Session-ID": "x"})
    assert reply.status == 422
    assert "generated_code" in reply.body["error"]
    reply = client.request(
        "POST",
        "/execute",
        raw=b'{"generated_code": ',
        headers={"Content-Type": "application/json", "X-Session-ID": "x"},
    )
    assert reply.status == 400
    assert "not valid JSON" in reply.body["error"]
    reply = client.request("GET", "/execute")
    assert reply.status == 405
    assert reply.headers["allow"] == "POST"
    assert client.request("GET", "/nope").status == 404


def test_std_input_arrives_byte_for_byte(client: Client) -> None:
    data = "a\"b'c\\d \u00fc\u4e2d\n\ttab\r\nlast"
    body = execute(client, None, "import sys\nsys.stdin.read()", language="python", std_input=data)
    assert body["stdout"] == repr(data) + "\n"  # and python echoes a final expression, as ipython


def test_language_python_needs_no_session_header_and_makes_none(client: Client) -> None:
    before = set(client.request("GET", "/sessions").body["sessions"])
    execute(client, None, "print(1)", language="python")
    assert set(client.request("GET", "/sessions").body["sessions"]) == before
