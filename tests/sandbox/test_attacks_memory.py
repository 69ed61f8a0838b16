"""Issue 12, class 7: memory per session, not per process. With ``memory_limit`` of 256 MiB, a
session whose processes each stay under it but together go over is cut back to the limit (its
largest processes are killed); memory shared copy-on-write is counted once; the session keeps its
earlier state. Both modes, and both ways of holding a session together: its own memory cgroup
(the kernel's OOM killer) and the memory watchdog (forced with ``memory_enforcement``). At most
about 450 MiB are touched at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tir_agent.sandbox import _cgroup
from tir_agent.sandbox.local import LocalSandbox

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

MiB = 1024**2
LIMIT = 256 * MiB

SPREAD = """
import os, time
def child(size, hold, hide=False):
    pid = os.fork()
    if pid == 0:
        if hide:  # an attempt to hide: undumpable processes may show as root's in /proc
            import ctypes
            ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
        b = bytearray(size)
        for i in range(0, size, 4096):
            b[i] = 1  # really use the memory
        time.sleep(hold)
        os._exit(0)
    return pid
def outcome(pids):
    return [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
"""


@pytest_asyncio.fixture(
    scope="module",
    loop_scope="module",
    params=[
        pytest.param((protect, how), id=f"{how}-{'protected' if protect else 'fast'}")
        for how in ("cgroup", "watchdog")
        for protect in (True, False)
    ],
)
async def box(request: pytest.FixtureRequest) -> AsyncIterator[LocalSandbox]:
    protect, how = request.param
    if how == "cgroup" and _cgroup.find() is None:
        pytest.skip(f"no memory cgroup on this host: {_cgroup.unavailable()}")
    async with LocalSandbox(
        protect_state=protect,
        preload=(),
        max_processes=16,
        memory_limit=LIMIT,
        memory_enforcement=how,
    ) as sandbox:
        yield sandbox


@pytest.mark.parametrize("hide", [False, True])
async def test_many_processes_cannot_add_up_past_the_limit(box: LocalSandbox, hide: bool) -> None:
    p = box.protections
    assert p.session_memory and p.memory_enforcement == box.config.memory_enforcement, p.table()
    async with box.session() as s:
        await s.run(SPREAD + "kept = 'earlier state'")
        # three processes of 150 MiB: each within RLIMIT_AS, 450 MiB together
        r = await s.run(
            f"print(outcome([child(150 * 2**20, 2, {hide}) for _ in range(3)]))", timeout=20
        )
        codes = eval(r.stdout)
        assert sorted(codes) == [-9, -9, 0], r  # two killed, the one that fits finished
        r = await s.run("print(kept)")
        assert r.stdout == "earlier state\n"


async def test_memory_shared_copy_on_write_is_counted_once(box: LocalSandbox) -> None:
    async with box.session() as s:
        # 150 MiB in the session's interpreter, then four forks that only read it: 750 MiB of
        # resident pages in all, 150 MiB really held
        code = (
            SPREAD + "big = bytearray(150 * 2**20)\n"
            "for i in range(0, len(big), 4096):\n    big[i] = 1\n"
            "pids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
            "        time.sleep(1)\n        os._exit(sum(big[::2**20]) % 256 == 150 and 7)\n"
            "    pids.append(pid)\nprint(outcome(pids))"
        )
        r = await s.run(code, timeout=20)
        assert r.stdout == "[7, 7, 7, 7]\n", r
        r = await s.run("print(len(big))")
        assert r.stdout == f"{150 * MiB}\n"


async def test_one_process_within_the_limit_is_left_alone(box: LocalSandbox) -> None:
    async with box.session() as s:
        r = await s.run(SPREAD + "print(outcome([child(200 * 2**20, 1)]))", timeout=20)
        assert r.stdout == "[0]\n", r
