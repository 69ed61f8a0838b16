"""The README's Python examples run, so they never rot.

The quickstart talks to OpenAI in the README; here the same code runs unchanged against a scripted
OpenAI-compatible server on a loopback port (``OPENAI_BASE_URL``; there is no API key on this
machine), which answers with a real ``python_exec`` call that the real sandbox runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.agent.scripted import Step
from tests.batch.server import HTTPModel, ReactiveServer

README = Path(__file__).resolve().parents[1] / "README.md"
SQUARES = "sum(i**2 for i in range(1, 11))"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


class SumOfSquares(ReactiveServer):
    """Computes the sum of squares with python_exec, then boxes what the sandbox printed."""

    def pick(self, body: dict[str, Any]) -> Step:
        outputs = [m.get("content", "") for m in body["messages"] if m["role"] == "tool"]
        if not outputs:
            return Step("I'll compute it.", [f"print({SQUARES})"])
        return Step(f"The sum of squares is \\boxed{{{outputs[-1].strip()}}}.")


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_readme_has_the_examples_this_test_runs() -> None:
    blocks = python_blocks()
    assert len(blocks) == 4
    assert 'Agent(model="gpt-4o-mini")' in blocks[0]
    assert "LocalSandbox" in blocks[2]
    assert "RemoteSandbox" in blocks[3]


@pytest.mark.slow
def test_quickstart_runs_unchanged_against_an_openai_compatible_server() -> None:
    quickstart, local = python_blocks()[:2]
    with HTTPModel(SumOfSquares(direct=False)) as model:
        env = {**os.environ, "OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "sk-test"}
        done = _run(quickstart, env)
        requests = model.scripted.requests
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "385"
    assert "385" in done.stdout.split("\n", 1)[1]  # the generation shows the real output
    assert len(requests) == 2
    assert requests[0]["model"] == "gpt-4o-mini"
    assert requests[0]["tools"][0]["function"]["name"] == "python_exec"
    tool_reply = [m for m in requests[1]["messages"] if m["role"] == "tool"]
    assert tool_reply and tool_reply[0]["content"].startswith("385")
    # The second example only builds an agent for a local server: it must construct cleanly.
    built = _run(quickstart.split("agent = ")[0] + local, {**os.environ, "OPENAI_API_KEY": ""})
    assert built.returncode == 0, built.stderr


@pytest.mark.slow
def test_sandbox_example_prints_42_and_a_short_traceback() -> None:
    done = _run(python_blocks()[2], dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("42\n\n")
    assert (
        "Traceback (most recent call last):\n    1 / 0\nZeroDivisionError: division by zero\n"
        in (done.stdout)
    )


def test_remote_sandbox_example_builds_an_agent_on_remote_servers() -> None:
    """Servers are contacted on first use only, so the example constructs without them (the
    remote sandbox itself runs for real in tests/remote/)."""
    code = python_blocks()[3] + "\nprint(type(agent._sandbox).__name__, agent._sandbox.urls)\n"
    built = _run(code, {**os.environ, "OPENAI_API_KEY": "sk-test"})
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith("RemoteSandbox ['http://10.0.0.5:6000', 'http://10.0.0.6:6000']")
