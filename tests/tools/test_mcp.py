"""MCP servers as tools: a real server written with the official SDK (tests/tools/mcp_server.py),
over stdio (started by the agent) and Streamable HTTP (started here); the model is the scripted
endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.scripted import Step
from tests.tools.conftest import ToolHarness
from tests.tools.scripted import Calls
from tir_agent.errors import ToolServerError
from tir_agent.tools import MCPHttp, MCPStdio

pytest.importorskip("mcp", reason="the mcp extra: pip install 'tir-agent[mcp]'")
pytestmark = pytest.mark.slow  # each test starts a server process (1-3 s under load)
asyncio_test = pytest.mark.asyncio(loop_scope="module")

SERVER = str(Path(__file__).with_name("mcp_server.py"))


def server_env() -> dict[str, str]:
    """The test server imports nothing of ours, but the checkout's copy must be the one found."""
    return {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "TIR_TEST_VAR": "hello"}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@asyncio_test
async def test_stdio_server_tools_listed_called_and_closed(harness: ToolHarness) -> None:
    server = MCPStdio(sys.executable, [SERVER], env=server_env())
    agent, model = harness.agent(
        [
            Calls(
                "",
                [
                    ("add", {"a": 2, "b": 3}),
                    ("convert", {"value": 100, "unit": "c"}),
                    ("fail", {"message": "no luck"}),
                    ("environment", {"name": "TIR_TEST_VAR"}),
                    ("add", {"a": "two", "b": 3}),
                    ("convert", {"value": 1, "unit": "k"}),
                    ("pid", {}),
                    ("nap", {"seconds": 60}),
                ],
            ),
            Step("\\boxed{5}"),
        ],
        [server],
        tool_timeout=1,
    )
    try:
        result = await harness.solve(agent)
    finally:
        await agent.aclose()
    tools = {t["function"]["name"]: t["function"] for t in model.requests[0]["tools"]}
    assert set(tools) == {
        "python_exec",
        "add",
        "convert",
        "fail",
        "nap",
        "pid",
        "die",
        "environment",
    }
    assert tools["convert"]["parameters"]["properties"]["unit"]["enum"] == ["c", "f"]
    assert tools["convert"]["parameters"]["required"] == ["value", "unit"]
    assert tools["add"]["description"] == "Add two integers."
    assert [(c.output, c.failed) for c in result.tool_calls[:6]] == [
        ("5", False),
        ("212 f", False),
        ("Error executing tool fail: no luck", True),
        ("hello", False),
        ("Error: invalid arguments for add: a: 'two' is not of type 'integer'.", True),
        ("Error: invalid arguments for convert: unit: 'k' is not one of ['c', 'f'].", True),
    ]
    assert result.tool_calls[7].output == "Error: nap timed out after 1 seconds."
    pid = int(result.tool_calls[6].output)
    assert not alive(pid)  # aclose() stopped the server
    assert result.answer == "5"


def test_sync_solve_and_close(sandbox: object) -> None:
    """solve() connects on the agent's private loop; close() stops the server there."""
    harness = ToolHarness(streamed=False, sandbox=sandbox)
    server = MCPStdio(sys.executable, [SERVER], env=server_env())
    agent, _ = harness.agent(
        [Calls("", [("pid", {})]), Step("a"), Calls("", [("pid", {})]), Step("b")], [server]
    )
    first = agent.solve("p")
    second = agent.solve("p")
    pid = int(first.tool_calls[0].output)
    assert second.tool_calls[0].output == str(pid)  # one server for the agent's solves
    assert alive(pid)
    agent.close()
    assert not alive(pid)


@asyncio_test
async def test_a_server_that_does_not_start_is_an_error(harness: ToolHarness) -> None:
    server = MCPStdio(sys.executable, ["-c", "import sys; sys.exit(3)"], timeout=20)
    agent, model = harness.agent([Step("x")], [server])
    with pytest.raises(ToolServerError, match="Could not connect to MCP server"):
        await harness.solve(agent)
    assert model.requests == []  # nothing was asked of the model
    await agent.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    """The test server on Streamable HTTP, on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, SERVER, "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the MCP test server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


@asyncio_test
async def test_http_server(harness: ToolHarness, http_server: str) -> None:
    server = MCPHttp(http_server, headers={"X-Test": "1"}, prefix="remote_")
    agent, model = harness.agent(
        [Calls("", [("remote_add", {"a": 40, "b": 2}), ("add", {"a": 1, "b": 1})]), Step("42")],
        [server],
    )
    try:
        result = await harness.solve(agent)
    finally:
        await agent.aclose()
    names = [t["function"]["name"] for t in model.requests[0]["tools"]]
    assert "remote_add" in names and "add" not in names
    assert [(c.output, c.failed) for c in result.tool_calls] == [
        ("42", False),
        (
            "Error: unknown tool 'add'. The tools are: python_exec, remote_add, remote_convert, "
            "remote_fail, remote_nap, remote_pid, remote_die, remote_environment.",
            True,
        ),
    ]


@asyncio_test
async def test_a_crashed_server_fails_its_calls_and_the_next_solve_reconnects(
    harness: ToolHarness,
) -> None:
    server = MCPStdio(sys.executable, [SERVER], env=server_env())
    agent, _ = harness.agent(
        [
            Calls("", [("pid", {})]),
            Calls("", [("die", {})]),
            Calls("", [("add", {"a": 1, "b": 2})]),
            Step("lost"),
            Calls("", [("pid", {})]),
            Step("back"),
        ],
        [server],
    )
    try:
        first = await harness.solve(agent)
        second = await harness.solve(agent)
    finally:
        await agent.aclose()
    assert [(c.name, c.failed) for c in first.tool_calls] == [
        ("pid", False),
        ("die", True),
        ("add", True),
    ]
    assert first.tool_calls[2].output == "Error: add failed: MCPError: Connection closed"
    assert first.status == "finished"
    old, new = int(first.tool_calls[0].output), int(second.tool_calls[0].output)
    assert new != old and not alive(old)
    assert not alive(new)  # closed with the agent
