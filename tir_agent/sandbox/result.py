"""The value every code execution produces, whatever happened to the code."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

ExecutionStatus = Literal["completed", "error", "timeout"]
"""``completed``: ran to the end; ``error``: raised or crashed; ``timeout``: stopped at the limit."""

StateOutcome = Literal["kept", "rolled_back", "lost"]
"""What the session's state is after this execution.

``kept``: the effects of this execution are in the session (normal case, also after an exception).
``rolled_back``: the session is exactly as it was before this execution (timeout or crash with
state protection on). ``lost``: the interpreter had to be restarted; the session starts empty.
"""


class ExecutionResult(BaseModel):
    """The outcome of running one cell. User-code failures are results, never exceptions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: ExecutionStatus
    """How the execution ended."""
    stdout: str = ""
    """Standard output (with the echoed value of a final bare expression), already capped."""
    stderr: str = ""
    """Standard error: tracebacks, warnings, timeout and crash notices, already capped."""
    duration: float = 0.0
    """Wall-clock seconds the cell ran, measured in the sandbox."""
    stdout_truncated: bool = False
    """``stdout`` was cut at ``max_output_characters`` and ends with ``<output cut>``."""
    stderr_truncated: bool = False
    """``stderr`` was cut at ``max_output_characters`` and ends with ``<output cut>``."""
    state: StateOutcome = "kept"
    """What the session's state is after this execution (see :data:`StateOutcome`)."""
    reason: str | None = None
    """Why a non-completed execution ended: ``exception``, ``timeout``, ``exit``, ``crash``,
    ``memory``, ``output`` ... ``None`` when completed."""

    @property
    def truncated(self) -> bool:
        """Whether either stream was cut."""
        return self.stdout_truncated or self.stderr_truncated
