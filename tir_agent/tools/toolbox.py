"""The user's tools of one agent, by name: their definitions for a request, and one dispatch path
(a name and raw JSON arguments in, the tool message's text and a failure flag out) that every
API's format uses.

Before a tool runs, its arguments are parsed and checked against its schema with ``jsonschema``;
invalid JSON, a missing or mistyped argument, a value outside an enum, or an unknown tool name is
answered with a message naming the problem, and the tool is not called.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tir_agent._log import get_logger
from tir_agent.errors import ConfigError
from tir_agent.tools.base import Tool, ToolOutcome
from tir_agent.tools.function import FunctionTool
from tir_agent.tools.mcp import MCPServer
from tir_agent.tools.schema import drop_strict_nulls

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

log = get_logger(__name__)

RESERVED = "python_exec"
"""The code tool's name; no user tool may take it."""

ToolSpec = Callable[..., Any] | FunctionTool | MCPServer
"""What ``Agent(tools=[...])`` takes: a function (sync or async), a :func:`~tir_agent.tools.tool`
wrapper, or an MCP server."""


class Toolbox:
    """The tools given to an agent: functions (checked now) and MCP servers (listed on first use,
    once per event loop)."""

    def __init__(self, specs: Sequence[ToolSpec], *, timeout: float | None = 60.0) -> None:
        self.timeout = timeout
        self.functions: list[FunctionTool] = []
        self.servers: list[MCPServer] = []
        for spec in specs:
            if isinstance(spec, MCPServer):
                self.servers.append(spec)
            elif isinstance(spec, FunctionTool):
                self.functions.append(spec)
            elif callable(spec):
                self.functions.append(FunctionTool(spec))
            else:
                raise ConfigError(
                    f"tools=[...] takes functions, tool(...) wrappers and MCP servers "
                    f"(MCPStdio, MCPHttp), not {type(spec).__name__}: {spec!r:.80}"
                )
        _check_names([f.name for f in self.functions], "")
        self._indexes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ToolIndex] = (
            weakref.WeakKeyDictionary()
        )
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def __bool__(self) -> bool:
        return bool(self.functions or self.servers)

    async def open(self) -> ToolIndex:
        """Every tool by name, MCP servers connected (on this event loop, once)."""
        loop = asyncio.get_running_loop()
        index = self._indexes.get(loop)
        if index is not None and not index.stale():
            return index
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            index = self._indexes.get(loop)
            if index is None or index.stale():
                tools: list[Tool] = list(self.functions)
                listed = await asyncio.gather(*(s.list_tools() for s in self.servers))
                for server_tools in listed:
                    tools += server_tools
                _check_names([t.name for t in tools], " (give an MCP server a prefix=...)")
                index = self._indexes[loop] = ToolIndex(tools, self.timeout)
        return index

    async def aclose(self) -> None:
        """Close the MCP connections of the running loop."""
        self._indexes.pop(asyncio.get_running_loop(), None)
        await asyncio.gather(*(s.aclose() for s in self.servers))


def _check_names(names: list[str], how: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name == RESERVED:
            raise ConfigError(f"A tool may not be named {RESERVED!r}: that is the code tool{how}")
        if name in seen:
            raise ConfigError(f"Two tools are named {name!r}; rename one (tool(f, name=...)){how}")
        seen.add(name)


class ToolIndex:
    """The tools available on one event loop, and the one dispatch path to them."""

    def __init__(self, tools: Sequence[Tool], timeout: float | None) -> None:
        self.tools = {t.name: t for t in tools}
        self.timeout = timeout
        self._definitions = [t.definition() for t in tools]
        self._validators: dict[str, Draft202012Validator] = {}

    def stale(self) -> bool:
        """An MCP connection behind one of the tools was closed."""
        return any(
            getattr(getattr(t, "_connection", None), "closed", False) for t in self.tools.values()
        )

    def definitions(self) -> list[dict[str, Any]]:
        """Chat-completions tool definitions (``{"type": "function", "function": {...}}``)."""
        return self._definitions

    def plain_definitions(self) -> list[dict[str, Any]]:
        """The definitions without strict mode (for prompts that show them to a model)."""
        return [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in self.tools.values()
        ]

    def check(self, name: str, arguments: str) -> tuple[Tool, dict[str, Any]] | ToolOutcome:
        """The tool and its parsed arguments, or the failure the model is told about."""
        tool = self.tools.get(name)
        if tool is None:
            names = ", ".join([RESERVED, *self.tools])
            return ToolOutcome(f"Error: unknown tool {name!r}. The tools are: {names}.", True)
        try:
            # strict=False: raw control characters inside strings are taken as they are
            value = json.loads(arguments or "{}", strict=False)
        except json.JSONDecodeError as e:
            what = e.msg.removesuffix(" at")
            return ToolOutcome(
                f"Error: the arguments of {name} are not valid JSON ({what} at position "
                f"{e.pos}). Send a JSON object of its parameters.",
                True,
            )
        if not isinstance(value, dict):
            return ToolOutcome(
                f"Error: the arguments of {name} must be a JSON object of its parameters, not "
                f"{type(value).__name__} {arguments[:60]}",
                True,
            )
        if getattr(tool, "strict", False):  # a null for an optional parameter: not given
            value = drop_strict_nulls(value, tool.parameters)
        try:
            errors = sorted(self._validator(tool).iter_errors(value), key=lambda e: e.path)
        except Exception as e:  # a schema jsonschema cannot use (an MCP server's): it checks
            log.warning("tool.schema_unusable", tool=name, error=repr(e))
            errors = []
        problems = [
            f"{'/'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}" for e in errors
        ]
        if problems:
            return ToolOutcome(
                f"Error: invalid arguments for {name}: {'; '.join(problems)}.", True, value
            )
        return tool, value

    async def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
        """Call ``tool`` with checked ``arguments`` within its timeout."""
        timeout = tool.timeout if tool.timeout is not None else self.timeout
        try:
            outcome = await asyncio.wait_for(tool.invoke(arguments), timeout)
        except TimeoutError:
            outcome = ToolOutcome(f"Error: {tool.name} timed out after {timeout:g} seconds.", True)
        except Exception as e:  # a tool's own failure is the model's to read, never the solve's
            outcome = ToolOutcome(f"Error: {tool.name} failed: {type(e).__name__}: {e}", True)
        return ToolOutcome(outcome.output, outcome.failed, arguments)

    async def dispatch(self, name: str, arguments: str) -> ToolOutcome:
        """Check and run one call: ``name`` and its raw JSON ``arguments`` in, the tool
        message's text and whether the call failed out (never raises for the model's mistakes
        or the tool's failures)."""
        checked = self.check(name, arguments)
        if isinstance(checked, ToolOutcome):
            return checked
        return await self.run(*checked)

    def _validator(self, tool: Tool) -> Draft202012Validator:
        validator = self._validators.get(tool.name)
        if validator is None:
            from jsonschema import Draft202012Validator  # ~40 ms to import: only when needed

            # The plain schema (optional parameters optional), also for a strict definition:
            # an endpoint that does not enforce strict mode may leave them out.
            validator = self._validators[tool.name] = Draft202012Validator(tool.parameters)
        return validator
