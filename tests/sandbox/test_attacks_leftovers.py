"""Issue 12, class 2: kernel objects that outlive a session. A closed session leaves nothing:
no System V IPC object, no file in /tmp, /dev/shm or its work directory, no pinned inodes, and
the next session of the same slot (same uid) starts empty. Both modes, small quotas.

The sandbox-wide places (the template's /tmp, /dev/shm, /sandbox and System V namespace, where
sessions used to leave things) are inspected from the host through /proc/PID/root and nsenter.
A checkout or virtualenv that lives under /tmp (a CI clone) is bound read-only into the sandbox's
/tmp and each session's: those binds (:func:`bound`) are the sandbox's own, not leftovers.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tir_agent.sandbox._mounts import bind_roots
from tir_agent.sandbox.local import LocalSandbox

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

QUOTAS = {
    "preload": (),
    "max_processes": 16,
    "disk_limit": 8 * 1024**2,
    "max_files": 2000,
    "workspace_size": 32 * 1024**2,  # the old shared tmpfs, kept small: the attacks stay bounded
}

SYSV = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
def make_segment(key, size):
    shmid = libc.shmget(key, ctypes.c_size_t(size), 0o1666)
    if shmid == -1:
        return errno.errorcode[ctypes.get_errno()]
    addr = libc.shmat(shmid, None, 0)
    ctypes.memset(addr, 1, size)  # really allocate it
    libc.shmdt(ctypes.c_void_p(addr))  # detached, not removed: it would outlive the process
    return shmid
def segments():
    return len(open("/proc/sysvipc/shm").read().splitlines()) - 1
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=[True, False])
async def box(request: pytest.FixtureRequest) -> AsyncIterator[LocalSandbox]:
    async with LocalSandbox(protect_state=request.param, **QUOTAS) as sandbox:
        await sandbox.start()
        yield sandbox


def bound(box: LocalSandbox) -> list[str]:
    """Host directories the sandbox binds read-only (the interpreter's, the package's)."""
    return bind_roots(box.config)


def tmp_names(box: LocalSandbox) -> list[str]:
    """What a fresh session's /tmp holds: the first directory of each bind below /tmp."""
    return sorted({r.split("/")[2] for r in bound(box) if r.startswith("/tmp/")})


def _binds_or_leads_to_one(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r + "/") or r.startswith(path + "/") for r in roots)


def sandbox_wide(box: LocalSandbox) -> dict[str, object]:
    """What the sandbox-wide places hold, seen from the host: files under the template's /tmp,
    /dev/shm and /sandbox (the sandbox's own binds left out), and the System V objects of its IPC
    namespace."""
    pid = box.template_pid
    assert pid is not None
    root = f"/proc/{pid}/root"
    roots = bound(box)
    files = {}
    for place in ("/tmp", "/dev/shm", "/sandbox"):
        found = []
        for dirpath, dirnames, filenames in os.walk(root + place):
            inside = [os.path.join(dirpath, n)[len(root) :] for n in dirnames + filenames]
            found += [p for p in inside if not _binds_or_leads_to_one(p, roots)]
            dirnames[:] = [
                n
                for n in dirnames
                if not _binds_or_leads_to_one(os.path.join(dirpath, n)[len(root) :], roots)
            ]
        files[place] = sorted(found)
    ipcs = {}
    for kind in ("shm", "msg", "sem"):
        out = subprocess.run(
            ["nsenter", f"--ipc=/proc/{pid}/ns/ipc", "cat", f"/proc/sysvipc/{kind}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        ipcs[kind] = len(out.splitlines()) - 1
    return {"files": files, "ipc": ipcs}


EMPTY = {
    "files": {"/tmp": [], "/dev/shm": [], "/sandbox": []},
    "ipc": {"shm": 0, "msg": 0, "sem": 0},
}


async def test_nothing_outlives_a_session(box: LocalSandbox) -> None:
    assert box.protections.session_files and box.protections.session_ipc
    async with box.session() as s:
        r = await s.run(
            SYSV + "import os\n"
            "print(make_segment(0x5151, 1 << 20), libc.msgget(0x5152, 0o1666) >= 0,\n"
            "      libc.semget(0x5153, 4, 0o1666) >= 0, segments())\n"
            "for path in ('/tmp/left', '/dev/shm/left', 'left'):\n"
            "    open(path, 'w').write('from the last session')\n"
            "os.chmod('/tmp/left', 0o666)\n"
            "print(os.getuid())"
        )
        assert r.status == "completed", r.stderr
        first, uid = r.stdout.splitlines()
        assert first.split()[1:] == ["True", "True", "1"]
        # Even while the session lives, nothing of it is in the sandbox-wide places.
        assert sandbox_wide(box) == EMPTY
    # The next session gets the same slot, so the same uid: it would see what was left.
    async with box.session() as s:
        r = await s.run(
            SYSV + "import os\n"
            "print(os.getuid(), segments(), libc.shmget(0x5151, 0, 0) == -1,\n"
            "      libc.msgget(0x5152, 0) == -1, libc.semget(0x5153, 0, 0) == -1)\n"
            "print(os.listdir('/tmp'), os.listdir('/dev/shm'), os.listdir('.'))"
        )
        assert r.stdout == f"{uid} 0 True True True\n{tmp_names(box)} [] []\n", r.stderr
    assert sandbox_wide(box) == EMPTY


async def test_sessions_do_not_see_each_others_objects(box: LocalSandbox) -> None:
    async with box.session() as a, box.session() as b:
        r = await a.run(
            SYSV + "print(make_segment(0x6161, 4096) >= 0)\nopen('/tmp/mine', 'w').write('a')\n"
            "import os\nos.chmod('/tmp/mine', 0o666)"
        )
        assert r.stdout == "True\n", r.stderr
        r = await b.run(
            SYSV
            + "import os\nprint(segments(), libc.shmget(0x6161, 0, 0) == -1, os.listdir('/tmp'))"
        )
        assert r.stdout == f"0 True {tmp_names(box)}\n", r.stderr


async def test_hundreds_of_thousands_of_empty_files_are_refused_and_freed(
    box: LocalSandbox,
) -> None:
    code = (
        "import errno\nn = 0\ntry:\n"
        "    while n < 300_000:\n        open(f'/tmp/{n}', 'w').close()\n        n += 1\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno], n)"
    )
    async with box.session() as s:
        await s.run("kept = 'earlier state'")
        r = await s.run(code, timeout=30)
        error, n = r.stdout.split()
        assert error == "ENOSPC" and 1900 <= int(n) < QUOTAS["max_files"]
        # the session keeps working, with its state, and can free its own files
        r = await s.run(
            f"import os\nfor f in set(os.listdir('/tmp')) - set({tmp_names(box)}):\n"
            "    os.unlink('/tmp/' + f)\nkept"
        )
        assert r.stdout == "'earlier state'\n"
        r = await s.run(code, timeout=30)
        assert r.stdout.split()[0] == "ENOSPC"
    async with box.session() as s:  # same slot again: a fresh quota
        r = await s.run("import os\nprint(len(os.listdir('/tmp')))\n" + code, timeout=30)
        assert r.stdout.splitlines()[0] == str(len(tmp_names(box)))
        assert r.stdout.split()[1] == "ENOSPC"
    assert sandbox_wide(box) == EMPTY
