"""``GET /health`` and ``GET /v1/health`` tell the truth about the sandbox (issue 12, class 1).

A server whose sandbox template died used to answer 500 to every execution while its health
check said ``healthy``. Now the template is restarted; while it is down both health endpoints
answer 503 ``unhealthy`` with the problem, and sessions of the dead template report their loss
(NeMo-Skills API: ``new_session_created: true``, their restart signal; tir-agent API: 500, then
404).
Real server processes (``python -m tir_agent.service``, the code behind ``tir-agent sandbox
serve``); the template is killed from outside with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.sandbox.conftest import marker, processes_with, template_pid
from tests.sandbox.test_attacks_channels import FORGE
from tests.servers import start_server
from tests.service.client import V1, Client
from tests.service.conftest import LIGHT

pytestmark = pytest.mark.slow


def test_a_dead_template_is_reported_unhealthy_then_restarted() -> None:
    mark = marker()
    with start_server(*LIGHT, f"env={{MARK: {mark}}}") as server:
        client = Client(server.url)
        try:
            assert client.execute("x = 1", session="nemo").body["process_status"] == "completed"
            v1 = client.v1("POST", "/sessions", None, session="v1")
            assert v1.status == 201
            os.kill(template_pid(mark), signal.SIGKILL)
            seen: list[tuple[int, int, dict[str, object]]] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                nemo = client.request("GET", "/health")
                ours = client.request("GET", "/v1/health", headers=V1)
                seen.append((nemo.status, ours.status, ours.body))
                if seen[-1][:2] == (200, 200) and any(s[0] == 503 for s in seen):
                    break
                time.sleep(0.005)
            down = [s for s in seen if s[0] == 503 or s[1] == 503]
            assert down, "the health check never said the sandbox was down"
            assert all(s[2]["status"] in ("unhealthy", "healthy") for s in seen)
            problem = next(s[2]["problem"] for s in down if s[1] == 503)
            assert "the sandbox template exited with code" in str(problem)
            assert seen[-1][:2] == (200, 200) and seen[-1][2]["problem"] is None
            # sessions of the dead template report the loss; then they start afresh
            body = client.execute("x", session="nemo").body
            assert (body["process_status"], body["new_session_created"]) == ("error", True)
            assert "the Python session was lost" in body["stderr"]
            body = client.execute("x = 2\nx", session="nemo").body
            assert (body["stdout"], body["new_session_created"]) == ("2\n", True)
            body = client.execute("x", session="nemo").body
            assert (body["stdout"], body["new_session_created"]) == ("2\n", False)
            reply = client.v1("POST", "/sessions/v1/run", {"code": "1"}, session="v1")
            assert reply.status == 500 and "lost" in reply.body["error"]["message"]
            reply = client.v1("POST", "/sessions/v1/run", {"code": "1"}, session="v1")
            assert reply.status == 404
            assert client.v1("POST", "/run", {"code": "6 * 7"}).body["stdout"] == "42\n"
        finally:
            client.close()
    deadline = time.monotonic() + 10
    while processes_with(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(mark) == []


@pytest.mark.parametrize("mode", ["protect_state=true", "--no-protect-state"])
def test_a_cell_forging_control_messages_harms_only_its_own_session(mode: str) -> None:
    """The attack of issue 12 through HTTP: the cell that wrote to its control channel loses its
    own interpreter; another session keeps its state and the server stays healthy."""
    mark = marker()
    with start_server(*LIGHT, mode, f"env={{MARK: {mark}}}") as server:
        client = Client(server.url)
        try:
            client.execute("canary = 'alive'", session="bystander")
            client.execute("x = 1", session="attacker")
            code = FORGE + "attack()\nimport time\ntime.sleep(1)"
            body = client.execute(code, session="attacker").body
            # NeMo-Skills' shape: the lost interpreter is their restart signal
            assert (body["process_status"], body["new_session_created"]) == ("error", True)
            assert "wrote to the sandbox's control channel" in body["stderr"]
            assert client.execute("canary", session="bystander").body["stdout"] == "'alive'\n"
            health = client.request("GET", "/v1/health", headers=V1)
            assert (health.status, health.body["status"]) == (200, "healthy")
            before = template_pid(mark)
            assert client.execute("y = 2\ny", session="attacker").body["stdout"] == "2\n"
            assert template_pid(mark) == before  # never restarted
        finally:
            client.close()
