"""Many concurrent sessions through one nginx in front of three real servers keep their state,
and every request of a session reaches the one server that holds it: with RemoteSandbox (the
tir-agent API) and with plain HTTP requests carrying X-Session-ID (the NeMo-Skills API, as their
client sends them). Placement is checked by asking each server directly for its sessions."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.scaleout.cluster import Cluster
from tests.scaleout.rawhttp import Connection, request
from tir_agent.sandbox.http_api import API_HEADER, API_VERSION
from tir_agent.sandbox.remote import RemoteSandbox, RemoteSession

SESSIONS = 36


async def v1_sessions_by_server(cluster: Cluster) -> dict[str, dict[str, int]]:
    """``GET /v1/sessions`` of every server, asked directly: url -> {session id: executions}."""
    placement = {}
    for server in cluster.servers:
        reply = await request(
            server.url, "GET", "/v1/sessions", headers={API_HEADER: str(API_VERSION)}
        )
        assert reply.status == 200
        placement[server.url] = {s["session_id"]: s["executions"] for s in reply.json()["sessions"]}
    return placement


async def test_remote_sessions_keep_state_on_one_server_each(cluster: Cluster) -> None:
    async with RemoteSandbox(cluster.url) as sandbox:

        async def session(i: int) -> RemoteSession:
            s = await sandbox.open_session()
            cells = [f"n = {i}", "n = n * 7 + 1", "def f(x):\n    return x + n", "print(f(100))"]
            results = [await s.run(code) for code in cells]
            assert all(r.status == "completed" and r.state == "kept" for r in results), results
            assert results[-1].stdout == f"{100 + 7 * i + 1}\n"
            return s

        sessions = await asyncio.gather(*(session(i) for i in range(SESSIONS)))
        placement = await v1_sessions_by_server(cluster)
        for s in sessions:
            holders = [url for url, ids in placement.items() if s.session_id in ids]
            assert len(holders) == 1, (s.session_id, placement)
            assert placement[holders[0]][s.session_id] == 4  # all four cells ran there
        ours = {s.session_id for s in sessions}
        counts = {url: len(ours & ids.keys()) for url, ids in placement.items()}
        assert all(counts.values()), f"a server got no session: {counts}"

        for s in sessions:
            await s.close()
        left = await v1_sessions_by_server(cluster)
        assert not ours & {sid for ids in left.values() for sid in ids}


async def test_remote_stateless_runs_through_nginx(cluster: Cluster) -> None:
    async with RemoteSandbox(cluster.url) as sandbox:
        results = await asyncio.gather(*(sandbox.run(f"print({i} * 6)") for i in range(8)))
    assert [r.stdout for r in results] == [f"{i * 6}\n" for i in range(8)]


def execute(code: str) -> dict[str, object]:
    return {"generated_code": code, "language": "ipython", "timeout": 10}


async def nemo_sessions_by_server(cluster: Cluster, prefix: str) -> dict[str, list[str]]:
    """``GET /sessions`` of every server, asked directly: server url -> its ids with ``prefix``."""
    placement = {}
    for server in cluster.servers:
        reply = await request(server.url, "GET", "/sessions")
        assert reply.status == 200
        body = reply.json()
        assert body["backend"] == "ipython"  # NeMo-Skills' value
        placement[server.url] = sorted(s for s in body["sessions"] if s.startswith(prefix))
    return placement


async def test_nemo_sessions_keep_state_on_one_server_each(cluster: Cluster) -> None:
    async def session(i: int) -> None:
        conn = Connection(cluster.url)
        sid = {"X-Session-ID": f"nemo-{i}"}
        try:
            first = (
                await conn.request("POST", "/execute", headers=sid, json_body=execute(f"v = {i}"))
            ).json()
            assert first["process_status"] == "completed" and first["new_session_created"] is True
            second = (
                await conn.request("POST", "/execute", headers=sid, json_body=execute("v * 3"))
            ).json()
            assert (second["stdout"], second["new_session_created"]) == (f"{3 * i}\n", False)
            third = (
                await conn.request(
                    "POST",
                    "/execute",
                    headers=sid,
                    json_body=execute("import math\nprint(math.factorial(5) + v)"),
                )
            ).json()
            assert third["stdout"] == f"{120 + i}\n", third
        finally:
            await conn.close()

    await asyncio.gather(*(session(i) for i in range(SESSIONS)))

    placement = await nemo_sessions_by_server(cluster, "nemo-")
    ids = [sid for ids in placement.values() for sid in ids]
    assert sorted(ids) == sorted(f"nemo-{i}" for i in range(SESSIONS))  # each on exactly one server
    assert all(placement.values()), f"a server got no session: {placement}"
    # every request of a session reached its server: 3 executions
    for executions in (await v1_sessions_by_server(cluster)).values():
        counts = Counter(n for sid, n in executions.items() if sid.startswith("nemo-"))
        assert set(counts) <= {3}, counts


async def test_delete_reaches_the_sessions_server(cluster: Cluster) -> None:
    sid = {"X-Session-ID": "nemo-del"}
    created = await request(
        cluster.url, "POST", "/execute", headers=sid, json_body=execute("z = 1")
    )
    assert created.status == 200
    assert (
        sum(len(ids) for ids in (await nemo_sessions_by_server(cluster, "nemo-del")).values()) == 1
    )

    deleted = await request(cluster.url, "DELETE", "/sessions/nemo-del", headers=sid)
    assert deleted.status == 200, deleted.body
    again = await request(cluster.url, "DELETE", "/sessions/nemo-del", headers=sid)
    assert again.status == 404
    assert (
        sum(len(ids) for ids in (await nemo_sessions_by_server(cluster, "nemo-del")).values()) == 0
    )


async def test_ipython_without_a_session_header_is_a_400_through_nginx(cluster: Cluster) -> None:
    reply = await request(cluster.url, "POST", "/execute", json_body=execute("1"))
    assert reply.status == 400


async def test_stateless_python_runs_through_nginx(cluster: Cluster) -> None:
    replies = await asyncio.gather(
        *(
            request(
                cluster.url,
                "POST",
                "/execute",
                json_body={
                    "generated_code": f"print({i} * 2)",
                    "language": "python",
                    "std_input": "",
                },
            )
            for i in range(6)
        )
    )
    assert [r.json()["stdout"] for r in replies] == [f"{i * 2}\n" for i in range(6)]


async def test_health_through_nginx(cluster: Cluster) -> None:
    reply = await request(cluster.url, "GET", "/health")
    assert reply.status == 200
    assert reply.json()["status"] == "healthy"
