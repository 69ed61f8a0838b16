"""Issue 12, class 4: identity shared across sandboxes. Each LocalSandbox reserves its own block
of session uids host-wide (an flock'ed file per block), so one sandbox's processes never count
against another's process limit, in one process or in two; the block is given back on close and
when the host process dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tir_agent.sandbox import isolation
from tir_agent.sandbox.local import LocalSandbox

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SMALL = {"preload": (), "max_processes": 8}
ROOT = str(Path(__file__).resolve().parents[2])

FILL_PROCESSES = """
import os, time
children = []
while len(children) < 20:
    try:
        pid = os.fork()
    except BlockingIOError:
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    children.append(pid)
print(os.getuid(), len(children))
"""


def lock_is_free(path: str) -> bool:
    """Whether another process could take the block's lock now (a released block has no file)."""
    if not os.path.exists(path):
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def block_processes(base: int) -> list[int]:
    return [p for uid in range(base, base + 8) for p in isolation.pids_of_uid(uid)]


@pytest.mark.parametrize("protect_state", [True, False])
async def test_two_sandboxes_in_one_process_do_not_share_a_process_limit(
    protect_state: bool,
) -> None:
    async with (
        LocalSandbox(protect_state=protect_state, **SMALL) as a,
        LocalSandbox(protect_state=protect_state, **SMALL) as b,
    ):
        assert a.protections.session_uids and a.protections.uid_base != b.protections.uid_base
        async with a.session() as hog, b.session() as victim:
            r = await hog.run(FILL_PROCESSES)
            uid_a, forked = r.stdout.split()
            assert int(forked) < 8  # the hog fills its own budget ...
            r = await victim.run(FILL_PROCESSES)
            uid_b, forked = r.stdout.split()
            assert uid_a != uid_b and int(forked) >= 5, r.stdout  # ... not the other sandbox's
        blocks = [a.protections.uid_base, b.protections.uid_base]
        paths = [s._uid_block.path for s in (a, b) if s._uid_block is not None]
        assert len(paths) == 2 and not any(lock_is_free(p) for p in paths)
    assert all(lock_is_free(p) for p in paths)  # given back on close
    assert [block_processes(base) for base in blocks] == [[], []]


SERVER = f"""
import asyncio, sys
sys.path.insert(0, {ROOT!r})
from tir_agent.sandbox.local import LocalSandbox
async def main():
    async with LocalSandbox(preload=(), max_processes=8) as box:
        r = await box.run("import os; print(os.getuid())")
        print(box.protections.uid_base, box._uid_block.path, r.stdout.strip(), flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_a_sandbox_in_another_process_gets_another_block_and_loses_it_when_killed() -> None:
    other = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert other.stdout is not None
        line = await asyncio.to_thread(other.stdout.readline)
        base, path, uid = line.split()
        assert int(base) <= int(uid) < int(base) + isolation.UID_BLOCK
        assert not lock_is_free(path)
        async with LocalSandbox(**SMALL) as mine:
            assert mine.protections.uid_base != int(base)
            r = await mine.run("import os; print(os.getuid())")
            assert r.stdout.strip() != uid
    finally:
        other.send_signal(signal.SIGKILL)  # a crash: no close() runs
        other.wait()
    assert lock_is_free(path)  # the kernel dropped the lock with the process
    assert os.path.exists(path)  # the crashed holder could not remove its (empty) file ...
    isolation.reserve_uid_block().release()
    assert not os.path.exists(path)  # ... the next reservation did
    deadline = time.monotonic() + 10
    while block_processes(int(base)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # its sandbox dies with it
    assert block_processes(int(base)) == []


async def test_a_block_whose_uids_still_run_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    # A sandbox that did not take the lock (an older version, say) may still run in a block.
    first = isolation.reserve_uid_block()
    base = first.base
    first.release()
    index = (base - isolation.UID_BASE) // isolation.UID_BLOCK
    monkeypatch.setattr(secrets, "randbelow", lambda n: index)  # try that block first
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(base + 1, base + 1, base + 1)
            os.setresuid(base + 1, base + 1, base + 1)
            time.sleep(5)
        finally:
            os._exit(0)
    try:
        while not isolation.pids_of_uid(base + 1):
            await asyncio.sleep(0.01)
        block = isolation.reserve_uid_block()
        block.release()
        assert block.base != base
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    block = isolation.reserve_uid_block()  # free again once its processes are gone
    block.release()
    assert block.base == base
