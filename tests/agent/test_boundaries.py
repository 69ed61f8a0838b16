"""The SDK boundary: only tir_agent/client.py imports openai; the loop and formats never do."""

from __future__ import annotations

import ast
from pathlib import Path

import tir_agent

PACKAGE = Path(tir_agent.__file__).parent
LOOP_MODULES = [
    "agent.py",
    "turn.py",
    "_sync.py",
    *(f"formats/{p.name}" for p in (PACKAGE / "formats").glob("*.py")),
]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_client_imports_openai() -> None:
    assert "openai" in imported(PACKAGE / "client.py")
    for name in LOOP_MODULES:
        assert "openai" not in imported(PACKAGE / name), name


def test_tool_schema_is_shipped_and_strict() -> None:
    from tir_agent.formats.native import tool_definition

    function = tool_definition()["function"]
    assert function["name"] == "python_exec"
    assert function["parameters"] == {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The Python code to run."}},
        "required": ["code"],
        "additionalProperties": False,
    }
