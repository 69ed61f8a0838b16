"""Many clients at once: sessions stay apart, and a session id first used by several requests at
the same moment is created exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.client import Client
from tests.service.conftest import LIGHT


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server(*LIGHT, "--no-protect-state") as s:
        yield s


def test_concurrent_sessions_keep_their_own_state(server: ServerProcess) -> None:
    def one(i: int) -> list[str]:
        client = Client(server.url)
        try:
            outs = []
            if i % 2:  # half through each API
                client.execute(f"x = {i}", session=f"c{i}")
                for k in range(5):
                    outs.append(
                        client.execute(f"x += 1000\nx - {k + 1} * 1000", session=f"c{i}").body[
                            "stdout"
                        ]
                    )
            else:
                assert client.v1("POST", "/sessions", session=f"c{i}").status == 201
                client.v1("POST", f"/sessions/c{i}/run", {"code": f"x = {i}"}, session=f"c{i}")
                for k in range(5):
                    code = f"x += 1000\nx - {k + 1} * 1000"
                    reply = client.v1(
                        "POST", f"/sessions/c{i}/run", {"code": code}, session=f"c{i}"
                    )
                    outs.append(reply.body["stdout"])
            return outs
        finally:
            client.close()

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, range(24)))
    assert results == [[f"{i}\n"] * 5 for i in range(24)]


def test_a_new_id_used_by_simultaneous_requests_is_created_once(server: ServerProcess) -> None:
    def first(_: int) -> tuple[bool, str]:
        client = Client(server.url)
        try:
            body = client.execute("import os\nos.getpid()", session="raced").body
            return body["new_session_created"], body["stdout"]
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(first, range(8)))
    assert sum(created for created, _ in results) == 1
    assert len({pid for _, pid in results}) == 1  # one interpreter served them all
