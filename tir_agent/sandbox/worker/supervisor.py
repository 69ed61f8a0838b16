"""The supervisor: one per session, privileged, never runs user code.

It is forked from the template as a spare (with its holder forked ahead of time), handed a
session's socket, and from then on owns the output pipes and the host channel: it drains the
output of cells it answers, enforces timeouts, sweeps processes a cell left behind, and ends the
session when the host half-closes its socket. Messages of the session's processes are checked
against who the kernel says sent them (see docs/sandbox.md, "Trust between the sandbox's
processes").
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from typing import NoReturn

from tir_agent.sandbox import _cgroup, isolation
from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.worker import layout
from tir_agent.sandbox.worker.control import ControlMessages
from tir_agent.sandbox.worker.holder import holder_main
from tir_agent.sandbox.worker.layout import (
    DEBUG,
    FD_CTL,
    FD_ERR_R,
    FD_OUT_R,
    FD_SIBLINGS,
    FD_TIMER,
    FD_TOKEN_R,
    FD_TOKEN_W,
    SOFT_GRACE,
    debug,
)
from tir_agent.sandbox.worker.procs import (
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    PR_SET_PDEATHSIG,
    kill_until_gone,
    prctl,
)


class Supervisor(ControlMessages):
    """One per session: owns the output pipes and the host channel, enforces timeouts."""

    def __init__(self, config: SandboxConfig, protections: isolation.Protections) -> None:
        super().__init__(config)
        self.host = socket.socket(socket.AF_UNIX)  # replaced by assign()
        self.control: socket.socket | None = None  # the host's requests to us alone (reset)
        self.protections = protections
        self.uid = os.getuid()
        self.workdir = ""
        self.takeover_due = False
        self.ctl, self.ctl_child = proto.control_channel()
        self.fresh = False
        """The holder has not run a cell: its state is a fresh interpreter (set by spawn)."""
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # The output pipes are read only while a cell runs (on a timer, or on every write during
        # a flood) and when it ends. Never between cells: once the host has a result, the next
        # runner may already be writing the next cell's output, which must not be dropped.
        for fd in (self.ctl.fileno(), self.wake_r):
            self.poll.register(fd, select.POLLIN)

    def assign(
        self, host: socket.socket, slot: int, protect: bool, control: socket.socket | None = None
    ) -> None:
        """Become the supervisor of session ``slot`` (the holder was forked ahead of time).
        ``control`` is the host's socket to the supervisor alone (no session process holds it):
        the host asks for a :meth:`reset` there."""
        self.host.close()
        self.host = host  # blocking: the runners share its file description and read from it
        # only the host's half-close (session close) wakes us
        self.poll.register(host.fileno(), select.POLLRDHUP)
        if control is not None:
            control.setblocking(False)
            self.control = control
            self.poll.register(control.fileno(), select.POLLIN)
        self.protect = protect
        self.poll.register(self.token.timer, select.POLLIN)
        if self.protections.session_uids:
            self.uid = isolation.session_uid(slot, self.protections)
        self.workdir = os.path.join(self.protections.workspace_root, f"s{slot}")
        self.send_assignment()

    def send_assignment(self) -> None:
        """Hand the holder its session (uid, work dir, mode) and the host socket."""
        self.runner = self.holder if not self.protect else 0
        message = {
            "op": "assign",
            "uid": self.uid,
            "workdir": self.workdir,
            "protect": self.protect,
            "lost": self.lost_notice,
        }
        # The holder may answer its first cell itself (see Direct): the notice goes with the
        # assignment. Protected mode keeps it here too until that cell commits (``holder``):
        # should the cell fail instead, the state was lost before it, not rolled back.
        if not self.protect:
            self.lost_notice = ""
        socket.send_fds(self.ctl, [proto.encode(message)], [self.host.fileno()])

    # -- processes

    def spawn_holder(self) -> None:
        """Fork a holder with the session's descriptors at their places (see ``layout``)."""
        self.token.reset()
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                layout.place(
                    self.out_w,
                    self.err_w,
                    [
                        (self.ctl_child.fileno(), FD_CTL),
                        (self.token.r, FD_TOKEN_R),
                        (self.token.w, FD_TOKEN_W),
                        (self.token.timer, FD_TIMER),
                        (self.out.fd, FD_OUT_R),
                        (self.err.fd, FD_ERR_R),
                        (self.children_fd, FD_SIBLINGS),
                    ],
                )
                holder_main(self.config, self.protections, self.token.shm)
            finally:
                os._exit(70)
        _cgroup.enter(pid)  # the session's memory cgroup (no-op without one)
        self.holder = pid
        self.runner = 0
        self.fresh = True  # (protected mode: it may run the first cell itself, see holder.py)
        self.watch(pid)
        if DEBUG:
            debug(f"spawned holder {pid}")

    def kill_everything(self) -> None:
        """Kill every process of the session (and its uid's), forget them."""
        # The holder and the runner first, waiting for their exits on their pidfds: tearing
        # down their memory takes a few ms, and the sweeps below would poll /proc meanwhile.
        waiting = select.poll()
        left = set()
        for fd, pid in self.pidfds.items():
            if pid in (self.holder, self.runner):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                waiting.register(fd, select.POLLIN)
                left.add(fd)
        deadline = time.monotonic() + 1.0
        while left and time.monotonic() < deadline:
            with contextlib.suppress(InterruptedError):
                for fd, _ in waiting.poll((deadline - time.monotonic()) * 1000 + 1):
                    waiting.unregister(fd)
                    left.discard(fd)
        self.holder = self.runner = 0
        self.claimed = b""  # (a token take_over holds is of a cell that is gone now)
        self.purge()
        if self.protections.session_uids:
            # Nothing of the session can be left outside the subtree purge() cleaned, but we
            # make sure: every process of the session's memory cgroup (one file to read; no
            # process can leave it), else of its uid (a scan of all of /proc, several ms with
            # a few hundred processes).
            if _cgroup.members() is None:
                isolation.kill_uid(self.uid)
            else:
                me = os.getpid()
                self.retire(
                    kill_until_gone(lambda: [p for p in _cgroup.members() or () if p != me], 2000)
                )
        for pid in list(self.pidfds.values()):
            self.unwatch(pid)
        self.reap()

    # -- host channel

    def reply(self, message: proto.Message) -> None:
        """Send a result (``op`` is ``result``) or the close confirmation to the host. Results
        carry the request's id: the host drops replies to requests it gave up on."""
        if message.get("op") == "result":
            frame = proto.result_frame(
                self.rid if isinstance(self.rid, int) else 0,
                message["status"],
                message["stdout"],
                message["stderr"],
                message["stdout_truncated"],
                message["stderr_truncated"],
                message["duration"],
                message["state"],
                message["reason"],
            )
        else:
            frame = proto.CLOSED_FRAME
        with contextlib.suppress(OSError):
            self.host.sendall(frame)

    def ack(self, runner: int) -> None:
        """Tell ``runner`` that its cell's output is collected."""
        with contextlib.suppress(OSError):
            self.ctl.send(proto.encode({"op": "ack", "to": runner}))

    def shutdown(self, reply: bool = False) -> NoReturn:
        """End the session: kill everything, remove the work dir, confirm (``reply``), exit."""
        self.kill_everything()
        with contextlib.suppress(OSError):
            isolation.remove_workdir(self.workdir)
        if reply:
            self.reply({"op": "closed"})
        os._exit(0)

    def restart(self, notice: str) -> None:
        """Between cells: the session's state is gone. Start a fresh holder; the next cell's
        result says why (``notice``) and that the state was lost."""
        self.kill_everything()
        # a new channel too: the session may have shut its end down (every read then returns
        # nothing at once), and nothing queued on the old one is of interest
        self.poll.unregister(self.ctl.fileno())
        self.ctl.close()
        self.ctl_child.close()
        self.ctl, self.ctl_child = proto.control_channel()
        self.poll.register(self.ctl.fileno(), select.POLLIN)
        self.lost_notice = notice
        self.spawn_holder()
        self.send_assignment()

    def on_control(self) -> bool:
        """The host's requests on the control socket: ``reset``, and ``expire`` (noted for
        :meth:`~.cellwatch.CellWatch.overdue`). True after a reset."""
        assert self.control is not None
        try:
            data = self.control.recv(proto.MAX_PACKET)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:  # the host dropped it (it closes the session on the other socket)
            self.poll.unregister(self.control.fileno())
            self.control.close()
            self.control = None
            return False
        try:
            message = proto.decode(data)
        except ValueError:
            message = {}
        if message.get("op") == "reset":
            self.reset()
            return True
        if message.get("op") == "expire":
            self.expired = proto.checked_expire(message)
        return False

    def reset(self) -> None:
        """Hand the session to its next user (the host's pool of sessions): nothing of this one
        stays. Every process of the session is killed (its uid's too) and reaped, so its mount
        and IPC namespaces (work dir, ``/tmp``, ``/dev/shm``, System V objects) go with them;
        output left in the pipes is discarded; the holder's control channel and the host's
        session socket are new ones (what the old processes wrote into them is never read);
        the new holder is forked from this supervisor, which never ran user code, and makes
        fresh namespaces, exactly as a new session's. The host gets the new socket in the
        reply. Only the uid (the slot's), this process and its memory cgroup are kept."""
        self.running = None
        self.rid = None
        self.deadline = self.grace_deadline = self.died_wait = 0.0
        self.takeover_due = False
        self.kill_everything()
        with contextlib.suppress(OSError):
            isolation.remove_workdir(self.workdir)  # (with session_files it went already)
        self.watch_pipes(False)
        for stream in (self.out, self.err):  # every writer is dead: empty them
            with contextlib.suppress(OSError):
                while os.read(stream.fd, 1 << 16):
                    pass
        self.lost_notice = ""
        self.poll.unregister(self.ctl.fileno())
        self.ctl.close()
        self.ctl_child.close()
        self.ctl, self.ctl_child = proto.control_channel()
        self.poll.register(self.ctl.fileno(), select.POLLIN)
        self.poll.unregister(self.host.fileno())
        self.host.close()
        self.host, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.poll.register(self.host.fileno(), select.POLLRDHUP)
        self.spawn_holder()
        self.send_assignment()
        assert self.control is not None
        with contextlib.suppress(OSError):
            socket.send_fds(self.control, [proto.encode({"op": "reset"})], [theirs.fileno()])
        theirs.close()

    def check_deadline(self) -> None:
        """Act on the running cell's deadlines (timeout, soft interrupt's grace, death report)."""
        if self.running is None:
            return
        now = time.monotonic()
        if self.died_wait:
            if now >= self.died_wait:
                self.fail_running(self.runner, timed_out=False, status=None)
            return
        if self.grace_deadline:
            if now >= self.grace_deadline:
                self.fail_running(self.runner, timed_out=True)
            return
        if now >= self.deadline:
            if self.protect:
                self.fail_running(self.runner, timed_out=True)
            else:
                with contextlib.suppress(OSError):
                    os.kill(self.runner, signal.SIGUSR1)
                self.grace_deadline = now + SOFT_GRACE

    def serve(self) -> NoReturn:
        """The supervisor's event loop, until the host closes the session."""
        while True:
            timeout = None
            if self.running is not None:
                until = self.died_wait or self.grace_deadline or self.deadline
                if not self.pipes_watched:
                    until = min(until, self.next_drain)
                timeout = max(0.0, until - time.monotonic()) * 1000 + 1
            try:
                events = self.poll.poll(timeout)
            except InterruptedError:
                events = []
            fds = {fd for fd, _ in events}
            if self.host.fileno() in fds:  # the host closed the session
                self.shutdown(reply=True)
            if self.control is not None and self.control.fileno() in fds and self.on_control():
                continue  # (a reset replaced the descriptors these events were about)
            watched = dict(self.pidfds)
            if self.ctl.fileno() in fds:
                self.on_ctl()
            for stream in (self.out, self.err):
                if stream.fd in fds and self.running is not None:
                    stream.read()
            if self.wake_r in fds:
                with contextlib.suppress(OSError):
                    os.read(self.wake_r, 4096)
                self.reap()
            if self.token.timer in fds:  # a cell runs past TAKEOVER: take it over
                with contextlib.suppress(OSError):
                    os.read(self.token.timer, 8)
                self.takeover_due = True
            for fd in fds:
                pid = self.pidfds.get(fd)
                # a pidfd closed and reused for another process meanwhile: not an exit
                if pid is not None and pid == watched.get(fd):
                    self.on_exit(pid)
            if self.takeover_due and self.running is None:
                # (after the previous cell's done, should both come in one wake-up)
                self.takeover_due = False
                self.take_over()
            if self.running is not None:
                self.drain_running()
            self.check_deadline()
            if self.expired is not None:  # (after the takeover: a cell we watch is no case)
                self.overdue(self.expired)
                self.expired = None


def supervisor_main(
    link: socket.socket, config: SandboxConfig, protections: isolation.Protections
) -> NoReturn:
    """A spare supervisor: fork the holder ahead of time, wait for a session, then serve it."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_DUMPABLE, 0)
    supervisor = Supervisor(config, protections)
    supervisor.spawn_holder()
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(link, proto.MAX_PACKET, 2)
            break
        except InterruptedError:
            continue
    if not data or not fds:
        supervisor.kill_everything()
        os._exit(0)
    request = proto.decode(data)
    link.close()
    supervisor.assign(
        socket.socket(fileno=fds[0]),
        int(request["slot"]),
        bool(request["protect"]),
        socket.socket(fileno=fds[1]) if len(fds) > 1 else None,
    )
    if os.environ.get("TIR_AGENT_SANDBOX_PROFILE"):
        layout.profile(supervisor)
    supervisor.serve()
