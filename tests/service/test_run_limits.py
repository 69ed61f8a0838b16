"""Absurd execution parameters (issue #12): refused with 422 by both APIs, naming the field, the
server's limit and the option that changes it; the session they were aimed at is unharmed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.client import V1, Client, Reply
from tests.service.conftest import LIGHT
from tir_agent.errors import ConfigError
from tir_agent.service import command
from tir_agent.service.config import ServiceConfig

MAX_TIMEOUT = 60
MAX_CAP = 100_000


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server(
        *LIGHT,
        "--no-protect-state",
        "--max-timeout",
        str(MAX_TIMEOUT),
        "--max-output-cap",
        str(MAX_CAP),
    ) as s:
        yield s


BAD = [
    ('"timeout": 1e300', "timeout", "--max-timeout", str(MAX_TIMEOUT)),
    ('"timeout": 1e400', "timeout", "--max-timeout", str(MAX_TIMEOUT)),  # parses as infinity
    ('"timeout": Infinity', "timeout", "--max-timeout", str(MAX_TIMEOUT)),
    (f'"timeout": {MAX_TIMEOUT + 0.5}', "timeout", "--max-timeout", str(MAX_TIMEOUT)),
    (f'"max_output_characters": {2**64}', "max_output_characters", "--max-output-cap", "100000"),
    (f'"max_output_characters": {MAX_CAP + 1}', "max_output_characters", "--max-output-cap", ""),
]


def send(client: Client, api: str, field: str) -> Reply:
    """A run request with one raw JSON field added, through ``api``."""
    if api == "nemo":
        body = '{"generated_code": "1 + 1", ' + field + "}"
        headers = {"X-Session-ID": "n", "Content-Type": "application/json"}
        return client.request("POST", "/execute", raw=body.encode(), headers=headers)
    body = '{"code": "1 + 1", ' + field + "}"
    headers = {**V1, "Content-Type": "application/json"}
    if api == "v1-session":
        headers["X-Session-ID"] = "v"
        return client.request("POST", "/v1/sessions/v/run", raw=body.encode(), headers=headers)
    return client.request("POST", "/v1/run", raw=body.encode(), headers=headers)


@pytest.mark.parametrize("api", ["nemo", "v1-session", "v1-run"])
@pytest.mark.parametrize(("field", "name", "flag", "limit"), BAD)
def test_absurd_parameters_are_refused_with_422(
    server: ServerProcess, api: str, field: str, name: str, flag: str, limit: str
) -> None:
    client = Client(server.url)
    if api == "v1-session":
        client.v1("POST", "/sessions", session="v")
    reply = send(client, api, field)
    client.close()
    assert reply.status == 422, reply.raw
    if api == "nemo":
        assert list(reply.body) == ["error"]  # NeMo-Skills' error shape
        message = reply.body["error"]
    else:
        assert reply.headers["x-tir-agent-api"] == "1"
        assert reply.body["error"]["type"] == "invalid_request"
        message = reply.body["error"]["message"]
    assert message.startswith(f"{name}: ")
    assert flag in message
    assert (limit or str(MAX_CAP)) in message


def test_a_refused_request_leaves_the_session_as_it_was(server: ServerProcess) -> None:
    client = Client(server.url)
    assert client.v1("POST", "/sessions", session="keep").status == 201
    assert client.v1("POST", "/sessions/keep/run", {"code": "x = 41"}, session="keep").status == 200
    for body in (
        {"code": "x = 0", "max_output_characters": 2**64},
        {"code": "x = 0", "timeout": 1e300},
    ):
        refused = client.v1("POST", "/sessions/keep/run", body, session="keep")
        assert refused.status == 422  # not a 500, which a client reads as "the session is gone"
    again = client.v1("POST", "/sessions/keep/run", {"code": "x + 1"}, session="keep")
    assert again.body["stdout"] == "42\n"
    nemo = client.execute("y = 1", session="nk")
    assert nemo.body["new_session_created"] is True
    assert client.execute("y", session="nk", timeout=1e300).status == 422
    kept = client.execute("y + 1", session="nk")
    assert (kept.body["stdout"], kept.body["new_session_created"]) == ("2\n", False)
    client.close()


def test_the_limits_themselves_are_accepted(server: ServerProcess) -> None:
    client = Client(server.url)
    code = "print('x' * 200000)"
    reply = client.v1(
        "POST", "/run", {"code": code, "timeout": MAX_TIMEOUT, "max_output_characters": MAX_CAP}
    )
    assert reply.status == 200
    assert len(reply.body["stdout"]) == MAX_CAP + len("<output cut>")
    nemo = client.execute(
        code, language="python", timeout=MAX_TIMEOUT, max_output_characters=MAX_CAP
    )
    assert nemo.status == 200
    assert nemo.body["stdout"] == "x" * MAX_CAP + "<output cut>"
    client.close()


def config(*argv: str) -> ServiceConfig:
    parser = argparse.ArgumentParser()
    command.add_serve_arguments(parser)
    args, extra = parser.parse_known_args(argv)
    return command.service_config(args, extra)


def test_the_server_defaults_must_be_within_its_limits() -> None:
    with pytest.raises(ConfigError, match=r"--timeout.*--max-timeout"):
        config("--timeout", "120", "--max-timeout", "60")
    with pytest.raises(ConfigError, match=r"--timeout.*--max-timeout"):
        config("--timeout", "inf")
    with pytest.raises(ConfigError, match=r"--max-output-characters.*--max-output-cap"):
        config("--max-output-characters", "5000", "--max-output-cap", "4000")
    with pytest.raises(ConfigError, match="max_timeout"):
        config("--max-timeout", "nan")
    c = config(
        "--max-timeout", "5", "--timeout", "5", "--max-output-cap", "0", "max_output_characters=0"
    )
    assert (c.max_timeout, c.max_output_cap) == (5.0, 0)


def test_limit_flags_reach_the_config() -> None:
    c = config(
        "--max-connections=10",
        "--request-timeout=2.5",
        "--keep-alive=3",
        "--max-header-bytes=16K",
    )
    assert (c.max_connections, c.request_timeout, c.keep_alive, c.max_header_bytes) == (
        10,
        2.5,
        3.0,
        16 * 1024,
    )
    defaults = config()
    assert (defaults.max_connections, defaults.request_timeout, defaults.keep_alive) == (
        4096,
        30.0,
        75.0,
    )
    assert (defaults.max_timeout, defaults.max_output_cap) == (1800.0, 1_000_000)
    with pytest.raises(ConfigError, match="max_connections"):
        config("--max-connections=0")
    with pytest.raises(ConfigError, match="request_timeout"):
        config("--request-timeout=inf")


def test_json_in_the_messages_is_plain(server: ServerProcess) -> None:
    """The refusal of an infinite timeout is readable JSON (no ``Infinity`` token in it)."""
    client = Client(server.url)
    reply = send(client, "v1-run", '"timeout": 1e400')
    client.close()
    json.loads(reply.raw)
    assert "inf s is above" in reply.body["error"]["message"]
