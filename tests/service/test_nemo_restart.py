"""Restart signalling of the NeMo-Skills API: their client replays a session's history when a
reply says ``new_session_created: true``, but not on a ``timeout`` reply, so their server keeps
the flag pending and reports it on the session's next request too. These tests use a server
without state protection, where a crashed cell restarts the interpreter (state lost)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.client import Client
from tests.service.conftest import LIGHT
from tests.service.test_nemo import execute


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server(*LIGHT, "--no-protect-state") as s:
        yield s


def news(client: Client, session: str, *codes: str) -> list[tuple[object, object]]:
    """``(process_status, new_session_created)`` of each cell run in ``session``."""
    out = []
    for code in codes:
        body = execute(client, session, code)
        out.append((body["process_status"], body["new_session_created"]))
    return out


def test_a_lost_interpreter_is_reported_on_that_reply_and_the_next(client: Client) -> None:
    s = str(uuid.uuid4())
    assert news(client, s, "x = 1", "import os; os._exit(3)", "print(2)", "print(3)") == [
        ("completed", True),  # created
        ("error", True),  # the interpreter died: its state is gone
        ("completed", True),  # still pending, as their server's restart_pending flag
        ("completed", False),
    ]
    assert "NameError" in execute(client, s, "x")["stdout"]  # type: ignore[operator]


def test_deleting_the_session_clears_the_pending_flag(client: Client) -> None:
    s = str(uuid.uuid4())
    news(client, s, "x = 1", "import os; os._exit(3)")
    assert client.request("DELETE", f"/sessions/{s}", headers={"X-Session-ID": s}).status == 200
    # a fresh session says so once, as any new session
    assert news(client, s, "y = 1", "y") == [("completed", True), ("completed", False)]


def test_a_timeout_that_loses_the_interpreter_is_pending_for_the_next_request(
    client: Client,
) -> None:
    """Their client does not replay on a timeout reply; it learns of the loss from the next one."""
    s = str(uuid.uuid4())
    stuck = "import os, signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals))\nos.read(os.pipe()[0], 1)"
    execute(client, s, "x = 1")
    body = execute(client, s, stuck, timeout=1)
    assert body == {
        "new_session_created": True,
        "process_status": "timeout",
        "stderr": "Execution timed out after 1 seconds\n",
        "stdout": "",
    }
    assert news(client, s, "print(2)", "print(3)") == [("completed", True), ("completed", False)]
