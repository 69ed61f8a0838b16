"""The load test of issue #6: 256 concurrent sessions through nginx, one server killed mid-way.

Three real servers (fast mode) behind a real nginx; one RemoteSandbox whose single URL is nginx.
Every session runs cells that depend on the earlier ones. When a third of all cells are done, one
server's whole process group gets SIGKILL (a machine that died). Then:

- nothing hangs (one deadline over the whole run);
- every session on the surviving servers finishes with correct values and loses nothing;
- every session of the dead server that still had cells to run gets exactly one clear ``lost``
  result (``status="error"``, ``state="lost"``), then continues correctly on a surviving server
  (it replays its cells from the start, as a model told by the lost note would);
- afterwards every session lives on exactly one surviving server, with exactly the executions
  it made there.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

import pytest

from tests.procs import alive
from tests.scaleout.cluster import Cluster, start_cluster
from tests.scaleout.rawhttp import request
from tir_agent.sandbox.http_api import API_HEADER, API_VERSION
from tir_agent.sandbox.remote import LOST_NOTE, RemoteSandbox, RemoteSession
from tir_agent.sandbox.result import ExecutionResult

SESSIONS = 256
CELLS = 5
KILL_AFTER = SESSIONS * CELLS // 3
"""Cells completed before the victim is killed."""
DEADLINE = 90.0
"""Seconds the whole run (sessions opened, cells, kill, recovery) may take: no hang."""


def cell(i: int, k: int) -> str:
    return f"acc = {i}" if k == 0 else f"acc = acc * 3 + {k}\nprint(acc)"


def value(i: int, k: int) -> int:
    acc = i
    for j in range(1, k + 1):
        acc = acc * 3 + j
    return acc


@dataclass
class Outcome:
    """What happened to one session."""

    index: int
    first_id: str
    lost: list[tuple[int, ExecutionResult]] = field(default_factory=list)
    """(cell index, result) of each lost result."""
    executions_since_lost: int = 0
    """Executions in the fresh session opened after the loss."""
    finished_before_kill: bool = False


def check(result: ExecutionResult, i: int, k: int) -> None:
    assert result.status == "completed" and result.state == "kept", (i, k, result)
    assert result.stdout == ("" if k == 0 else f"{value(i, k)}\n"), (i, k, result)


async def run_session(
    s: RemoteSession, outcome: Outcome, progress: list[int], killed: asyncio.Event
) -> None:
    i = outcome.index
    for k in range(CELLS):
        result = await s.run(cell(i, k))
        if result.state == "lost":
            assert result.status == "error" and result.stderr == LOST_NOTE, result
            outcome.lost.append((k, result))
            # The state is gone: replay the cells before this one, then this one, in the fresh
            # session the next run opens on a surviving server.
            for j in range(k + 1):
                check(await s.run(cell(i, j)), i, j)
            outcome.executions_since_lost = k + 1
        else:
            check(result, i, k)
            if outcome.lost:
                outcome.executions_since_lost += 1
        progress[0] += 1
        await asyncio.sleep(0)  # let other sessions interleave between cells
    outcome.finished_before_kill = not killed.is_set()


async def placement(cluster: Cluster, urls: list[str]) -> dict[str, dict[str, int]]:
    """Server url -> {session id: executions}, from each server's ``GET /v1/sessions``."""
    out = {}
    for url in urls:
        reply = await request(url, "GET", "/v1/sessions", headers={API_HEADER: str(API_VERSION)})
        assert reply.status == 200, reply.body
        out[url] = {s["session_id"]: s["executions"] for s in reply.json()["sessions"]}
    return out


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            found += kids
            stack += kids
    return found


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_256_sessions_survive_a_server_killed_mid_run() -> None:
    with start_cluster(3, "--no-protect-state", "preload=[]", "--max-sessions", "300") as cluster:
        victim, *survivors = cluster.servers
        urls = [s.url for s in cluster.servers]
        started = time.monotonic()
        async with RemoteSandbox(cluster.url) as sandbox:
            sessions = await asyncio.wait_for(
                asyncio.gather(*(sandbox.open_session() for _ in range(SESSIONS))), DEADLINE
            )
            before = await placement(cluster, urls)
            on_victim = {s.session_id for s in sessions} & before[victim.url].keys()
            assert on_victim and len(on_victim) < SESSIONS, "the sessions are not spread"
            victim_processes = descendants(victim.proc.pid)

            outcomes = [Outcome(i, s.session_id) for i, s in enumerate(sessions)]
            progress = [0]
            killed = asyncio.Event()

            async def killer() -> None:
                while progress[0] < KILL_AFTER:
                    await asyncio.sleep(0.002)
                victim.kill()
                killed.set()

            runs = (
                run_session(s, o, progress, killed) for s, o in zip(sessions, outcomes, strict=True)
            )
            await asyncio.wait_for(
                asyncio.gather(killer(), *runs),
                DEADLINE - (time.monotonic() - started),
            )
            elapsed = time.monotonic() - started

            lost = [o for o in outcomes if o.lost]
            early = {o.first_id for o in outcomes if o.finished_before_kill}
            # Cells running on the victim when it died: nginx logs their broken replies.
            in_flight = cluster.nginx.log().count("upstream prematurely closed connection")
            report = (
                f"{SESSIONS} sessions x {CELLS} cells through nginx, 3 servers, one killed after "
                f"{KILL_AFTER} cells: {len(on_victim)} sessions were on it ({len(early & on_victim)} "
                f"had finished before the kill), {len(lost)} got a lost result ({in_flight} while a "
                f"cell ran there) and continued on a "
                f"survivor, {SESSIONS - len(on_victim)} on the survivors completed untouched; "
                f"{elapsed:.1f} s in all"
            )
            print(report)

            # Exactly the dead server's unfinished sessions were lost, each once.
            assert lost, f"the kill came too late to hit a session: {report}"
            assert {o.first_id for o in lost} == on_victim - early, report
            assert all(len(o.lost) == 1 for o in lost), report
            # Afterwards each session lives on one survivor with the executions it made there:
            # the survivors' own sessions on the same server as before, with all their cells.
            after = await placement(cluster, [s.url for s in survivors])
            for s, o in zip(sessions, outcomes, strict=True):
                holders = [url for url, ids in after.items() if s.session_id in ids]
                assert s.restarts == len(o.lost), (o, report)
                if o.first_id in early & on_victim:
                    assert holders == [], (o, after)
                    continue
                assert len(holders) == 1, (s.session_id, after, report)
                if o.lost:
                    assert after[holders[0]][s.session_id] == o.executions_since_lost, (o, report)
                else:
                    assert s.session_id in before[holders[0]], (o, report)
                    assert after[holders[0]][s.session_id] == CELLS, (o, report)
        # The killed server left no process behind.
        deadline = time.monotonic() + 10
        while any(alive(p) for p in victim_processes) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not [p for p in victim_processes if alive(p)]


