"""The bubblewrap command for an unprivileged user really works (user namespace, no session uids).

This machine runs everything as root, so the command is built as it would be for uid 65534 and
then run as uid 65534 (``setpriv``). The interpreter is Debian's /usr/bin/python3: the pyenv one
lives under /root (mode 0700), which an ordinary user cannot reach at all. The probe it runs is
the real detection probe (standard library only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.isolation.conftest import reachable_by_others
from tir_agent.sandbox import _mounts, _probe, _seccomp, isolation
from tir_agent.sandbox.config import SandboxConfig

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534

pytestmark = pytest.mark.skipif(
    not (
        os.path.exists(SYSTEM_PYTHON)
        and shutil.which("setpriv")
        and shutil.which("bwrap")
        and reachable_by_others(_mounts.package_dir())
    ),
    reason="needs /usr/bin/python3, setpriv, bwrap and a checkout other users can reach",
)


def test_unprivileged_user_gets_namespaces_but_not_session_uids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = SandboxConfig(python=SYSTEM_PYTHON)
    bwrap = shutil.which("bwrap")
    trial = isolation.Protections("bwrap", False, False, False, False, False, executable=bwrap)
    with monkeypatch.context() as m:
        m.setattr(os, "geteuid", lambda: NOBODY)
        command = isolation.template_command(
            [SYSTEM_PYTHON, "-I", "-S", "-c", _probe.probe_source()], config, trial
        )
    assert "--unshare-user" in command and "--cap-add" not in command
    arg = {
        "uid": isolation.session_uid(0),
        "bpf": _seccomp.compiled_filter(False).bpf.hex(),
        "workspace": isolation.WORKSPACE_ROOT,
        "secrets": _probe.sentinel_secrets(_mounts.bind_roots(config), _mounts.package_dir()),
        "session_ns": True,
    }
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    proc = subprocess.run(
        [*as_nobody, *command, json.dumps(arg)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["euid"] == NOBODY and facts["pid"] == 2
    assert facts["ifaces"] == ["lo"]
    assert facts["root_writable"] is False and facts["workspace_writable"] is True
    assert facts["read_only"] == {"/": True, "/usr": True, "/etc": True, "/proc/sys": True}
    assert facts["shadow_readable"] is False
    assert arg["secrets"] and facts["secrets_visible"] == []
    assert facts["setuid"] is False  # one uid only: sessions share it (reported as missing)
    assert facts["seccomp"] is True  # no privilege needed for a filter under no_new_privs
    # no capability in the user namespace: sessions cannot have namespaces of their own
    assert "Operation not permitted" in facts["session_ns"]["error"], facts["session_ns"]
    assert facts["smaps_fsuid"] is False  # and no memory watchdog (no session uids)
