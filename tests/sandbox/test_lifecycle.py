"""Pool and lifecycle: queueing at max_sessions, idle eviction, nothing survives close or the host."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.sandbox.conftest import marker, processes_with, template_pid
from tir_agent.errors import SandboxClosedError, SandboxError
from tir_agent.sandbox.local import LocalSandbox

pytestmark = pytest.mark.asyncio


def wait_until_gone(mark: str, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = processes_with(mark)
        if not left:
            return []
        time.sleep(0.05)
    return processes_with(mark)


@pytest.mark.slow
async def test_max_sessions_queues_instead_of_failing() -> None:
    async with LocalSandbox(preload=(), max_sessions=2) as sandbox:
        active = 0
        peak = 0

        async def one(i: int) -> str:
            nonlocal active, peak
            async with sandbox.session() as s:
                active += 1
                peak = max(peak, active)
                r = await s.run(f"import time\ntime.sleep(0.1)\n{i} * 2")
                active -= 1
                return r.stdout

        results = await asyncio.gather(*(one(i) for i in range(6)))
        assert results == [f"{i * 2}\n" for i in range(6)]
        assert peak == 2


@pytest.mark.slow
async def test_hundreds_of_concurrent_sessions() -> None:
    async with LocalSandbox(preload=(), protect_state=False) as sandbox:

        async def one(i: int) -> str:
            async with sandbox.session() as s:
                await s.run(f"v = {i}")
                return (await s.run("v * 2")).stdout

        results = await asyncio.gather(*(one(i) for i in range(200)))
        assert results == [f"{i * 2}\n" for i in range(200)]


@pytest.mark.slow
async def test_idle_sessions_are_evicted() -> None:
    mark = marker()
    async with LocalSandbox(preload=(), idle_timeout=0.3, env={"MARK": mark}) as sandbox:
        s = await sandbox.open_session()
        await s.run("x = 1")
        count = len(processes_with(mark))
        await asyncio.sleep(1.0)
        assert s.closed
        with pytest.raises(SandboxClosedError, match="idle"):
            await s.run("x")
        assert len(processes_with(mark)) < count  # the session's processes are gone
        assert (await sandbox.run("1 + 1")).stdout == "2\n"


async def test_closing_a_session_kills_its_processes_and_files() -> None:
    mark = marker()
    async with LocalSandbox(preload=(), env={"MARK": mark}) as sandbox:
        await sandbox.run("1")  # the template has its spare sessions ready afterwards
        await asyncio.sleep(0.5)
        baseline = len(processes_with(mark))
        async with sandbox.session() as s:
            await s.run("import subprocess, os\nos.makedirs('d/e')\nopen('d/e/f', 'w').write('x')")
            await s.run(
                "import threading, time\nthreading.Thread(target=time.sleep, args=(100,)).start()"
            )
            assert len(processes_with(mark)) > baseline
        deadline = time.monotonic() + 5
        while len(processes_with(mark)) > baseline and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(processes_with(mark)) == baseline
        async with sandbox.session() as s2:  # same slot, fresh directory
            assert (await s2.run("import os\nos.listdir('.')")).stdout == "[]\n"


async def test_close_leaves_no_process_behind() -> None:
    mark = marker()
    sandbox = LocalSandbox(preload=(), env={"MARK": mark})
    s = await sandbox.open_session()
    await s.run("import subprocess\np = subprocess.Popen(['sleep', '1000'])\nx = 1")
    await sandbox.open_session()
    assert processes_with(mark)
    await sandbox.close()
    assert wait_until_gone(mark) == []
    with pytest.raises(SandboxClosedError):
        await sandbox.run("1")
    with pytest.raises(SandboxClosedError):
        await s.run("x")


HOST = """
import asyncio, sys
from tir_agent.sandbox import isolation
from tir_agent.sandbox.local import LocalSandbox

async def main():
    sandbox = LocalSandbox(preload=(), env={"MARK": sys.argv[1]})
    if sys.argv[2] == "none":  # as on a host without bubblewrap: no namespaces at all
        sandbox._protections = isolation.Protections(
            "none", False, False, False, False, False, workspace_root=sys.argv[3]
        )
    sessions = [await sandbox.open_session() for _ in range(3)]
    await sessions[0].run("import subprocess\\np = subprocess.Popen(['sleep', '1000'])")
    await sessions[1].run("import os\\nif os.fork() == 0:\\n    os.setsid()\\n    import time\\n    time.sleep(1000)")
    print("ready", flush=True)
    task = asyncio.create_task(sessions[2].run("while True: pass", timeout=100))
    await asyncio.sleep(1000)

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["detected", "none"])
async def test_host_sigkill_leaves_no_process_behind(mechanism: str, tmp_path: Path) -> None:
    mark = marker()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    host = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOST), mark, mechanism, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert host.stdout is not None
    assert host.stdout.readline() == b"ready\n"
    time.sleep(0.2)
    assert len(processes_with(mark)) >= 8
    host.send_signal(signal.SIGKILL)
    host.wait()
    assert wait_until_gone(mark) == []


