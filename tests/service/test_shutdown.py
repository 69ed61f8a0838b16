"""Graceful shutdown of a real server process: SIGTERM lets running cells finish (or cuts them
after the grace period with a clear reply), the process exits 0 and no sandbox process is left."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any

import pytest

from tests.sandbox.conftest import marker, processes_with
from tests.servers import ServerProcess, start_server
from tests.service.client import Client, Reply, wait_busy
from tests.service.conftest import LIGHT

pytestmark = pytest.mark.slow


def wait_until_gone(mark: str, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not processes_with(mark):
            return []
        time.sleep(0.05)
    return processes_with(mark)


def in_thread(call: Any) -> tuple[threading.Thread, list[Reply | BaseException]]:
    """Run ``call()`` in a thread; its reply (or exception) lands in the list."""
    out: list[Reply | BaseException] = []

    def target() -> None:
        try:
            out.append(call())
        except BaseException as e:
            out.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def start(mark: str, grace: str) -> Any:
    return start_server(*LIGHT, f"env={{MARK: {mark}}}", "--shutdown-grace", grace)


def running_cells(server: ServerProcess, code: str) -> list[tuple[threading.Thread, list[Any]]]:
    """One NeMo ipython cell and one v1 session cell running ``code``, started in threads."""
    nemo, v1 = Client(server.url), Client(server.url)
    assert nemo.execute("x = 1", session="nemo").status == 200
    assert v1.v1("POST", "/sessions", session="v1").status == 201
    calls = [
        in_thread(lambda: nemo.execute(code, session="nemo", timeout=60)),
        in_thread(
            lambda: v1.v1("POST", "/sessions/v1/run", {"code": code, "timeout": 60}, session="v1")
        ),
    ]
    wait_busy(server.url, {"nemo", "v1"})
    return calls


def test_sigterm_lets_running_cells_finish_then_nothing_is_left() -> None:
    mark = marker()
    with start(mark, "30") as server:
        idle = Client(server.url)
        assert idle.request("GET", "/sessions").status == 200  # an idle keep-alive connection
        assert processes_with(mark)
        calls = running_cells(server, "import time\ntime.sleep(2)\nprint('done')")
        assert all(not out for _, out in calls)  # still running when the signal comes
        started = time.monotonic()
        server.proc.send_signal(15)
        time.sleep(0.3)  # the cells still run (2 s) while the server shuts down
        with pytest.raises(ConnectionRefusedError):  # no new connections once shutting down
            socket.create_connection(("127.0.0.1", server.port), timeout=2)
        for thread, _ in calls:
            thread.join(30)
        [nemo], [v1] = (out for _, out in calls)
        assert isinstance(nemo, Reply) and nemo.status == 200, nemo
        assert nemo.body["process_status"] == "completed"
        assert nemo.body["stdout"] == "done\n"
        assert isinstance(v1, Reply) and v1.status == 200, v1
        assert v1.body["stdout"] == "done\n"
        assert server.stop() == 0
        assert time.monotonic() - started < 15
    assert wait_until_gone(mark) == []


def test_cells_past_the_grace_period_are_cut_with_a_clear_reply() -> None:
    mark = marker()
    with start(mark, "1") as server:
        calls = running_cells(server, "import time\ntime.sleep(60)")
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 10
        for thread, _ in calls:
            thread.join(10)
        [nemo], [v1] = (out for _, out in calls)
        assert isinstance(nemo, Reply) and nemo.status == 200, nemo
        assert nemo.body["process_status"] == "error"
        assert nemo.body["new_session_created"] is True  # their client's cue that state is gone
        assert "shut down before this execution finished" in nemo.body["stderr"]
        assert isinstance(v1, Reply) and v1.status == 503, v1
        assert v1.body["error"]["type"] == "shutting_down"
        assert v1.headers["x-tir-agent-api"] == "1"
    assert wait_until_gone(mark) == []


def test_ctrl_c_to_the_process_group_lets_running_cells_finish() -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group. The sandbox runs
    in a process group of its own, so only the server gets it: the running cells finish and
    answer, then everything stops."""
    mark = marker()
    with start(mark, "30") as server:
        calls = running_cells(server, "import time\ntime.sleep(1.5)\nprint('done')")
        os.killpg(server.proc.pid, signal.SIGINT)  # the server leads its group (start_server)
        for thread, _ in calls:
            thread.join(30)
        [nemo], [v1] = (out for _, out in calls)
        assert isinstance(nemo, Reply) and nemo.status == 200, nemo
        assert (nemo.body["process_status"], nemo.body["stdout"]) == ("completed", "done\n")
        assert isinstance(v1, Reply) and v1.status == 200, v1
        assert v1.body["stdout"] == "done\n"
        assert server.stop() == 0
    assert wait_until_gone(mark) == []
