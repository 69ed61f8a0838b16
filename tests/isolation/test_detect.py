"""detect_protections on this host, strict mode, and the small pure helpers."""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from tir_agent.errors import IsolationError
from tir_agent.sandbox import isolation
from tir_agent.sandbox.config import SandboxConfig

ALL = [
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
]


def test_this_host_has_every_protection(protections: isolation.Protections) -> None:
    # This machine: root, bubblewrap 0.8 at /usr/bin/bwrap, pyseccomp installed (see docs/isolation.md).
    assert os.geteuid() == 0 and shutil.which("bwrap")
    assert protections.mechanism == "bwrap"
    assert protections.active() == ALL
    assert protections.missing == ()
    assert protections.workspace_root == isolation.WORKSPACE_ROOT
    protections.require_strict()  # does not raise
    print("\n" + protections.table())


def test_table_has_one_line_per_protection(protections: isolation.Protections) -> None:
    lines = protections.table().splitlines()
    assert lines[0].split() == ["mechanism", "bwrap"]
    assert [line.split()[0] for line in lines[1:]] == ALL
    assert all(line.split()[1] == "active" for line in lines[1:])


def test_detection_is_cached(config: SandboxConfig, protections: isolation.Protections) -> None:
    detected = isolation.detect_protections(config)
    assert detected == dataclasses.replace(protections, uid_base=isolation.UID_BASE)
    same = config.model_copy(update={"timeout": 3.0, "max_output_characters": 5})
    assert isolation.detect_protections(same) is detected


def test_network_allowed_is_reported_and_strict_still_passes() -> None:
    p = isolation.detect_protections(SandboxConfig(network=True))
    assert p.network is False and p.network_allowed
    assert dict(p.missing)["network"] == "network access allowed by config (network=True)"
    assert p.filesystem and p.session_uids and p.seccomp
    p.require_strict()


def test_strict_refuses_without_filesystem_isolation() -> None:
    weak = isolation.Protections(
        mechanism="none",
        network=False,
        filesystem=False,
        pid_namespace=False,
        session_uids=True,
        seccomp=True,
        missing=(("network", "install bubblewrap"), ("filesystem", "install bubblewrap")),
    )
    with pytest.raises(IsolationError, match=r"apt-get install bubblewrap") as e:
        weak.require_strict()
    assert "no filesystem and no network isolation" in str(e.value)
    assert "MISSING" in weak.table()


def test_protections_round_trip_through_json(protections: isolation.Protections) -> None:
    import json

    data = json.loads(json.dumps(protections.to_dict()))
    assert isolation.Protections.from_dict(data) == protections
    # The host's compiled filter travels along: the template needs no libseccomp of its own.
    assert data["seccomp_program"] == isolation._seccomp.compiled_filter(False).bpf.hex()
    assert "seccomp_program" not in repr(protections)


def test_sandbox_env_is_only_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-must-not-leak")
    env = isolation.sandbox_env(SandboxConfig(env={"FOO": "bar"}), home="/sandbox/s3")
    assert env["HOME"] == "/sandbox/s3"
    assert env["LANG"] == "C.UTF-8" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert env["FOO"] == "bar"
    assert "OPENAI_API_KEY" not in env
    assert not set(env) & (set(os.environ) - set(env))


def test_session_uids_are_distinct_and_unprivileged(protections: isolation.Protections) -> None:
    uids = [isolation.session_uid(slot, protections) for slot in range(256)]
    assert len(set(uids)) == 256 and min(uids) == protections.uid_base >= isolation.UID_BASE > 65535
    assert (protections.uid_base - isolation.UID_BASE) % isolation.UID_BLOCK == 0
    assert isolation.session_uid(5) == isolation.UID_BASE + 5
    for bad in (-1, isolation.UID_BLOCK):
        with pytest.raises(ValueError):
            isolation.session_uid(bad)


def test_uid_blocks_are_reserved_host_wide_until_released() -> None:
    blocks = [isolation.reserve_uid_block() for _ in range(20)]
    try:
        bases = [b.base for b in blocks]
        assert len(set(bases)) == 20  # never the same block twice while held
        assert all((b - isolation.UID_BASE) % isolation.UID_BLOCK == 0 for b in bases)
        assert max(bases) + isolation.UID_BLOCK <= (
            isolation.UID_BASE + isolation.UID_BLOCKS * isolation.UID_BLOCK
        )
        # another process cannot take a held block: the lock is an flock on a shared file
        import subprocess
        import sys

        probe = (
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
            "except BlockingIOError:\n    print('held')\n"
        )
        path = blocks[0].path
        held = subprocess.run([sys.executable, "-c", probe, path], capture_output=True, text=True)
        assert held.stdout == "held\n", held.stderr
        blocks[0].release()
        assert not blocks[0].held and not os.path.exists(path)  # nothing left on the host
    finally:
        for b in blocks:
            b.release()


def test_kill_uid_refuses_root_and_itself() -> None:
    with pytest.raises(ValueError):
        isolation.kill_uid(0)
    with pytest.raises(ValueError):
        isolation.kill_uid(os.getuid())


def test_remove_workdir_refuses_top_level_paths() -> None:
    for path in ("/", "/usr", "/tmp/"):
        with pytest.raises(ValueError):
            isolation.remove_workdir(path)
    assert os.path.isdir("/usr") and os.path.isdir("/tmp")


def test_bwrap_options_follow_the_installed_version() -> None:
    # bubblewrap 0.8 here knows every optional option; an older one gets none of them.
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    assert isolation._mounts.bwrap_features(bwrap) == frozenset(
        isolation._mounts.OPTIONAL_BWRAP_OPTIONS
    )
    plan = [["tmpfs", "/tmp", 0o1777, 1024], ["dir", "/x", 0o755], ["remount-ro", "/"]]
    assert isolation._mounts.bwrap_args(plan) == [
        "--perms", "1777", "--size", "1024", "--tmpfs", "/tmp",
        "--perms", "0755", "--dir", "/x",
        "--remount-ro", "/",
    ]  # fmt: skip
    assert isolation._mounts.bwrap_args(plan, frozenset()) == ["--tmpfs", "/tmp", "--dir", "/x"]


def test_command_line_prints_the_table() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "tir_agent.sandbox.isolation", "--strict"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["mechanism", "bwrap"]
    assert len(proc.stdout.splitlines()) == 1 + len(ALL)