@pytest.mark.parametrize("protect", [False, True])
async def test_a_dead_template_is_restarted_and_its_sessions_report_the_loss(
    protect: bool,
) -> None:
    mark = marker()
    async with LocalSandbox(preload=(), protect_state=protect, env={"MARK": mark}) as sandbox:
        old = await sandbox.open_session()
        await old.run("x = 1")
        os.kill(template_pid(mark), signal.SIGKILL)
        seen_down = []
        deadline = time.monotonic() + 60
        while sandbox.restarts == 0 and time.monotonic() < deadline:
            if not sandbox.healthy:
                seen_down.append(sandbox.problem)
            await asyncio.sleep(0.002)
        assert sandbox.restarts == 1 and sandbox.healthy and sandbox.problem is None
        assert seen_down and "the sandbox template exited with code" in str(seen_down[0])
        with pytest.raises(SandboxError, match="was lost: the sandbox template exited"):
            await old.run("x")
        assert old.closed
        async with sandbox.session() as s:
            assert (await s.run("x = 2\nx")).stdout == "2\n"
        # a session asked for while the template restarts waits for it
        os.kill(template_pid(mark), signal.SIGKILL)
        await asyncio.sleep(0.05)
        async with sandbox.session() as s:
            assert (await s.run("3")).stdout == "3\n"
        assert sandbox.restarts == 2
    assert wait_until_gone(mark) == []
    assert sandbox.problem == "the sandbox was closed"


async def test_lazy_start_without_async_with() -> None:
    sandbox = LocalSandbox(preload=())
    try:
        async with sandbox.session() as s:
            assert (await s.run("2 + 3")).stdout == "5\n"
    finally:
        await sandbox.close()


async def test_overrides_are_validated() -> None:
    from tir_agent.errors import ConfigError

    with pytest.raises(ConfigError):
        LocalSandbox(timeout=-1)
    with pytest.raises(ConfigError):
        LocalSandbox(no_such_option=1)
    assert LocalSandbox(timeout=2.5).config.timeout == 2.5


@pytest.mark.parametrize("protect", [False, True])
async def test_a_cancelled_run_does_not_confuse_the_next_one(protect: bool) -> None:
    async with LocalSandbox(preload=(), protect_state=protect) as sandbox, sandbox.session() as s:
        task = asyncio.create_task(s.run("import time\ntime.sleep(0.3)\nprint('late')"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        r = await s.run("print('next')")
        assert r.stdout == "next\n"


@pytest.mark.parametrize("protect", [False, True])
async def test_closing_a_session_cancels_its_running_cell_at_once(protect: bool) -> None:
    """close() does not wait for the cell's timeout: the cell and what it started are killed
    at once, its run raises SandboxClosedError, and the slot serves the next session."""
    mark = marker()
    async with LocalSandbox(preload=(), protect_state=protect, env={"MARK": mark}) as sandbox:
        await sandbox.run("1")  # the template has its spare sessions ready afterwards
        await asyncio.sleep(0.5)
        baseline = len(processes_with(mark))
        s = await sandbox.open_session()
        if protect:  # (a session's first cell runs in its holder: this one runs in a runner)
            await s.run("x = 1")
        code = (
            "import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {mark!r}])\n"
            "time.sleep(60)"
        )
        task = asyncio.create_task(s.run(code, timeout=120))
        while not s.busy:
            await asyncio.sleep(0.01)
        while len(processes_with(mark)) < baseline + 1 + 2 + int(protect):
            await asyncio.sleep(0.02)  # its runner (holder), its child and the supervisor run
        started = time.monotonic()
        await asyncio.wait_for(s.close(), 10)
        with pytest.raises(SandboxClosedError, match="closed while this code ran"):
            await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 10
        assert s.closed
        deadline = time.monotonic() + 5
        while len(processes_with(mark)) > baseline and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(processes_with(mark)) == baseline
        async with sandbox.session() as s2:
            assert (await s2.run("print('next')")).stdout == "next\n"


async def test_a_cell_garbling_its_own_channel_breaks_only_its_session() -> None:
    async with LocalSandbox(preload=()) as sandbox:
        s = await sandbox.open_session()
        with pytest.raises(SandboxError):  # the runner shares the host socket (fd 6)
            await s.run("import os\n_ = os.write(6, b'\\x00\\x00\\x00\\x05hello')", timeout=2)
        assert s.closed
        assert (await sandbox.run("1 + 1")).stdout == "2\n"
