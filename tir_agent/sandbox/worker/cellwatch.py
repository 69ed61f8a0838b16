"""The cell a supervisor watches: its output, its deadlines, and the result it gets.

A cell is *running* (watched by the supervisor) from the supervisor's takeover, a ``done``
handing it over, the runner's death or the host's ``expire``, until its runner's ``done``, its
timeout, or its runner's death; :meth:`CellWatch.finish_done` and :meth:`CellWatch.fail_running`
turn each of these into the one result the host gets, with the state kept, rolled back
(protected mode: the holder still has the state from before the cell, or the cell was a new
holder's first and a fresh interpreter is that state) or lost. A short cell that ends normally
is never watched: its runner answers it (see :class:`~.direct.Direct`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import time

from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.worker.layout import DEBUG, DRAIN_INTERVAL, F_SETPIPE_SZ, PIPE_SIZE, debug
from tir_agent.sandbox.worker.output import Stream
from tir_agent.sandbox.worker.processes import SessionProcesses
from tir_agent.sandbox.worker.procs import alive, children
from tir_agent.sandbox.worker.token import Token
from tir_agent.sandbox.worker.verdicts import describe_exit, forged_text, join


class CellWatch(SessionProcesses):
    """The running cell of a session and the results it ends with (the supervisor's half that
    deals with cells; :class:`~.supervisor.Supervisor` adds the channels)."""

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__()
        self.config = config
        self.protect = True
        out_r, self.out_w = os.pipe()
        err_r, self.err_w = os.pipe()
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
        for fd in (out_r, err_r):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        self.pipes_watched = False
        self.next_drain = 0.0
        self.drain_interval = DRAIN_INTERVAL
        self.out = Stream(out_r)
        self.err = Stream(err_r)
        self.token = Token(config)
        self.running: proto.Message | None = None  # sent to the runner
        self.deadline = 0.0
        self.grace_deadline = 0.0
        self.died_wait = 0.0
        self.started = 0.0
        self.rid: object = None
        self.claimed = b""
        """The token ``take_over`` took, until it knows which runner's cell that is."""
        self.expired: proto.Message | None = None
        """The host's ``expire`` (see :meth:`overdue`), until the event loop acts on it."""
        self.unsure = False
        """The runner died while it answered the running cell itself (see :meth:`adopt`): the
        host may have that answer, so the state is restarted and the next cell says why."""
        self.lost_notice = ""
        """Why the session's interpreter was restarted between cells (reported with the next
        cell's result, then cleared; in fast mode it goes to the new holder with its assignment)."""

    # -- what the supervisor provides

    def reply(self, message: proto.Message) -> None:
        """Send a result to the host."""
        raise NotImplementedError

    def ack(self, runner: int) -> None:
        """Tell ``runner`` that its cell's output is collected (it waits for that)."""
        raise NotImplementedError

    def kill_everything(self) -> None:
        """Kill every process of the session."""
        raise NotImplementedError

    def restart(self, notice: str) -> None:
        """Start a fresh interpreter; the next result says why (``notice``)."""
        raise NotImplementedError

    # -- the running cell

    def begin(self, request: proto.Message) -> None:
        """The runner started a cell: capture its output, start the clock."""
        self.rid = request.get("rid")
        cap = int(request["cap"])
        self.out.start(proto.byte_budget(cap))
        self.err.start(proto.byte_budget(cap))
        self.running = request
        self.started = float(request.get("start") or time.monotonic())
        # While the cell runs, output is drained on a timer instead of on every write: a cell
        # costs one supervisor wake-up (its end) instead of one more per print.
        self.watch_pipes(False)
        self.drain_interval = DRAIN_INTERVAL
        self.next_drain = self.started + DRAIN_INTERVAL
        self.deadline = self.started + float(request["timeout"])
        self.grace_deadline = self.died_wait = 0.0
        self.unsure = False

    def watch_pipes(self, on: bool) -> None:
        if on != self.pipes_watched:
            for stream in (self.out, self.err):
                if on:
                    self.poll.register(stream.fd, select.POLLIN)
                else:
                    self.poll.unregister(stream.fd)
            self.pipes_watched = on

    def drain_running(self) -> None:
        """Timer-driven draining of a running cell's output; a flood switches to draining on
        every write."""
        now = time.monotonic()
        if self.pipes_watched or now < self.next_drain:
            return
        got = self.out.drain() + self.err.drain()
        if got >= PIPE_SIZE // 2:
            self.watch_pipes(True)
        # quiet cells (long computations) are checked less and less often
        self.drain_interval = DRAIN_INTERVAL if got else min(2 * self.drain_interval, 0.1)
        self.next_drain = now + self.drain_interval

    def collect(self, cap: int) -> tuple[str, bool, str, bool]:
        self.watch_pipes(False)
        self.out.drain()
        self.err.drain()
        stdout, out_cut = self.out.text(cap)
        stderr, err_cut = self.err.text(cap)
        return stdout, out_cut, stderr, err_cut

    def finish_done(self, message: proto.Message) -> None:
        assert self.running is not None
        request, self.running = self.running, None
        self.died_wait = 0.0
        cap = int(request["cap"])
        stdout, out_cut, stderr, err_cut = self.collect(cap)
        status = message.get("status", "error")
        if status == "timeout":
            stderr = join(stderr, proto.timeout_text(float(request["timeout"])))
        previous = self.holder
        if self.protect:
            self.holder = self.runner  # the runner committed and is the holder now
            self.runner = 0
        # Processes the cell started do not outlive it. This happens before the reply: once the
        # host has it, the session moves on without us (the next runner reads the host socket).
        # The old holder is no stray: the committed runner kills it.
        ignore = (previous,) if self.protect else ()
        orphans = [p for p in self.strays() if p not in ignore]
        if not self.protect and message.get("children"):
            orphans += children(self.runner)
        if orphans:
            self.purge(tuple(orphans), ignore=ignore)
        # the interpreter was restarted before this cell: protected mode keeps the notice here,
        # in fast mode the runner had it (with its assignment) and sends it along
        lost = self.lost_notice if self.protect else str(message.get("lost") or "")
        self.lost_notice = ""
        state = "kept"
        if lost:
            state, stderr = "lost", join(stderr, lost)
            if self.config.state_notes:
                stderr += proto.LOST_NOTE
        self.reply(
            {
                "op": "result",
                "status": status,
                "stdout": stdout,
                "stderr": stderr,
                "stdout_truncated": out_cut,
                "stderr_truncated": err_cut,
                "duration": float(message.get("duration", 0.0)),
                "state": state,
                "reason": message.get("reason"),
            }
        )
        if message.get("wait"):
            self.ack(self.holder if self.protect else self.runner)

    def fail_running(
        self,
        runner: int,
        *,
        timed_out: bool,
        status: int | None = None,
        forged: bool = False,
        then: str = "",
    ) -> None:
        """The runner timed out (and is to be killed), died, or its session wrote to the
        control channel (``forged``: the whole session goes): report, restore a runner.
        ``then``: the runner may have answered this cell itself before it died (the host keeps
        the first answer), so the next cell reports the loss too, with this line."""
        assert self.running is not None
        request, self.running = self.running, None
        self.died_wait = 0.0
        cap = int(request["cap"])
        duration = time.monotonic() - self.started
        keep = not forged and not self.unsure
        if self.unsure and not then:
            then = describe_exit(status, during=False)[0]
        self.unsure = False
        # The holder ran the session's first cell itself (holder.py): the state before the
        # cell was a fresh interpreter, and a new holder (the restart below) is that state again.
        fresh = self.protect and keep and runner == self.holder
        if self.protect and keep:
            self.purge((runner,))
            self.token.reset()  # the cell's record and timer (nobody else may use them now)
        else:
            self.kill_everything()
        stdout, out_cut, stderr, err_cut = self.collect(cap)
        self.unwatch(runner)
        if self.runner == runner:
            self.runner = 0
        # the state from before the cell is still there (or, fresh, is made again)
        restorable = fresh or (self.protect and keep and self.holder != 0 and alive(self.holder))
        if timed_out:
            notice, reason, result_status = (
                proto.timeout_text(float(request["timeout"])),
                "timeout",
                "timeout",
            )
        elif forged:
            notice, reason, result_status = forged_text(during=True), "crash", "error"
        else:
            notice, reason = describe_exit(status)
            result_status = "error"
        # a restart before this cell (protected mode) was not reported yet: it is now
        notice = join(self.lost_notice, notice) if self.lost_notice else notice
        if restorable and not self.lost_notice:
            state, note = "rolled_back", proto.ROLLED_BACK_NOTE
        elif restorable:
            state, note = "lost", proto.LOST_NOTE
            self.lost_notice = ""
        else:
            state, note = "lost", proto.LOST_NOTE
            self.restart(then)
        if fresh:
            self.restart("")
        stderr = join(stderr, notice)
        if self.config.state_notes:
            stderr += note
        self.reply(
            {
                "op": "result",
                "status": result_status,
                "stdout": stdout,
                "stderr": stderr,
                "stdout_truncated": out_cut,
                "stderr_truncated": err_cut,
                "duration": duration,
                "state": state,
                "reason": reason,
            }
        )

    def overdue(self, request: proto.Message) -> None:
        """The host has had no answer to its request well past the cell's timeout (see
        ``LocalSession.run``) and we watch no cell: the runner runs one we never heard of (its
        cell took the token out of the pipe or disarmed the takeover timer). Time it out now,
        as if we had watched it from the start: the runner is killed, and in protected mode
        the holder still has the state from before the cell."""
        if self.running is not None or not self.runner:
            return  # we watch a cell (our own deadline applies), or no runner has one
        if DEBUG:
            debug(f"overdue {request} runner={self.runner}")
        timeout = float(request["timeout"])
        self.begin({**request, "start": time.monotonic() - timeout})
        self.fail_running(self.runner, timed_out=True)

    def on_exit(self, pid: int) -> None:
        """A watched process (holder or runner) ended."""
        if DEBUG:
            debug(f"exit {pid} holder={self.holder} runner={self.runner}")
        self.unwatch(pid)
        self.reap()
        if self.running is None and pid == self.runner:
            self.adopt()  # it died in a short cell, before the supervisor took it over
        if self.running is not None and pid == self.runner:
            if self.protect and self.holder and alive(self.holder):
                self.died_wait = time.monotonic() + 1.0  # the holder reports the exit status
            else:
                status = self.statuses.pop(pid, None)
                self.fail_running(pid, timed_out=False, status=status)
            return
        if self.running is None and pid in (self.holder, self.runner):
            others = [p for p in (self.holder, self.runner) if p and p != pid]
            if self.protect and any(alive(p) for p in others):
                return  # the other one holds the state (e.g. the runner forked for the next cell)
            # the state is gone between cells (a thread of the last cell called os._exit,
            # crashed, or a stray process killed it): start over, and say so with the next cell
            status = self.exit_status(self.holder) if self.holder else None
            if DEBUG:
                debug(f"gone between cells: {pid} holder={self.holder} status={status}")
            self.restart(describe_exit(status, during=False)[0])

    def adopt(self) -> bool:
        """The runner is dying or about to be killed: take over the cell it runs, if any (its
        record is in the token pipe; or in the shared page while the runner answers it: then
        True and :attr:`unsure`, the host may already have the runner's answer)."""
        # garbage in the pipe (written by a thread between cells) is no cell; a record
        # take_over holds (it reads the channel before it watches the cell) is this cell's
        request = self.token.request_of(self.claimed or self.token.take())
        self.claimed = b""
        uncertain = False
        if request is None:
            request = self.token.answering()
            uncertain = request is not None
        if request is not None:
            self.begin(request)
            self.unsure = uncertain
        return uncertain
