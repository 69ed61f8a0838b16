"""Large requests on the NeMo-Skills API: a 5 MB ``generated_code`` runs under the default body
limit (NeMo-Skills' server takes one), and a body above a server's ``--max-body-bytes`` gets a
JSON 413 in their error shape, not a dropped connection."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess, start_server
from tests.service.client import Client
from tests.service.conftest import LIGHT
from tests.service.test_nemo import execute, request

FIVE_MB = 5 * 1000 * 1000


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server(*LIGHT) as s:  # default --max-body-bytes
        yield s


def big_cell() -> str:
    """About 5 MB of code: a long string literal and a use of it."""
    return f"s = '{'ab' * (FIVE_MB // 2)}'\nprint(len(s), s[-3:])"


@pytest.mark.slow
@pytest.mark.parametrize("language", ["ipython", "python"])
def test_a_5_mb_cell_runs(client: Client, language: str) -> None:
    session = str(uuid.uuid4()) if language == "ipython" else None
    body = execute(client, session, big_cell(), language=language)
    assert body["process_status"] == "completed", body
    assert body["stderr"] == ""
    assert body["stdout"] == f"{FIVE_MB} bab\n"


def test_above_the_limit_is_a_json_413() -> None:
    with start_server(*LIGHT, "--max-body-bytes", "64K") as s:
        client = Client(s.url)
        try:
            reply = client.request(
                "POST",
                "/execute",
                # 20 MB: far more than the socket buffers take, so the client is still sending
                # when the server replies (their httpx client, like http.client, reads after)
                request("x = 1\n" + "#" * 20_000_000),
                headers={"X-Session-ID": "a"},
            )
            assert reply.status == 413
            assert list(reply.body) == ["error"]
            assert "--max-body-bytes" in reply.body["error"]
            assert "65536" in reply.body["error"]
            # the limit is the server's option: just below it runs
            body = execute(client, "a", "x = 1\n" + "#" * 60_000 + "\nprint(x)")
            assert body["stdout"] == "1\n"
        finally:
            client.close()
