"""docs/agent.md, "Your own tools": the example runs unchanged, and the definition it shows is the
one sent.

The example talks to OpenAI; here it runs in a subprocess against the scripted endpoint on a
loopback port (``OPENAI_BASE_URL``), in a directory holding the real MCP test server as
``server.py``, which it starts with ``python server.py`` as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.agent.scripted import Step
from tests.batch.server import HTTPModel
from tests.tools.scripted import Calls, ToolsServer, code
from tir_agent.formats.tags import PRESETS
from tir_agent.tools import FunctionTool

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "agent.md").read_text()
SECTION = DOC.split("## Your own tools", 1)[1].split("\n## ", 1)[0]


def example() -> str:
    return re.findall(r"```python\n(.*?)```", SECTION, flags=re.S)[0]


def test_the_definition_shown_is_the_one_sent() -> None:
    namespace: dict[str, Any] = {}
    exec(example().split("agent = Agent(")[0], namespace)
    shown = json.loads(re.findall(r"```json\n(.*?)```", SECTION, flags=re.S)[0])
    assert FunctionTool(namespace["get_temperature"]).definition() == shown
    search = namespace["search_notes"]
    assert (search.name, search.timeout) == ("search", 20)


@pytest.mark.slow
def test_the_example_runs_unchanged(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).with_name("mcp_server.py"), tmp_path / "server.py")
    script = [
        Calls(
            "",
            [
                ("get_temperature", {"city": "Paris"}),
                ("search", {"query": {"text": "paris", "limit": 1}}),
                ("add", {"a": 20, "b": 1}),
                code("import math\nprint(math.sqrt(400))"),
            ],
        ),
        Step("21 > 20.0, so yes: \\boxed{yes}"),
    ]
    server = ToolsServer(script, tags=PRESETS["openmath"])
    with HTTPModel(server) as model:  # type: ignore[arg-type]
        env = {
            **os.environ,
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": "sk-test",
            "PYTHONPATH": str(ROOT),
        }
        done = subprocess.run(
            [sys.executable, "-c", example()],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "get_temperature {'city': 'Paris'} 21 False",
        "search {'query': {'text': 'paris', 'limit': 1}} [\"note 1\"] False",
        "add {'a': 20, 'b': 1} 21 False",
    ]
    first = server.requests[0]
    assert [t["function"]["name"] for t in first["tools"]] == [
        "python_exec",
        "get_temperature",
        "search",
        "add",
        "convert",
        "fail",
        "nap",
        "pid",
        "die",
        "environment",
    ]
    tool_outputs = [m["content"] for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_outputs[-1] == "20.0\n"