@pytest.mark.slow
async def test_nemo_sessions_of_a_killed_server_start_afresh_on_a_survivor() -> None:
    """NeMo-Skills' client through nginx: after a server dies, its sessions' next request creates
    a fresh session on a survivor (``new_session_created: true``); the others keep their state."""

    def execute(code: str) -> dict[str, object]:
        return {"generated_code": code, "language": "ipython", "timeout": 10}

    async def send(i: int, code: str) -> dict[str, object]:
        reply = await request(
            cluster.url,
            "POST",
            "/execute",
            headers={"X-Session-ID": f"k{i}"},
            json_body=execute(code),
        )
        assert reply.status == 200, reply.body
        body: dict[str, object] = reply.json()
        return body

    with start_cluster(2, "--no-protect-state", "preload=[]") as cluster:
        await asyncio.gather(*(send(i, f"v = {i}") for i in range(24)))
        victim, survivor = cluster.servers
        held = (await request(victim.url, "GET", "/sessions")).json()["sessions"]
        on_victim = {int(sid[1:]) for sid in held}
        assert 0 < len(on_victim) < 24
        victim.kill()
        await asyncio.sleep(0.2)  # nginx notices its idle connections to the victim closing

        replies = await asyncio.gather(*(send(i, "v") for i in range(24)))
        for i, reply in enumerate(replies):
            if i in on_victim:
                assert reply["new_session_created"] is True, reply
                assert reply["process_status"] == "error" and "NameError" in str(
                    reply["stdout"]
                )  # on stdout, as theirs
            else:
                assert (reply["new_session_created"], reply["stdout"]) == (False, f"{i}\n"), reply
        again = await asyncio.gather(*(send(i, f"v = {i}\nv + 1") for i in sorted(on_victim)))
        assert [r["stdout"] for r in again] == [f"{i + 1}\n" for i in sorted(on_victim)]
        now = (await request(survivor.url, "GET", "/sessions")).json()["sessions"]
        assert set(now) == {f"k{i}" for i in range(24)}
