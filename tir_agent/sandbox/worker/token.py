"""The supervisor's side of the token that decides who answers a cell (see
:class:`~.direct.Direct`): the token pipe, the takeover timer and the shared page."""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import time

from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.worker import timers


class Token:
    """Who answers the running cell: the runner (it took the record out of the pipe) or the
    supervisor. A record the session garbled (only a cell writes such a thing) makes the
    supervisor supervise by the configured defaults."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.r, self.w = os.pipe2(os.O_NONBLOCK)
        self.timer = timers.timerfd()
        self.shm = mmap.mmap(-1, mmap.PAGESIZE)

    def reset(self) -> None:
        """Between holders: no record, no answer in flight, no timer."""
        with contextlib.suppress(OSError):
            while os.read(self.r, 4096):
                pass
        self.shm[: proto.RECORD.size] = proto.ZERO_RECORD
        timers.settime(self.timer, timers.itimerspec(0))

    def take(self) -> bytes:
        """Whatever is in the token pipe (empty if nothing)."""
        try:
            return os.read(self.r, 4096)
        except OSError:
            return b""

    def answering(self) -> proto.Message | None:
        """The request the runner is answering right now (its record in the shared page)."""
        if not any(self.shm[: proto.RECORD.size]):
            return None
        return self.request_of(bytes(self.shm[: proto.RECORD.size]))

    def request_of(self, record: bytes) -> proto.Message | None:
        """A cell's request from its record (the first one: whatever a cell wrote into the
        token pipe comes after); None for one the runner did not write (only a cell writes
        such a thing): the runner stamps it with the same clock, at most the cell's timeout
        (and the soft interrupt's grace) before anyone reads it."""
        record = record[: proto.RECORD.size]
        if len(record) == proto.RECORD.size:
            rid, cap, timeout, start = proto.RECORD.unpack(record)
            now = time.monotonic()
            if (
                0 < rid < 1 << 53
                and cap < 1 << 40
                and math.isfinite(timeout)
                and 0 < timeout < 1e9
                and now - timeout - 60 <= start <= now + 1
            ):
                return {"rid": rid, "cap": cap, "timeout": timeout, "start": start}
        return None

    def default_request(self) -> proto.Message:
        """What to supervise a cell by whose record a cell garbled (its own session only)."""
        return {
            "rid": 0,
            "cap": self.config.max_output_characters,
            "timeout": self.config.timeout,
            "start": time.monotonic(),
        }
