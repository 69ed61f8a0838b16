"""Progress of a batch run: a rich bar on a terminal, plain lines in logs and pipes."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

__all__ = ["PlainProgress", "Progress", "RichProgress", "make_progress"]


class Progress(Protocol):
    """Receives the progress of a batch run."""

    def start(self, total: int, done: int) -> None:
        """``total`` samples, of which ``done`` were finished by an earlier run."""

    def update(self, record: Mapping[str, Any]) -> None:
        """One sample finished."""

    def close(self) -> None:
        """The run ended (or stopped)."""


@dataclass
class _Counts:
    total: int = 0
    done: int = 0
    new: int = 0
    executions: int = 0
    timeouts: int = 0
    errors: int = 0
    cost: float | None = None
    started: float = field(default_factory=time.monotonic)

    def add(self, record: Mapping[str, Any]) -> None:
        self.done += 1
        self.new += 1
        self.executions += int(record.get("code_rounds_executed") or 0)
        self.timeouts += int(record.get("num_code_timeouts") or 0)
        self.errors += record.get("error") is not None
        if isinstance(cost := record.get("cost"), int | float):
            self.cost = (self.cost or 0.0) + cost

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.new / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = self.total - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        spent = "" if self.cost is None else f", ${self.cost:.4f} spent"
        return (
            f"{self.done}/{self.total} samples, {rate:.1f}/s, ETA {eta}, "
            f"{self.executions} executions, {self.timeouts} timeouts, {self.errors} errors{spent}"
        )


class PlainProgress:
    """Progress as plain lines (for logs and pipes): at most one line every ``interval`` s."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.counts = _Counts()
        self._last = 0.0

    def start(self, total: int, done: int) -> None:
        self.counts = _Counts(total=total, done=done)
        self._last = time.monotonic()
        resumed = f" ({done} already done)" if done else ""
        print(f"generate: {total} samples{resumed}", file=self.stream, flush=True)

    def update(self, record: Mapping[str, Any]) -> None:
        self.counts.add(record)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            print(f"generate: {self.counts.line()}", file=self.stream, flush=True)

    def close(self) -> None:
        print(f"generate: {self.counts.line()}", file=self.stream, flush=True)


class RichProgress:
    """A live progress bar with rate, ETA, executions, timeouts and errors (for terminals)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.counts = _Counts()
        self._bar = Progress(
            TextColumn("generate"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=Console(file=stream if stream is not None else sys.stderr),
        )
        self._task = self._bar.add_task("generate", total=None, rate="", stats="")

    def start(self, total: int, done: int) -> None:
        self.counts = _Counts(total=total, done=done)
        self._bar.update(self._task, total=total, completed=done)
        self._bar.start()

    def update(self, record: Mapping[str, Any]) -> None:
        self.counts.add(record)
        c = self.counts
        stats = f"exec {c.executions} · timeouts {c.timeouts} · errors {c.errors}"
        if c.cost is not None:
            stats += f" · ${c.cost:.4f}"
        self._bar.update(self._task, completed=c.done, rate=f"{c.rate():.1f}/s", stats=stats)

    def close(self) -> None:
        self._bar.stop()


class _NoProgress:
    def start(self, total: int, done: int) -> None:
        pass

    def update(self, record: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(stream: TextIO | None = None, *, enabled: bool = True) -> Progress:
    """A rich bar on a terminal, plain lines otherwise, nothing when disabled."""
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        return _NoProgress()
    if stream.isatty():
        return RichProgress(stream)
    return PlainProgress(stream)
