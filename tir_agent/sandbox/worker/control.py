"""The supervisor's half that reads the session's control channel: the messages holders and
runners send (``ready``, ``holder``, ``done``, ``died``) and what each may say when.

The sender of each message is who the kernel says it is (``SCM_CREDENTIALS``), never a pid in
the message; anything the protocol does not allow from that sender at that moment can only come
from user code (it holds the same descriptor as its runner) and ends the session's interpreter
(see docs/sandbox.md, "Trust between the sandbox's processes").
"""

from __future__ import annotations

import os
import socket
import time

from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.worker.cellwatch import CellWatch
from tir_agent.sandbox.worker.layout import DEBUG, debug
from tir_agent.sandbox.worker.procs import parent
from tir_agent.sandbox.worker.verdicts import forged_text


class ControlMessages(CellWatch):
    """Acting on the session's control messages (:class:`~.supervisor.Supervisor` provides the
    channel and the restart)."""

    ctl: socket.socket
    """The supervisor's end of the session's control channel."""
    fresh: bool
    """The holder has not run a cell: its state is a fresh interpreter."""

    def take_over(self) -> None:
        """The takeover timer fired: take the running cell's token, if its runner has not.
        Which process runs it is learnt first: everything the session's processes sent before
        the record was written is in the channel now (protected mode: the runner that
        committed the previous cell and the new runner, whose ``holder`` and ``ready`` would
        otherwise arrive while this cell counts as theirs)."""
        self.claimed = self.token.take()
        if not self.claimed:
            return
        self.on_ctl()
        record, self.claimed = self.claimed, b""
        if record and self.running is None:
            self.begin(self.token.request_of(record) or self.token.default_request())

    def on_ctl(self) -> None:
        """Messages of the session's processes. The sender is who the kernel says it is
        (``SCM_CREDENTIALS``), never a pid in the message; anything the protocol does not allow
        from that sender at that moment ends the session's interpreter (:meth:`forged`)."""
        while True:
            try:
                data, ancdata, _, _ = self.ctl.recvmsg(proto.MAX_PACKET, proto.CREDENTIALS_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sender = proto.sender_pid(ancdata)
            try:
                message = proto.decode(data)
            except ValueError:
                message = {}
            # sent by a process we have dealt with (e.g. a runner killed meanwhile): stale;
            # unless its number was reused by the holder's next runner
            if (
                sender in self.retired
                and sender not in (self.holder, self.runner)
                and (
                    message.get("op") != "ready" or parent(sender) not in (self.holder, os.getpid())
                )
            ):
                continue
            if DEBUG:
                debug(
                    f"{time.monotonic():.4f} ctl {sender} {message} {self.holder=} {self.runner=}"
                )
            if not self.on_message(sender, message):
                if DEBUG:
                    debug(f"forged by {sender}: parent {parent(sender)} {self.running=}")
                self.forged()

    def on_message(self, sender: int, message: proto.Message) -> bool:
        """Act on one control message from ``sender``; False if the protocol does not allow it
        (only user code sends such a thing: it holds the same descriptor as its runner)."""
        op = message.get("op")
        holder, runner, running = self.holder, self.runner, self.running
        if op == "ready":  # a runner introduces itself
            if not self.protect:
                return sender == holder  # the holder is the runner (no-op)
            # a fork of the holder, or one the supervisor inherited (its holder is gone), or
            # one already gone itself (a cell that ends the runner at once: the holder reaps
            # it before we read this, then reports its exit; a dead process can do no harm)
            if sender == holder:  # a new holder runs its session's first cell itself, once
                if not self.fresh or running is not None or runner:
                    return False
                self.fresh = False
                self.runner = sender
                return True
            up = parent(sender)
            if running is not None or up not in (holder, os.getpid(), 0):
                return False
            if runner and runner != holder:
                self.unwatch(runner)
            self.runner = sender
            self.watch(sender)
            return True
        if op == "holder" and self.protect:  # a cell committed, the sender holds the state
            if sender != holder and (sender != runner or running is not None):
                return False
            self.holder, self.runner = sender, 0 if sender == runner else runner
            # the first cell since a restart was answered, with the notice: it is told
            self.lost_notice = ""
            return True
        if op == "done":
            if sender != runner or not proto.valid_done(message):
                return False
            if running is None and "record" in message:
                # the runner won the token but the cell left processes behind (or the cell
                # took the token itself, or take_over has it and reads this first): sweep,
                # collect and answer
                record = proto.RECORD.pack(*message["record"])
                if self.claimed[: len(record)] == record:
                    self.claimed = b""
                self.begin(self.token.request_of(record) or self.token.default_request())
            if self.running is not None and self.running.get("rid") == 0:
                # we took the cell over by a record the cell garbled: the runner knows its id
                self.running["rid"] = self.rid = message["rid"]
            if self.running is None or message.get("rid") != self.running.get("rid"):
                return False
            self.finish_done(message)
            return True
        if op == "died" and self.protect:  # the holder reports its runner's exit status
            pid, status = message.get("pid"), message.get("status")
            if sender != holder or type(pid) is not int or type(status) is not int:
                return False
            if running is None and pid == runner:
                self.adopt()  # it died in a short cell, before the supervisor took it over
            if self.running is not None and pid == runner:
                self.fail_running(pid, timed_out=False, status=status)
            return True  # (about a runner already dealt with: nothing to do)
        return False

    def forged(self) -> None:
        """The session wrote something to the control channel that its runner or holder would
        not: end its interpreter (every process of the session) and start a fresh one. The
        running cell, or else the next one, reports the state as lost."""
        if DEBUG:
            debug("forged control message")
        uncertain = self.running is None and self.adopt()  # a short cell the runner runs
        if self.running is not None:
            then = forged_text(during=False) if uncertain else ""
            self.unsure = False  # (the forgery is the reason given)
            self.fail_running(self.runner, timed_out=False, forged=True, then=then)
        else:
            self.restart(forged_text(during=False))
