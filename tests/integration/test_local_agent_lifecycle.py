"""``Agent(model="local")`` from plain scripts: the embedded server starts on the first solve and
is gone after ``close()``, after the script exits without closing, and after ``kill -9``.

Each test runs a real script in a child interpreter against the real llama.cpp server
(Qwen2.5-Coder-0.5B, the default) and checks the server's process from outside.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.procs import alive

# Real solves with the 0.5B default take 10-80 s each on 2 busy cores: a wider safety net than
# the suite's 120 s (a bound against hangs, not a speed target).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]

# Short solves: the lifecycle is under test, not the model (no code runs with a budget of 0).
_QUICK = "max_tokens=16, max_code_executions=0"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def _run(body: str) -> list[dict[str, object]]:
    """Run a script to completion; the JSON lines it printed."""
    done = subprocess.run(
        _script(body), cwd=ROOT, capture_output=True, text=True, timeout=400, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_solve_from_a_plain_script_then_close_stops_the_server() -> None:
    lines = _run(
        """
        import json, os
        from tir_agent import Agent
        agent = Agent(model="local")
        assert agent.local_model is not None and not agent.local_model.running
        result = agent.solve("Calculate the sum of squares from 1 to 10.")
        pid = agent.local_model.pid
        print(json.dumps({"status": result.status, "executions": len(result.executions),
                          "pid": pid, "url": agent.client.base_url}), flush=True)
        agent.close()
        print(json.dumps({"running": agent.local_model.running,
                          "exists": os.path.exists(f"/proc/{pid}")}), flush=True)
        """
    )
    solved, closed = lines
    assert solved["status"] in ("finished", "budget_spent")
    assert isinstance(solved["executions"], int) and solved["executions"] >= 1  # code ran
    assert str(solved["url"]).startswith("http://127.0.0.1:")
    assert not str(solved["url"]).startswith("http://127.0.0.1:0/")
    assert closed == {"running": False, "exists": False}  # stopped and reaped by close()


def test_server_is_gone_after_the_script_exits_without_close() -> None:
    # Solves on two asyncio.run() loops, then on the private loop: the server is started from a
    # worker thread that the first asyncio.run() ends, and must survive it (one server for all).
    lines = _run(
        f"""
        import asyncio, json
        from tir_agent import Agent
        agent = Agent(model="local", {_QUICK})
        pids = []
        for solve in (lambda: asyncio.run(agent.asolve("1+1?")),
                      lambda: asyncio.run(agent.asolve("2+2?")), lambda: agent.solve("3+3?")):
            result = solve()
            assert result.turns and result.status != "error", result.error
            pids.append(agent.local_model.pid)
        print(json.dumps({{"pids": pids}}), flush=True)
        """
    )
    pids = lines[0]["pids"]
    assert isinstance(pids, list) and len(set(pids)) == 1 and pids[0] is not None
    assert _gone_within(pids[0], 10), "the server outlived the script"


def test_server_is_gone_after_the_script_is_killed() -> None:
    host = subprocess.Popen(
        _script(
            f"""
            import time
            from tir_agent import Agent
            agent = Agent(model="local", {_QUICK})
            agent.solve("1+1?")
            print(agent.local_model.pid, flush=True)
            time.sleep(60)
            """
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        pid = int(host.stdout.readline())
        assert alive(pid)
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
    assert _gone_within(pid, 10), "the server outlived its killed host (PR_SET_PDEATHSIG)"
