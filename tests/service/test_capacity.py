"""Sessions the server closes on its own: idle eviction, and room made at max_sessions."""

from __future__ import annotations

import threading
import time

import pytest

from tests.servers import start_server
from tests.service.client import Client, wait_busy
from tests.service.conftest import LIGHT

pytestmark = pytest.mark.slow


def test_idle_sessions_are_evicted_and_say_so() -> None:
    with start_server(*LIGHT, "--idle-timeout", "0.4") as server:
        client = Client(server.url)
        assert client.v1("POST", "/sessions", session="v").status == 201
        assert client.v1("POST", "/sessions/v/run", {"code": "x = 1"}, session="v").status == 200
        assert client.execute("x = 1", session="n").body["new_session_created"] is True
        time.sleep(1.5)
        reply = client.v1("POST", "/sessions/v/run", {"code": "x"}, session="v")
        assert reply.status == 404
        assert reply.body["error"]["type"] == "session_not_found"
        again = client.execute("x", session="n")
        assert again.body["new_session_created"] is True
        assert "NameError" in again.body["stdout"]  # ipython tracebacks: stdout, as theirs
        assert "v" not in {s["session_id"] for s in client.v1("GET", "/sessions").body["sessions"]}
        client.close()


def test_at_max_sessions_the_least_recently_used_idle_session_makes_room() -> None:
    with start_server(*LIGHT, "--max-sessions", "2", "--idle-timeout", "none") as server:
        client = Client(server.url)
        busy = Client(server.url)
        assert client.execute("a = 'A'", session="a").status == 200
        assert client.execute("b = 'B'", session="b").status == 200
        # "a" is now busy (its cell runs for a second) and "b" idle: a third session evicts "b"
        out: list[object] = []
        thread = threading.Thread(
            target=lambda: out.append(busy.execute("import time\ntime.sleep(1)\na", session="a"))
        )
        thread.start()
        wait_busy(server.url, {"a"})
        third = client.execute("c = 'C'", session="c")
        assert third.body["new_session_created"] is True
        thread.join(10)
        assert out[0].body["stdout"] == "'A'\n"  # type: ignore[attr-defined]
        b = client.execute("b", session="b")
        assert b.body["new_session_created"] is True  # "b" was closed to make room
        assert "NameError" in b.body["stdout"]
        sessions = client.request("GET", "/sessions").body["sessions"]
        assert len(sessions) == 2
        client.close()
        busy.close()
