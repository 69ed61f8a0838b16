"""Model Context Protocol servers as tools, through the official ``mcp`` SDK
(``pip install 'tir-agent[mcp]'``).

:class:`MCPStdio` starts a server as a subprocess and talks to it over its stdin/stdout;
:class:`MCPHttp` connects to one over Streamable HTTP. The agent connects on its first solve (on
each event loop it solves on), lists the server's tools with their schemas, calls them, and closes
the connection (stopping a stdio server) with ``agent.close()`` / ``aclose()``.

The SDK's connection lives in anyio task groups, which must be entered and left by the same task;
so each connection runs in a task of its own that opens it, serves calls from any task of that
loop, and closes it when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import weakref
from typing import TYPE_CHECKING, Any, TextIO

from tir_agent._log import get_logger
from tir_agent.errors import ConfigError, ToolServerError
from tir_agent.tools.base import ToolOutcome

if TYPE_CHECKING:
    from mcp import Client

log = get_logger(__name__)


def _sdk() -> Any:
    try:
        import mcp
    except ImportError as e:
        raise ConfigError(
            "MCP servers need the mcp SDK: pip install 'tir-agent[mcp]' (or pip install mcp)"
        ) from e
    return mcp


class MCPServer:
    """An MCP server whose tools the model can call (base of :class:`MCPStdio` and
    :class:`MCPHttp`).

    ``timeout``: seconds to connect and list the tools. ``prefix``: prepended to every tool's
    name (for two servers whose tools share names).
    """

    def __init__(self, *, timeout: float = 60.0, prefix: str = "") -> None:
        self.timeout = timeout
        self.prefix = prefix
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self) -> Client:
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError

    async def list_tools(self) -> list[MCPTool]:
        """Connect (once per event loop) and list the server's tools."""
        loop = asyncio.get_running_loop()
        connection = self._connections.get(loop)
        if connection is None or connection.closed:
            connection = self._connections[loop] = _Connection(self)
        return await connection.ready()

    async def aclose(self) -> None:
        """Close the connection of the running loop (a stdio server is stopped)."""
        connection = self._connections.pop(asyncio.get_running_loop(), None)
        if connection is not None:
            await connection.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()})"


class MCPStdio(MCPServer):
    """An MCP server run as a subprocess (``command`` with ``args``), spoken to over stdio.

    ``env``: extra environment variables of the server (over a minimal inherited set: ``PATH``,
    ``HOME`` ...); ``cwd``: its working directory; ``stderr``: where its log goes (default:
    this process's standard error).
    """

    def __init__(
        self,
        command: str,
        args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        *,
        cwd: str | None = None,
        stderr: TextIO | None = None,
        timeout: float = 60.0,
        prefix: str = "",
    ) -> None:
        super().__init__(timeout=timeout, prefix=prefix)
        self.command = command
        self.args = list(args)
        self.env = env
        self.cwd = cwd
        self.stderr = stderr

    def _client(self) -> Client:
        mcp = _sdk()
        params = mcp.StdioServerParameters(
            command=self.command, args=self.args, env=self.env, cwd=self.cwd
        )
        transport = mcp.client.stdio.stdio_client(params, errlog=self.stderr or sys.stderr)
        client: Client = mcp.Client(transport)
        return client

    def _describe(self) -> str:
        return " ".join([self.command, *self.args])


