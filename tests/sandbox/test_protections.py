"""What is active on this machine (root, bubblewrap and pyseccomp installed; the same in CI)."""

from __future__ import annotations

import pytest

from tir_agent.sandbox.local import LocalSandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_every_protection_is_active_here(protected: LocalSandbox) -> None:
    p = protected.protections
    assert p.mechanism == "bwrap"
    for name in (
        "network",
        "filesystem",
        "pid_namespace",
        "session_uids",
        "session_files",
        "session_ipc",
        "session_memory",
        "seccomp",
        "rlimits",
        "env_scrubbed",
    ):
        assert getattr(p, name), f"{name} is not active: {dict(p.missing).get(name)}"
    assert p.missing == ()


async def test_sessions_really_run_confined(protected: LocalSandbox) -> None:
    r = await protected.run(
        "import os, resource, socket\n"
        "print(os.getuid() >= 2_000_000, os.getpid() < 100, sorted(os.environ) == sorted(set(os.environ)))\n"
        "print(resource.getrlimit(resource.RLIMIT_NPROC)[0], os.getcwd().startswith('/sandbox/'))\n"
        "print([n for _, n in socket.if_nameindex()])"
    )
    assert r.stdout == f"True True True\n{protected.config.max_processes} True\n['lo']\n"


async def test_environment_is_the_sandbox_one(protected: LocalSandbox) -> None:
    r = await protected.run(
        "import os\nsorted(k for k in os.environ if 'KEY' in k or 'TOKEN' in k or 'PYTEST' in k)"
    )
    assert r.stdout == "[]\n"


async def test_strict_starts_when_isolation_is_available() -> None:
    async with LocalSandbox(preload=(), strict=True) as sandbox:
        assert (await sandbox.run("1")).stdout == "1\n"
