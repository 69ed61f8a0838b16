"""Bearer-token authentication, and the refusal to expose a token-less server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.servers import ROOT, ServerProcess, free_port, start_server
from tests.service.client import V1, Client
from tests.service.conftest import LIGHT
from tir_agent.errors import ConfigError
from tir_agent.service.config import ServiceConfig, check_exposure, is_loopback

TOKEN = "correct horse battery staple"

PROTECTED = [
    ("POST", "/execute", {"generated_code": "1"}, {"X-Session-ID": "a"}),
    ("GET", "/sessions", None, {}),
    ("DELETE", "/sessions/a", None, {}),
    ("GET", "/v1/sessions", None, V1),
    ("POST", "/v1/sessions", None, {**V1, "X-Session-ID": "a"}),
    ("POST", "/v1/sessions/a/run", {"code": "1"}, {**V1, "X-Session-ID": "a"}),
    ("DELETE", "/v1/sessions/a", None, {**V1, "X-Session-ID": "a"}),
    ("POST", "/v1/run", {"code": "1"}, V1),
]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server(*LIGHT, token=TOKEN) as s:  # the token comes from $TIR_AGENT_SANDBOX_TOKEN
        yield s


@pytest.mark.parametrize(("method", "path", "body", "headers"), PROTECTED)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer"])
def test_every_endpoint_but_health_needs_the_token(
    server: ServerProcess,
    method: str,
    path: str,
    body: object,
    headers: dict[str, str],
    authorization: str | None,
) -> None:
    client = Client(server.url)
    sent = dict(headers)
    if authorization is not None:
        sent["Authorization"] = authorization
    reply = client.request(method, path, body, headers=sent)
    client.close()
    assert reply.status == 401, reply.raw
    assert reply.headers["www-authenticate"].startswith("Bearer")
    error = reply.body["error"]
    if path.startswith("/v1"):
        assert error["type"] == "unauthorized"
    else:
        assert list(reply.body) == ["error"]  # NeMo-Skills' error shape
        assert "bearer token" in error
    if path.startswith("/v1"):
        assert reply.headers["x-tir-agent-api"] == "1"


def test_health_needs_no_token(server: ServerProcess) -> None:
    client = Client(server.url)
    assert client.request("GET", "/health").status == 200
    assert client.request("GET", "/v1/health").status == 200
    client.close()


def test_the_right_token_works(server: ServerProcess) -> None:
    client = Client(server.url, token=TOKEN)
    reply = client.execute("6 * 7", session="auth")
    assert reply.status == 200, reply.raw
    assert reply.body["stdout"] == "42\n"
    reply = client.v1("POST", "/run", {"code": "print(1)"})
    assert reply.status == 200, reply.raw
    lower = client.request("GET", "/sessions", headers={"Authorization": f"bearer {TOKEN}"})
    assert lower.status == 200  # the scheme is case-insensitive (RFC 7235)
    client.close()


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.8.9.10")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("::")
    assert not is_loopback("10.1.2.3")
    assert not is_loopback("sandbox.example.com")


def test_public_address_needs_a_token_or_allow_insecure() -> None:
    with pytest.raises(ConfigError, match="--token") as caught:
        check_exposure(ServiceConfig(host="0.0.0.0"))
    assert "--allow-insecure" in str(caught.value)
    check_exposure(ServiceConfig(host="0.0.0.0", token="t"))
    check_exposure(ServiceConfig(host="0.0.0.0", allow_insecure=True))
    check_exposure(ServiceConfig(host="127.0.0.1"))
    with pytest.raises(ValueError, match="empty"):
        ServiceConfig(token="  ")


def test_the_command_refuses_a_public_address_without_a_token() -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "tir_agent.service", "--host", "0.0.0.0", "--port", str(port)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT},
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to serve the sandbox on 0.0.0.0 without a token" in done.stderr
    assert "serving on" not in done.stderr
