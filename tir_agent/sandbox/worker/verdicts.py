"""The lines a result's stderr gets when a cell did not simply end: exits, crashes, forgeries."""

from __future__ import annotations

import os
import signal


def describe_exit(status: int | None, *, during: bool = True) -> tuple[str, str]:
    """(stderr line, reason) for an interpreter that died during a cell, or (``during`` False)
    between cells: after the previous cell returned, e.g. in a thread that cell started."""
    when = "during this execution" if during else "after the previous execution"
    if status is None or status < 0:
        return f"The interpreter died {when}.\n", "crash"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        at = "" if during else f" {when}"
        if sig == signal.SIGKILL:
            return (
                f"The interpreter was killed (signal {name}){at}, e.g. for using too much memory.\n",
                "crash",
            )
        return f"The interpreter crashed (signal {name}){at}.\n", "crash"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return f"The interpreter exited with code {code} {when}.\n", "exit"


def forged_text(during: bool) -> str:
    """The stderr line for a session that wrote to its supervisor's control channel."""
    when = "during this execution" if during else "after the previous execution"
    return f"The interpreter wrote to the sandbox's control channel {when}.\n"


def join(text: str, notice: str) -> str:
    """``notice`` after ``text``, on a line of its own."""
    if text and not text.endswith("\n"):
        text += "\n"
    return text + notice
