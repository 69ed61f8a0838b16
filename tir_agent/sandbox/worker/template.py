"""The template (zygote): imports the preloaded modules once and forks every session from there.

It never runs user code. It reads only the host's channel (``new`` and ``kill`` requests, see
:mod:`tir_agent.sandbox.protocol`), keeps :data:`~.layout.SPARES` spare supervisors forked
ahead of time, and hands a new session's socket to one of them.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
from typing import NoReturn

from tir_agent.sandbox import _cgroup, _ipython_cell, isolation
from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.worker import hugepages
from tir_agent.sandbox.worker.layout import SPARES
from tir_agent.sandbox.worker.supervisor import supervisor_main


def _reap_all(sessions: dict[int, int]) -> None:
    """Reap exited children; forget the sessions (slot -> supervisor pid) among them."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            _cgroup.sweep()
            return
        _cgroup.discard(pid)
        for slot in [k for k, v in sessions.items() if v == pid]:
            del sessions[slot]


def template_main(argv: list[str]) -> NoReturn:
    """Entry point of the template: ``argv`` = control fd, protections JSON, config JSON."""
    ctl = socket.socket(fileno=int(argv[0]))
    protections = isolation.Protections.from_dict(json.loads(argv[1]))
    config = SandboxConfig.model_validate_json(argv[2])
    failed: dict[str, str] = {}
    for name in config.preload:
        try:
            importlib.import_module(name)
        except Exception as e:
            failed[name] = repr(e)
    try:  # IPython's shell for IPython cells, made once here (see _ipython_cell)
        _ipython_cell.preload(config.preload)
    except Exception as e:
        failed["IPython"] = f"the IPython shell could not be made: {e!r}"
    isolation.prepare_template(config, protections)
    isolation.start_memory_watchdog(config, protections)
    compile("x = 1\nx", "<warm>", "exec")
    gc.collect()
    gc.freeze()
    huge = hugepages.collapse_heap()  # after the last big allocation: cheaper forks
    ctl.send(
        proto.encode({"op": "ready", "pid": os.getpid(), "failed": failed, "huge_pages": huge})
    )
    signal.signal(signal.SIGCHLD, lambda *_: None)
    spares: list[tuple[int, socket.socket]] = []
    # Supervisors handed out, by slot. A pid is killed only while it is in here: it is then our
    # own unreaped child, so the number cannot have been reused by another process.
    sessions: dict[int, int] = {}
    while True:
        _reap_all(sessions)
        idle = 0.0 if len(spares) < SPARES else 1.0
        try:
            ready, _, _ = select.select([ctl], [], [], idle)
        except InterruptedError:
            continue
        if not ready:
            if len(spares) < SPARES:  # nothing to do: prepare the next sessions
                spares.append(_spawn_spare(ctl, spares, config, protections))
            continue
        try:
            data = ctl.recv(proto.MAX_PACKET)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)  # sessions die with us (PR_SET_PDEATHSIG)
        request = proto.decode(data)
        if request.get("op") == "kill":  # a supervisor stopped answering: clean up after it
            slot = int(request["slot"])
            if sessions.get(slot) == request["pid"]:
                with contextlib.suppress(OSError):
                    os.kill(sessions[slot], signal.SIGKILL)
            if protections.session_uids:
                isolation.kill_uid(isolation.session_uid(slot, protections))
            with contextlib.suppress(OSError):
                isolation.remove_workdir(os.path.join(protections.workspace_root, f"s{slot}"))
            ctl.send(proto.encode({"op": "killed", "pid": request["pid"]}))
        elif request.get("op") == "new":
            if not spares:
                spares.append(_spawn_spare(ctl, spares, config, protections))
            pid, link = spares.pop(0)
            host_end, session_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            # the session's control socket: the supervisor's alone (resets, see supervisor.py)
            host_ctl, session_ctl = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            assignment = {"slot": request["slot"], "protect": request["protect"]}
            ends = [session_end.fileno(), session_ctl.fileno()]
            socket.send_fds(link, [proto.encode(assignment)], ends)
            link.close()
            session_end.close()
            session_ctl.close()
            sessions[int(request["slot"])] = pid
            reply = proto.encode({"op": "new", "pid": pid, "id": request.get("id")})
            socket.send_fds(ctl, [reply], [host_end.fileno(), host_ctl.fileno()])
            host_end.close()
            host_ctl.close()


def _spawn_spare(
    ctl: socket.socket,
    spares: list[tuple[int, socket.socket]],
    config: SandboxConfig,
    protections: isolation.Protections,
) -> tuple[int, socket.socket]:
    """Fork a spare supervisor (with its holder) that waits for a session."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            ctl.close()
            ours.close()
            for _, other in spares:
                other.close()
            supervisor_main(theirs, config, protections)
        finally:
            os._exit(70)
    theirs.close()
    return pid, ours


def main() -> NoReturn:
    """``python -m tir_agent.sandbox.worker FD PROTECTIONS CONFIG``."""
    template_main(sys.argv[1:])
