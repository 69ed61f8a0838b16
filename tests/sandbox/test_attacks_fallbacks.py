"""Issue 12 classes 2, 3 and 7 with the other ways of making the sandbox: the ``unshare``
fallback gives sessions the same namespaces as bubblewrap; without any namespace tool the
sessions still run and the report says what is missing. (LocalSandbox takes the detection
result it is given, as on a host that has only that mechanism.)
"""

from __future__ import annotations

import pytest

from tir_agent.sandbox import isolation
from tir_agent.sandbox._mounts import bind_roots
from tir_agent.sandbox.local import LocalSandbox

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SYSV_ATTEMPTS = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
IPC_RMID = 0
out = []
for get, args, remove in [
    (libc.shmget, (0, 4096, 0o1600), lambda i: libc.shmctl(i, IPC_RMID, None)),
    (libc.msgget, (0, 0o1600), lambda i: libc.msgctl(i, IPC_RMID, None)),
    (libc.semget, (0, 1, 0o1600), lambda i: libc.semctl(i, 0, IPC_RMID)),
]:
    i = get(*args)
    if i == -1:
        out.append(errno.errorcode[ctypes.get_errno()])
    else:  # here that would be the host's IPC namespace: never leave it there
        remove(i)
        out.append("made")
print(out)
"""

SMALL = {"preload": (), "max_processes": 16, "disk_limit": 2 * 1024**2, "max_files": 200}


@pytest.mark.parametrize("protect_state", [True, False])
async def test_unshare_fallback_gives_each_session_its_own_namespaces(protect_state: bool) -> None:
    sandbox = LocalSandbox(protect_state=protect_state, **SMALL)
    sandbox._protections = isolation.detect_protections(sandbox.config, mechanisms=("unshare",))
    async with sandbox:
        p = sandbox.protections
        assert p.mechanism == "unshare" and p.session_files and p.session_ipc and p.session_memory
        code = (
            "import ctypes, errno, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(os.listdir('/tmp'), os.listdir('/dev/shm'), libc.shmget(7, 4096, 0) == -1)\n"
            "libc.shmget(7, 4096, 0o1600)\nopen('/dev/shm/x', 'w').close()\n"
            "try:\n    open('/tmp/big', 'wb').write(b'x' * 3 * 2**20)\n"
            "except OSError as e:\n    print(errno.errorcode[e.errno])"
        )
        for _ in range(2):  # the second session has the same slot and uid
            async with sandbox.session() as s:
                r = await s.run(code)
                # a checkout under /tmp (a CI clone) is bound into every session's /tmp
                bound = sorted(
                    {d.split("/")[2] for d in bind_roots(sandbox.config) if d.startswith("/tmp/")}
                )
                assert r.stdout == f"{bound} [] True\nENOSPC\n", r.stderr


async def test_without_namespaces_sessions_run_and_the_gaps_are_reported() -> None:
    sandbox = LocalSandbox(**SMALL)
    sandbox._protections = isolation.detect_protections(sandbox.config, mechanisms=())
    async with sandbox:
        p = sandbox.protections
        assert p.mechanism == "none"
        assert not (p.session_files or p.session_ipc) and p.memory_enforcement == "rlimit"
        how = dict(p.missing)
        assert "apt-get install bubblewrap" in how["session_files"]
        assert "session_memory" in how
        r = await sandbox.run("import os\nopen('note', 'w').write('x')\nprint(os.listdir('.'))")
        assert r.stdout == "['note']\n", r.stderr
        # no IPC namespace per session: System V objects, which would outlive the session,
        # are refused by seccomp instead
        assert p.seccomp
        r = await sandbox.run(SYSV_ATTEMPTS)
        assert r.stdout == "['EPERM', 'EPERM', 'EPERM']\n", r.stderr
