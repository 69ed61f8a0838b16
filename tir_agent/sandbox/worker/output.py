"""Reading a cell's output pipes with the output cap applied while reading."""

from __future__ import annotations

import os

from tir_agent.sandbox import protocol as proto


class Stream:
    """The read end of one output pipe (stdout or stderr of the session's cells).

    Bytes past the cell's budget are read and dropped, so printing 10^9 characters neither
    blocks the cell nor grows memory; :meth:`text` then applies the character cap.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self.budget = 0
        self.dropped = False
        self.capturing = False

    def start(self, budget: int) -> None:
        """Capture from now on, up to ``budget`` bytes."""
        # bytes written between cells (threads a fast-mode cell left running) count for this one
        self.data.clear()
        self.budget = budget
        self.dropped = False
        self.capturing = True

    def read(self) -> bool:
        """Read what is there; False at EOF."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        if self.capturing:
            room = self.budget - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            if len(chunk) > room:
                self.dropped = True
        return True

    def drain(self, *, discard: bool = False) -> int:
        """Read everything there is now; return how many bytes."""
        capturing = self.capturing
        total = 0
        if discard:
            self.capturing = False
        for _ in range(1024):
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            total += len(chunk)
            if self.capturing:
                room = self.budget - len(self.data)
                if room > 0:
                    self.data += chunk[:room]
                if len(chunk) > room:
                    self.dropped = True
            if len(chunk) < 1 << 16:  # a short read: the pipe is empty now (saves a syscall)
                break
        self.capturing = capturing
        return total

    def text(self, cap: int) -> tuple[str, bool]:
        """The captured output, capped at ``cap`` characters, and whether it was cut."""
        self.capturing = False
        text, cut = proto.cap_text(self.data.decode("utf-8", "backslashreplace"), cap)
        if self.dropped and not cut:
            text, cut = text[:cap] + proto.CUT_MARKER, True
        self.data.clear()
        return text, cut
