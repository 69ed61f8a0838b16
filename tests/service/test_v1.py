"""The tir-agent API v1: every reply carries X-TIR-Agent-API, every status code of api.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.client import Client, Reply, wait_busy
from tests.service.conftest import LIGHT
from tir_agent.sandbox.http_api import ErrorBody, Health, SessionInfo, SessionList
from tir_agent.sandbox.result import ExecutionResult


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server(*LIGHT, "--no-protect-state") as s:
        yield s


def new_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def checked(reply: Reply, status: int, error: str | None = None) -> Reply:
    """``reply`` has ``status``, the API header and (for errors) an ErrorBody of type ``error``."""
    assert reply.status == status, reply.raw
    assert reply.headers.get("x-tir-agent-api") == "1"
    assert reply.headers["content-type"] == "application/json"
    if error is not None:
        body = ErrorBody.model_validate(reply.body)
        assert body.error.type == error
        assert body.error.message
    return reply


def create(client: Client) -> str:
    s = new_id()
    reply = checked(client.v1("POST", "/sessions", session=s), 201)
    info = SessionInfo.model_validate(reply.body)
    assert info.session_id == s
    assert info.executions == 0
    return s


def run(client: Client, s: str, code: str, **fields: object) -> ExecutionResult:
    reply = checked(
        client.v1("POST", f"/sessions/{s}/run", {"code": code, **fields}, session=s), 200
    )
    return ExecutionResult.model_validate(reply.body)


def test_health_without_token_or_api_header(client: Client) -> None:
    reply = checked(client.request("GET", "/v1/health"), 200)
    health = Health.model_validate(reply.body)
    assert health.status == "healthy"
    assert health.version == 1
    assert health.protections["network"] is True
    assert health.max_sessions == 256


def test_session_lifecycle(client: Client) -> None:
    s = create(client)
    assert run(client, s, "x = 41").status == "completed"
    result = run(client, s, "x + 1")
    assert result.stdout == "42\n"
    assert result.state == "kept"
    assert result.duration > 0
    listing = SessionList.model_validate(checked(client.v1("GET", "/sessions"), 200).body)
    [info] = [i for i in listing.sessions if i.session_id == s]
    assert info.executions == 2
    assert not info.busy
    deleted = SessionInfo.model_validate(
        checked(client.v1("DELETE", f"/sessions/{s}", session=s), 200).body
    )
    assert deleted.session_id == s
    checked(
        client.v1("POST", f"/sessions/{s}/run", {"code": "x"}, session=s), 404, "session_not_found"
    )
    checked(client.v1("DELETE", f"/sessions/{s}", session=s), 404, "session_not_found")


def test_results_carry_everything_the_sandbox_reports(client: Client) -> None:
    s = create(client)
    result = run(client, s, "print('a' * 30)\n1 / 0", max_output_characters=10)
    assert result.status == "error"
    assert result.reason == "exception"
    assert result.stdout == "a" * 10 + "<output cut>"
    assert result.stdout_truncated
    result = run(client, s, "while True: pass", timeout=0.3)
    assert result.status == "timeout"
    assert result.stderr.startswith("Execution timed out after 0.3 seconds\n")
    assert result.state in ("kept", "lost")  # fast mode: the soft interrupt usually keeps it


def test_stateless_run(client: Client) -> None:
    reply = checked(client.v1("POST", "/run", {"code": "import os\nprint(6 * 7)"}), 200)
    assert ExecutionResult.model_validate(reply.body).stdout == "42\n"


def test_duplicate_create_is_409(client: Client) -> None:
    s = create(client)
    checked(client.v1("POST", "/sessions", session=s), 409, "session_exists")


def test_unknown_session_is_404_never_created(client: Client) -> None:
    s = new_id()
    checked(
        client.v1("POST", f"/sessions/{s}/run", {"code": "1"}, session=s), 404, "session_not_found"
    )
    listing = SessionList.model_validate(checked(client.v1("GET", "/sessions"), 200).body)
    assert s not in {i.session_id for i in listing.sessions}


def test_a_session_deleted_through_the_nemo_api_is_gone_here_too(client: Client) -> None:
    s = create(client)
    assert client.request("DELETE", f"/sessions/{s}").status == 200
    checked(
        client.v1("POST", f"/sessions/{s}/run", {"code": "1"}, session=s), 404, "session_not_found"
    )


def test_api_header_is_required_and_checked(client: Client) -> None:
    s = create(client)
    path = f"/v1/sessions/{s}/run"
    body = {"code": "1"}
    reply = checked(
        client.request("POST", path, body, headers={"X-Session-ID": s}), 400, "api_version"
    )
    assert "X-TIR-Agent-API: 1" in reply.body["error"]["message"]
    reply = checked(
        client.request("POST", path, body, headers={"X-Session-ID": s, "X-TIR-Agent-API": "2"}),
        400,
        "api_version",
    )
    assert "version 1" in reply.body["error"]["message"]
    reply = checked(client.request("GET", "/v2/sessions"), 400, "api_version")
    checked(client.request("GET", "/v1/sessions"), 400, "api_version")


def test_session_ids_are_validated_and_must_match(client: Client) -> None:
    s = create(client)
    checked(client.v1("POST", "/sessions", session="bad id!"), 400, "bad_request")
    checked(client.v1("POST", "/sessions"), 400, "bad_request")  # no X-Session-ID
    checked(client.v1("POST", f"/sessions/{s}/run", {"code": "1"}), 400, "bad_request")
    reply = checked(
        client.v1("POST", f"/sessions/{s}/run", {"code": "1"}, session="other"), 400, "bad_request"
    )
    assert "does not match" in reply.body["error"]["message"]
    checked(client.v1("DELETE", f"/sessions/{s}", session="other"), 400, "bad_request")
    checked(client.v1("POST", f"/sessions/{'x' * 200}/run", {"code": "1"}, session="x" * 200), 400)


def test_bodies_are_validated(client: Client) -> None:
    s = create(client)
    path = f"/v1/sessions/{s}/run"
    headers = {"X-Session-ID": s, "X-TIR-Agent-API": "1"}
    reply = checked(
        client.v1("POST", path[3:], {"code": "1", "colour": 1}, session=s), 422, "invalid_request"
    )
    assert "colour" in reply.body["error"]["message"]
    checked(
        client.v1("POST", path[3:], {"code": "1", "timeout": 0}, session=s), 422, "invalid_request"
    )
    checked(client.v1("POST", path[3:], [1, 2], session=s), 422, "invalid_request")
    checked(
        client.request(
            "POST", path, raw=b"{", headers={**headers, "Content-Type": "application/json"}
        ),
        400,
        "bad_request",
    )
    checked(
        client.request(
            "POST", path, raw=b"code=1", headers={**headers, "Content-Type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    )
    # the session is still fine
    assert run(client, s, "print(1)").stdout == "1\n"


def test_wrong_method_and_unknown_path(client: Client) -> None:
    reply = checked(client.v1("GET", "/run"), 405, "bad_request")
    assert reply.headers["allow"] == "POST"
    checked(client.v1("PUT", "/sessions"), 405, "bad_request")
    checked(client.v1("GET", "/nothing"), 404, "not_found")
    checked(client.v1("GET", "/sessions/a/b/c", session="a"), 404, "not_found")


GARBLE = "import os\n_ = os.write(6, b'\\x00\\x00\\x00\\x05hello')"
"""A cell writing garbage to its session's channel (fd 6, see tests/sandbox/test_lifecycle.py):
the sandbox ends that session with SandboxError."""


def test_a_session_the_sandbox_lost_is_500_then_404(client: Client) -> None:
    s = create(client)
    reply = checked(
        client.v1("POST", f"/sessions/{s}/run", {"code": GARBLE, "timeout": 2}, session=s),
        500,
        "sandbox_error",
    )
    assert "create it again" in reply.body["error"]["message"]
    checked(
        client.v1("POST", f"/sessions/{s}/run", {"code": "1"}, session=s), 404, "session_not_found"
    )
    body = client.execute(GARBLE, session="nemo-garble", timeout=2).body
    assert (body["process_status"], body["new_session_created"]) == ("error", True)
    assert "the Python session was lost" in body["stderr"]
    again = client.execute("1 + 1", session="nemo-garble").body
    assert (again["stdout"], again["new_session_created"]) == ("2\n", True)


def test_deleting_a_session_that_runs_a_cell_cancels_the_cell_at_once(
    server: ServerProcess,
) -> None:
    """DELETE does not wait for the running cell's timeout: the cell is killed at once, the run
    gets 404 session_not_found (as any request for a deleted session) and the session is gone."""
    setup = Client(server.url)
    s = create(setup)
    result: dict[str, Reply] = {}

    def long_run() -> None:
        runner = Client(server.url)
        try:
            body = {"code": "import time\ntime.sleep(60)", "timeout": 120}
            result["run"] = runner.v1("POST", f"/sessions/{s}/run", body, session=s)
        finally:
            runner.close()

    thread = threading.Thread(target=long_run)
    thread.start()
    try:
        wait_busy(server.url, {s})
        started = time.monotonic()
        deleted = checked(setup.v1("DELETE", f"/sessions/{s}", session=s), 200)
        thread.join(timeout=30)
        took = time.monotonic() - started
    finally:
        thread.join()
        setup.close()
    assert SessionInfo.model_validate(deleted.body).session_id == s
    assert took < 10, f"the delete and the run took {took:.1f} s: the cell was not cancelled"
    checked(result["run"], 404, "session_not_found")
