"""Mechanism "none" (no bubblewrap, no unshare): what confine_session still gives on this host."""

from __future__ import annotations

import os

import pytest

from tests.isolation.conftest import Template, detect, reachable_by_others
from tir_agent.errors import IsolationError
from tir_agent.sandbox import isolation
from tir_agent.sandbox.config import SandboxConfig


@pytest.fixture(scope="module")
def protections(config: SandboxConfig) -> isolation.Protections:
    return detect(config, "none")


def test_detection_without_namespaces(
    protections: isolation.Protections, config: SandboxConfig
) -> None:
    how = dict(protections.missing)
    assert (
        "apt-get install bubblewrap" in how["filesystem"]
        and "apt-get install bubblewrap" in how["network"]
    )
    if reachable_by_others(config.python):
        assert protections.active() == ["session_uids", "seccomp", "rlimits", "env_scrubbed"]
    else:
        # This machine: the interpreter lives under /root (mode 0700), so a session uid could not
        # even run it, and the report says so.
        assert protections.active() == ["seccomp", "rlimits", "env_scrubbed"]
        assert "cannot run" in how["session_uids"] and "/root" in how["session_uids"]
    with pytest.raises(IsolationError):
        protections.require_strict()
    root = protections.workspace_root
    assert root.startswith("/tmp/tir-agent-ws-") and os.stat(root).st_mode & 0o777 == 0o711


def test_sessions_still_get_rlimits_seccomp_and_a_private_workdir(
    template: Template, protections: isolation.Protections, config: SandboxConfig
) -> None:
    code = """
import os, resource, socket
out["uid"] = os.getuid()
out["cwd"] = os.getcwd()
out["as"] = resource.getrlimit(resource.RLIMIT_AS)
try:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
    out["raise"] = "raised"
except ValueError:
    out["raise"] = "ValueError"
try:
    socket.socket()
    out["socket"] = "created"
except OSError as e:
    out["socket"] = e.strerror
out["env"] = sorted(os.environ)
status = open("/proc/self/status").read().splitlines()
out["caps"] = [l.split()[1] for l in status if l.startswith(("CapEff", "CapPrm", "CapBnd"))]
try:
    os.chown(".", 1, 1)  # needs CAP_CHOWN even for root
    out["chown"] = "changed"
except OSError as e:
    out["chown"] = e.strerror
"""
    r = template.run(code, slot=5)
    out = r["out"]
    if protections.session_uids:
        assert out["uid"] == isolation.session_uid(5, protections)
    else:  # root without session uids (see test_detection_without_namespaces)
        assert out["uid"] == 0
    assert out["caps"][:2] == ["0000000000000000"] * 2  # no capabilities at all
    if not protections.session_uids:
        assert out["caps"][2] == "0000000000000000"  # not even in the bounding set
    assert out["cwd"] == f"{protections.workspace_root}/s5"
    assert out["as"] == [config.memory_limit] * 2 and out["raise"] == "ValueError"
    assert out["socket"] == "Operation not permitted"
    assert out["env"] == sorted(isolation.sandbox_env(config))
    assert r["workdir_left"] is False
    assert out["chown"] == "Operation not permitted"
