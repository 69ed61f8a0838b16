"""A small MCP server written with the official SDK, for the tests: stdio by default,
``--http PORT`` for Streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("tir-agent-test", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def convert(value: float, unit: Literal["c", "f"]) -> str:
    """Convert a temperature to the other unit.

    Args:
        value: The temperature.
        unit: The unit of ``value``.
    """
    if unit == "c":
        return f"{value * 9 / 5 + 32:g} f"
    return f"{(value - 32) * 5 / 9:g} c"


@server.tool()
def fail(message: str) -> str:
    """Always fails with ``message``."""
    raise ToolError(message)


@server.tool()
async def nap(seconds: float) -> str:
    """Sleep, then say so."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def pid() -> str:
    """The server's process id."""
    return str(os.getpid())


@server.tool()
def die() -> str:
    """Exits the server process at once (a crash)."""
    os._exit(3)


@server.tool()
def environment(name: str) -> str:
    """The value of an environment variable of the server process."""
    return os.environ.get(name, "<unset>")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