class MCPHttp(MCPServer):
    """An MCP server at ``url``, spoken to over Streamable HTTP (``headers``: sent with every
    request, e.g. ``{"Authorization": "Bearer ..."}``)."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 60.0,
        prefix: str = "",
    ) -> None:
        super().__init__(timeout=timeout, prefix=prefix)
        self.url = url
        self.headers = dict(headers or {})

    def _client(self) -> Client:
        mcp = _sdk()
        from mcp.client.streamable_http import streamable_http_client

        http = None
        if self.headers:
            import httpx2

            http = httpx2.AsyncClient(headers=self.headers, timeout=httpx2.Timeout(30, read=300))
        client: Client = mcp.Client(streamable_http_client(self.url, http_client=http))
        return client

    def _describe(self) -> str:
        return self.url


class MCPTool:
    """One tool of an MCP server (its schema as the server lists it)."""

    def __init__(self, connection: _Connection, spec: Any, prefix: str) -> None:
        self._connection = connection
        self.remote_name: str = spec.name
        self._name: str = prefix + spec.name
        self._description: str = spec.description or ""
        self._parameters: dict[str, Any] = dict(spec.input_schema)

    @property
    def name(self) -> str:
        """The name the model calls (the server's, after the server's ``prefix``)."""
        return self._name

    @property
    def description(self) -> str:
        """The server's description of the tool."""
        return self._description

    @property
    def parameters(self) -> dict[str, Any]:
        """The tool's input schema, as the server lists it."""
        return self._parameters

    @property
    def timeout(self) -> float | None:
        """MCP tools take the agent's ``tool_timeout``."""
        return None

    def definition(self) -> dict[str, Any]:
        """The chat-completions definition (not strict: a server's schema may not allow it)."""
        function = {
            "name": self._name,
            "description": self._description,
            "parameters": self._parameters,
        }
        return {"type": "function", "function": function}

    async def invoke(self, arguments: dict[str, Any]) -> ToolOutcome:
        """Call the tool on the server; an error it reports (or a lost server) is the outcome."""
        return await self._connection.call(self.remote_name, arguments)

    def __repr__(self) -> str:
        return f"MCPTool({self._name!r})"


class _Connection:
    """One live connection to a server, owned by its own task on one event loop."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self.client: Any = None
        self.closed = False
        self._tools: list[MCPTool] | None = None
        self._stop = asyncio.Event()
        self._opened = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async with self.server._client() as client:
                self.client = client
                tools: list[MCPTool] = []
                cursor = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    tools += [MCPTool(self, t, self.server.prefix) for t in page.tools]
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                self._tools = tools
                self._opened.set_result(tools)
                await self._stop.wait()
        except BaseException as e:  # the SDK raises exception groups from its task groups
            if not self._opened.done():
                self._opened.set_exception(e)
            elif not isinstance(e, asyncio.CancelledError):
                log.warning("mcp.lost", server=self.server._describe(), error=repr(e))
            if isinstance(e, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
        finally:
            self.closed = True
            self.client = None

    async def ready(self) -> list[MCPTool]:
        """The server's tools, once connected; raises :class:`ToolServerError` if it fails."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._opened), self.server.timeout)
        except TimeoutError:
            await self.close()
            raise ToolServerError(
                f"MCP server {self.server._describe()} did not answer within "
                f"{self.server.timeout} s (is it an MCP server? raise timeout= if it starts slowly)"
            ) from None
        except Exception as e:
            raise ToolServerError(
                f"Could not connect to MCP server {self.server._describe()}: {_reason(e)}"
            ) from e

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Call ``name``; protocol errors and a lost server are a failed outcome."""
        client = self.client
        if client is None:
            return ToolOutcome(
                f"Error: the MCP server of {name} is not connected (it exited or was closed)",
                True,
            )
        try:
            result = await client.call_tool(name, arguments)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            from mcp_types import CONNECTION_CLOSED

            if getattr(getattr(e, "error", None), "code", None) == CONNECTION_CLOSED:
                # The server is gone (it exited or crashed): let the connection's task clean up,
                # and the next solve connect anew.
                log.warning("mcp.lost", server=self.server._describe(), tool=name)
                self.closed = True
                self._stop.set()
            return ToolOutcome(f"Error: {name} failed: {_reason(e)}", True)
        return ToolOutcome(_content_text(result), bool(result.is_error))

    async def close(self) -> None:
        """Close the connection and wait for its task (a stdio server is stopped)."""
        self._stop.set()
        if not self._opened.done():
            self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        self._opened.cancel()  # nobody waits any more; silences "never retrieved"


def _reason(e: BaseException) -> str:
    """The innermost message of an exception (group)."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    error = getattr(e, "error", None)
    message = getattr(error, "message", None)
    return f"{type(e).__name__}: {message or e}"


def _content_text(result: Any) -> str:
    """A tool result's content blocks as text (structured content when there is no text)."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource" and hasattr(block.resource, "text"):
            parts.append(block.resource.text)
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{kind} content: {getattr(block, 'mime_type', '')}]")
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(parts)
