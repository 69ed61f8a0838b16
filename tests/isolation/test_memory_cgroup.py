"""Memory cgroups per session (_cgroup.py) on this host's real cgroup file system: where they are
made, their limits, that nothing is left behind, the fallback and the error when none can be made.
Their effect on a session that goes over its limit is in tests/sandbox/test_attacks_memory.py.

This project's hosts have a writable cgroup v1 memory hierarchy (run as root). On a host without
any usable memory cgroup the tests that need one are skipped, with the reason detection gives
(pytest's -ra summary shows it); the fallback tests run everywhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tir_agent.errors import IsolationError
from tir_agent.sandbox import _cgroup, isolation
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.local import LocalSandbox

MiB = 1024**2
LIMIT = 200 * MiB


@pytest.fixture(scope="module")
def hierarchy() -> _cgroup.Hierarchy:
    found = _cgroup.find()
    assert found is not None, (
        f"this host was expected to have a memory cgroup: {_cgroup.unavailable()}"
    )
    return found


def _tree(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir())


def test_the_host_hierarchy_is_our_own_memory_cgroup(hierarchy: _cgroup.Hierarchy) -> None:
    if hierarchy.version != 1:
        pytest.skip("a cgroup v2 host: the v1 layout does not apply")
    own = _cgroup._own_cgroups()["memory"]
    assert hierarchy.path.endswith(own.rstrip("/")) and os.path.isdir(hierarchy.path)
    assert os.path.exists(os.path.join(hierarchy.path, "memory.limit_in_bytes"))


def test_a_sandbox_cgroup_is_made_emptied_and_removed(hierarchy: _cgroup.Hierarchy) -> None:
    name = f"tir-agent-test-{os.getpid()}"
    path = os.path.join(hierarchy.path, name)
    # left by a sandbox that died with a session cgroup: emptied and reused
    os.makedirs(os.path.join(path, "s123"))
    try:
        group = _cgroup.SandboxCgroup(hierarchy, name)
        assert _tree(path) == []
        os.mkdir(os.path.join(path, "s7"))
        group.close(wait=1.0)
        assert not os.path.exists(path)
    finally:
        for sub in (os.path.join(path, "s123"), os.path.join(path, "s7"), path):
            if os.path.isdir(sub):
                os.rmdir(sub)


def test_a_supervisor_puts_its_session_in_a_limited_cgroup(hierarchy: _cgroup.Hierarchy) -> None:
    """enter() and discard() as the template's processes call them, in forked children."""
    name = f"tir-agent-test-{os.getpid()}"
    group = _cgroup.SandboxCgroup(hierarchy, name)
    try:
        r, w = os.pipe()
        supervisor = os.fork()
        if supervisor == 0:  # the supervisor: adopts the descriptor as the template would
            try:
                os.close(w)
                _cgroup.adopt(os.dup(group.fd), hierarchy.version, LIMIT)
                holder = os.fork()
                if holder == 0:
                    os.read(r, 1)
                    os._exit(0)
                _cgroup.enter(holder)
                with open(f"/proc/{holder}/cgroup") as f:
                    line = next(x for x in f if ":memory:" in x)
                os._exit(0 if line.rstrip().endswith(f"/{name}/s{os.getpid()}") else 3)
            finally:
                os._exit(4)
        os.close(r)
        _, status = os.waitpid(supervisor, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        session = os.path.join(group.path, f"s{supervisor}")
        with open(os.path.join(session, "memory.limit_in_bytes")) as f:
            assert int(f.read()) == LIMIT
        with open(os.path.join(session, "cgroup.procs")) as f:
            assert f.read().split()  # the holder is still there (waiting on the pipe)
        _cgroup._fd = os.dup(group.fd)  # the template's view: the supervisor was reaped
        try:
            _cgroup.discard(supervisor)
            assert supervisor in _cgroup._pending  # busy: its holder has not exited yet
            os.close(w)
            for _ in range(200):
                _cgroup.sweep()
                if not _cgroup._pending:
                    break
                time.sleep(0.01)
            assert not os.path.exists(session)
        finally:
            os.close(_cgroup._fd)
            _cgroup._fd = -1
            _cgroup._pending.clear()
    finally:
        group.close(wait=2.0)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("protect", [True, False], ids=["protected", "fast"])
async def test_each_session_has_its_own_cgroup_and_no_way_to_it(
    hierarchy: _cgroup.Hierarchy, protect: bool
) -> None:
    async with LocalSandbox(preload=(), memory_limit=LIMIT, protect_state=protect) as sandbox:
        assert sandbox.protections.memory_enforcement == "cgroup", sandbox.protections.table()
        base = os.path.join(hierarchy.path, f"tir-agent-{sandbox.protections.uid_base}")
        async with sandbox.session() as a, sandbox.session() as b:
            code = (
                "import os\n"
                "print(next(x for x in open('/proc/self/cgroup') if ':memory:' in x).strip())\n"
                "links = []\n"
                "for fd in os.listdir('/proc/self/fd'):\n"
                "    try:\n"
                "        links.append(os.readlink(f'/proc/self/fd/{fd}'))\n"
                "    except OSError:\n"
                "        pass  # the directory listing's own descriptor, closed by now\n"
                "print(links)"
            )
            ra, rb = await a.run(code), await b.run(code)
            group_a, fds_a = ra.stdout.splitlines()
            group_b, _ = rb.stdout.splitlines()
            assert group_a != group_b, (group_a, group_b)
            leaf = group_a.rsplit("/", 1)[1]
            with open(os.path.join(base, leaf, "memory.limit_in_bytes")) as f:
                assert int(f.read()) == LIMIT
            assert "tir-agent" not in fds_a and "cgroup" not in fds_a, fds_a
            r = await a.run(
                "import glob; print([p for p in glob.glob('/sys/fs/cgroup/**/tir-agent-*', "
                "recursive=True)])"
            )
            assert r.stdout.strip() == "[]", r
        assert os.path.isdir(base)
    assert not os.path.exists(base)  # everything removed with the sandbox


@pytest.fixture
def no_cgroup(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> Iterator[None]:
    """A host without a usable memory cgroup: TIR_AGENT_CGROUP names a directory that is not one
    (the real code path for a wrong delegation; detection caches are cleared around it)."""
    monkeypatch.setenv(_cgroup.ENV, str(tmp_path))
    _cgroup._find.cache_clear()
    _cgroup.find.cache_clear()
    isolation._detect_cached.cache_clear()
    yield
    monkeypatch.delenv(_cgroup.ENV)
    _cgroup._find.cache_clear()
    _cgroup.find.cache_clear()
    isolation._detect_cached.cache_clear()


def test_without_a_cgroup_auto_falls_back_to_the_watchdog(no_cgroup: None) -> None:
    assert _cgroup.find() is None and "not a cgroup v2 directory" in _cgroup.unavailable()
    p = isolation.detect_protections(SandboxConfig())
    assert p.session_memory and p.memory_enforcement == "watchdog", p.table()
    assert "memory watchdog" in p.table()


def test_without_a_cgroup_asking_for_one_is_a_clear_error(no_cgroup: None) -> None:
    with pytest.raises(IsolationError, match=r"memory_enforcement='cgroup'.*docs/isolation.md"):
        isolation.detect_protections(SandboxConfig(memory_enforcement="cgroup"))


@pytest.mark.asyncio
async def test_trees_of_sandboxes_that_died_are_removed_by_the_next(
    hierarchy: _cgroup.Hierarchy,
) -> None:
    # what a host killed with -9 leaves: its tree, with an empty session cgroup, and no lock held
    stale = os.path.join(hierarchy.path, f"tir-agent-{isolation.UID_BASE - 1 - os.getpid()}")
    os.makedirs(os.path.join(stale, "s42"))
    try:
        async with LocalSandbox(preload=()) as first:
            await first.start()
            assert not os.path.exists(stale)
            mine = os.path.join(hierarchy.path, f"tir-agent-{first.protections.uid_base}")
            async with LocalSandbox(preload=()) as second:
                await second.start()
                assert os.path.isdir(mine)  # a live sandbox's tree is left alone
    finally:
        if os.path.isdir(stale):
            _cgroup.remove_tree(stale)
