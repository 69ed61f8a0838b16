"""Issue 12, class 3: shared quotas. One session filling its disk or inodes gets "No space left
on device"; the other sessions of the sandbox do not. Both modes, with a quota of a few MiB
(``disk_limit``) and a few hundred inodes (``max_files``); the sandbox-wide tmpfs is small too,
so even without per-session quotas the attack stays bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tir_agent.sandbox.local import LocalSandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")

MiB = 1024**2
QUOTAS = {
    "preload": (),
    "max_processes": 16,
    "disk_limit": 4 * MiB,
    "max_files": 300,
    "workspace_size": 8 * MiB,
}

FILL = """
import errno, os
MiB = 1024 * 1024
def fill(path, chunk=256 * 1024):
    written = 0
    try:
        with open(path, "wb") as f:
            while written < 64 * 1024 * 1024:
                f.write(b"x" * chunk)
                f.flush()
                written += chunk
    except OSError as e:
        return errno.errorcode[e.errno], written
    return "no limit", written
def files(directory, limit=10_000):
    n = 0
    try:
        while n < limit:
            open(os.path.join(directory, f"f{n}"), "w").close()
            n += 1
    except OSError as e:
        return errno.errorcode[e.errno], n
    return "no limit", n
def can_write(size=MiB):
    out = []
    for path in ("/tmp/mine", "/dev/shm/mine", "mine"):
        try:
            with open(path, "wb") as f:
                f.write(b"y" * size)
            os.unlink(path)
            out.append("ok")
        except OSError as e:
            out.append(errno.errorcode[e.errno])
    return out
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=[True, False])
async def box(request: pytest.FixtureRequest) -> AsyncIterator[LocalSandbox]:
    async with LocalSandbox(protect_state=request.param, **QUOTAS) as sandbox:
        yield sandbox


@pytest.mark.parametrize("place", ["/tmp/big", "/dev/shm/big", "big"])
async def test_filling_the_disk_hurts_only_the_filler(box: LocalSandbox, place: str) -> None:
    assert box.protections.session_files
    async with box.session() as filler, box.session() as other:
        for s in (filler, other):
            assert (await s.run(FILL + "kept = 'earlier state'")).status == "completed"
        r = await filler.run(f"print(*fill({place!r}))", timeout=30)
        error, written = r.stdout.split()
        assert error == "ENOSPC" and 3 * MiB <= int(written) <= 4 * MiB, r.stdout
        # /tmp, /dev/shm and the work dir are one quota: all three are full for the filler ...
        r = await filler.run("print(can_write(64 * 1024))")
        assert r.stdout == "['ENOSPC', 'ENOSPC', 'ENOSPC']\n", r.stderr
        # ... and nobody else
        r = await other.run("print(can_write())")
        assert r.stdout == "['ok', 'ok', 'ok']\n", r.stderr
        # the filler keeps its state and gets its space back by deleting
        r = await filler.run(f"os.unlink({place!r})\nprint(can_write(), kept)")
        assert r.stdout == "['ok', 'ok', 'ok'] earlier state\n"


async def test_inodes_are_capped_per_session(box: LocalSandbox) -> None:
    async with box.session() as filler, box.session() as other:
        for s in (filler, other):
            assert (await s.run(FILL)).status == "completed"
        r = await filler.run("print(*files('/tmp'))", timeout=30)
        error, n = r.stdout.split()
        assert error == "ENOSPC" and 250 <= int(n) < QUOTAS["max_files"], r.stdout
        r = await filler.run("print(*files('/dev/shm', 5))")
        assert r.stdout.split()[0] == "ENOSPC"
        r = await other.run("print(*files('/tmp', 100), can_write())")
        assert r.stdout == "no limit 100 ['ok', 'ok', 'ok']\n", r.stderr


async def test_system_v_shared_memory_counts_against_a_bound(box: LocalSandbox) -> None:
    assert box.protections.session_ipc
    code = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def shmget(key, size):
    if libc.shmget(key, ctypes.c_size_t(size), 0o1600) == -1:
        return errno.errorcode[ctypes.get_errno()]
    return "ok"
print(shmget(1, 5 * 1024 * 1024), [shmget(2 + i, 1024 * 1024) for i in range(5)])
"""
    async with box.session() as s:
        r = await s.run(code)
        # one segment over disk_limit is refused (shmmax), and so is a fifth MiB in all (shmall)
        assert r.stdout == "EINVAL ['ok', 'ok', 'ok', 'ok', 'ENOSPC']\n", r.stderr
