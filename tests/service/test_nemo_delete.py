"""A NeMo-Skills ``DELETE /sessions/{id}`` while the session runs a cell: the cell is cancelled
at once, its ``/execute`` reports the lost session, and the code is not run again elsewhere."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.client import Client, wait_busy
from tests.service.conftest import LIGHT


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server(*LIGHT) as s:
        yield s


def test_delete_cancels_the_running_cell_and_does_not_rerun_it(server: ServerProcess) -> None:
    s = f"n-{uuid.uuid4().hex[:12]}"
    setup = Client(server.url)
    assert setup.execute("import time", session=s).status == 200
    replies: dict[str, Any] = {}

    def long_run() -> None:
        client = Client(server.url)
        try:
            code = "time.sleep(60)\nprint('finished')"
            replies["run"] = client.execute(code, session=s, timeout=120).body
        finally:
            client.close()

    thread = threading.Thread(target=long_run)
    thread.start()
    try:
        wait_busy(server.url, {s})
        started = time.monotonic()
        deleted = setup.request("DELETE", f"/sessions/{s}", headers={"X-Session-ID": s})
        thread.join(timeout=30)
        took = time.monotonic() - started
        listed = setup.request("GET", "/sessions").body["sessions"]
    finally:
        thread.join()
        setup.close()
    assert deleted.status == 200
    assert took < 10, f"the delete and the run took {took:.1f} s: the cell was not cancelled"
    run = replies["run"]
    assert run["process_status"] == "error" and "finished" not in run["stdout"]
    assert "closed during this execution" in run["stderr"]
    assert s not in listed  # not opened again to run the code a second time
