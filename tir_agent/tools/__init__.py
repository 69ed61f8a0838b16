"""Tools the model can call beside ``python_exec``: your own Python functions and the tools of
MCP servers.

``Agent(model=..., tools=[get_temperature, tool(search, name="web_search"),
MCPStdio("python", ["server.py"])])``; see docs/agent.md, "Your own tools".
"""

from __future__ import annotations

from tir_agent.tools.base import Tool, ToolOutcome
from tir_agent.tools.function import FunctionTool, tool
from tir_agent.tools.mcp import MCPHttp, MCPServer, MCPStdio, MCPTool
from tir_agent.tools.toolbox import Toolbox, ToolIndex, ToolSpec

__all__ = [
    "FunctionTool",
    "MCPHttp",
    "MCPServer",
    "MCPStdio",
    "MCPTool",
    "Tool",
    "ToolIndex",
    "ToolOutcome",
    "ToolSpec",
    "Toolbox",
    "tool",
]
