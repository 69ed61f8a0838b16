"""The test server helper itself: start, answer, stop cleanly."""

from __future__ import annotations

from tests.servers import start_server
from tests.service.client import Client


def test_start_server_answers_and_stops_with_status_0() -> None:
    with start_server("preload=[]") as server:
        client = Client(server.url)
        reply = client.execute("x = 20\nx * 2 + 2", session="smoke")
        assert reply.status == 200
        assert reply.body["stdout"] == "42\n"
        assert "tir-agent sandbox serving on " + server.url in server.stderr
        client.close()
        assert server.stop() == 0
