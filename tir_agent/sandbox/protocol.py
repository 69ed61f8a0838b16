"""Wire messages between the host, the template (zygote) and the session processes.

Three channels, all Unix sockets:

* host <-> template: ``SOCK_SEQPACKET``, one JSON object per packet; the reply to ``new`` carries
  the host's end of the new session's channel as an ``SCM_RIGHTS`` file descriptor.
* host <-> session: ``SOCK_STREAM``, frames of a 4-byte big-endian length and a fixed binary body
  (:func:`run_frame`, :func:`result_frame`; results may be large). Requests are read by the
  session's runner, replies come from the runner (a cell that ended normally and quickly) or
  the supervisor (everything else).
* supervisor <-> holder/runner: ``SOCK_SEQPACKET``, one JSON object per packet (the control
  channel, :func:`control_channel`). Every process of the session holds the session's end, so
  user code can write anything there: the supervisor learns who sent a packet from the kernel
  (:func:`sender_pid`), never from its ``pid`` field, and checks every field
  (:func:`valid_done`). Replies name the addressed runner (``to``).

This module stays free of heavy imports: it is loaded by the template before forking.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import struct
from typing import Any, Literal

from tir_agent.errors import ConfigError

HEADER = struct.Struct(">I")
"""Length prefix of a host <-> session frame."""

MAX_PACKET = 1 << 22
"""Largest packet read from a ``SOCK_SEQPACKET`` channel (code of one cell must fit)."""

Message = dict[str, Any]


def encode(message: Message) -> bytes:
    """One JSON packet."""
    return json.dumps(message, separators=(",", ":")).encode()


def decode(data: bytes) -> Message:
    """Inverse of :func:`encode`; raises ``ValueError`` on anything but a JSON object."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("protocol message is not an object")
    return value


CREDENTIALS = struct.Struct("=iII")
"""``struct ucred``: pid, uid, gid of the sender of a packet (``SCM_CREDENTIALS``)."""
CREDENTIALS_SPACE = socket.CMSG_SPACE(CREDENTIALS.size)
"""Ancillary room for the sender's credentials only: descriptors a cell sends along
(``SCM_RIGHTS``) do not fit, so the kernel closes them instead of installing them."""


def control_channel() -> tuple[socket.socket, socket.socket]:
    """A supervisor's control channel: its end (non-blocking, with the senders' credentials)
    and the session's (fd 3 of holders and runners)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (ours, theirs):
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_PACKET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MAX_PACKET)
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return ours, theirs


def sender_pid(ancdata: list[tuple[int, int, bytes]]) -> int:
    """The pid of a packet's sender as the kernel filled it in (``recvmsg`` with
    :data:`CREDENTIALS_SPACE` on a ``SO_PASSCRED`` socket); 0 if there is none."""
    for level, kind, payload in ancdata:
        is_credentials = (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
        if is_credentials and len(payload) >= CREDENTIALS.size:
            return int(CREDENTIALS.unpack_from(payload)[0])
    return 0


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def checked_expire(message: Message) -> Message | None:
    """The host's ``expire`` (``rid``, ``timeout``, ``cap`` of a request it has had no answer
    to) if its fields are valid, else None."""
    rid, cap, timeout = message.get("rid"), message.get("cap"), message.get("timeout")
    if type(rid) is not int or type(cap) is not int or rid <= 0 or cap < 0:
        return None
    if not _number(timeout) or not 0 < timeout < 1e9:  # type: ignore[operator]
        return None
    return {"rid": rid, "cap": cap, "timeout": float(timeout)}  # type: ignore[arg-type]


def valid_done(message: Message) -> bool:
    """Whether a runner's ``done`` has the fields and values a runner sends."""
    record = message.get("record")
    if record is not None:
        if not isinstance(record, list):
            return False
        try:
            RECORD.pack(*record)
        except (struct.error, TypeError):
            return False
    lost = message.get("lost", "")
    return (
        type(message.get("rid")) is int
        and message.get("status") in STATUSES
        and message.get("reason") in REASONS
        and _number(message.get("duration"))
        and isinstance(lost, str)
        and len(lost) <= 1000
    )


RUN = struct.Struct(">QdQB")
"""Body of a run request after the header: request id, timeout (s), output cap, cell mode
(:func:`cell_mode`); the code follows."""

TracebackVerbosity = Literal["Plain", "Context", "Verbose", "Minimal"]
"""IPython's traceback modes, as NeMo-Skills' ``traceback_verbosity`` names them."""
TRACEBACK_VERBOSITIES: tuple[TracebackVerbosity, ...] = ("Plain", "Context", "Verbose", "Minimal")


def check_cell_options(ipython: bool, traceback_verbosity: str | None) -> None:
    """Refuse (:class:`~tir_agent.errors.ConfigError`) a ``traceback_verbosity`` without
    ``ipython`` or one IPython does not know: the checks of ``run`` in every session class."""
    if traceback_verbosity is not None and not ipython:
        raise ConfigError(
            "traceback_verbosity applies to IPython cells only: pass ipython=True as well"
        )
    if traceback_verbosity not in (None, *TRACEBACK_VERBOSITIES):
        raise ConfigError(
            f"traceback_verbosity {traceback_verbosity!r} is not one of "
            f"{', '.join(TRACEBACK_VERBOSITIES)}"
        )


def cell_mode(ipython: bool, traceback_verbosity: str = "Plain") -> int:
    """The mode byte of a run request: 0 runs the cell as plain Python (tir-agent's semantics),
    1-4 through IPython with a traceback verbosity (NeMo-Skills' ``ipython`` semantics)."""
    if not ipython:
        return 0
    return 1 + TRACEBACK_VERBOSITIES.index(traceback_verbosity)


RESULT = struct.Struct(">cQBBBBdQQ")
"""Body of a reply: kind (``R`` result, ``C`` closed), request id (0: none), status, state, reason,
flags (1: stdout cut, 2: stderr cut), duration, and the byte lengths of stdout and stderr (their
UTF-8 follows)."""

STATUSES = ("completed", "error", "timeout")
STATES = ("kept", "rolled_back", "lost")
REASONS = (None, "exception", "exit", "memory", "crash", "timeout", "output")

_STATUS_CODES = {name: code for code, name in enumerate(STATUSES)}
_STATE_CODES = {name: code for code, name in enumerate(STATES)}
_REASON_CODES = {name: code for code, name in enumerate(REASONS)}

RECORD = struct.Struct("=QQdd")
"""Fast mode: a running cell as the runner announces it on the token pipe: request id, cap,
timeout, start (``time.monotonic()``). Whoever reads it first answers the host for that cell."""
ZERO_RECORD = bytes(RECORD.size)
"""The shared page's record when no answer is in flight."""


def run_frame(rid: int, timeout: float, cap: int, code: str, mode: int = 0) -> bytes:
    """A run request as the host sends it (``mode``: :func:`cell_mode`)."""
    body = code.encode("utf-8", "surrogatepass")
    return HEADER.pack(RUN.size + len(body)) + RUN.pack(rid, timeout, cap, mode) + body


def parse_run(body: bytes) -> tuple[int, float, int, int, str]:
    """Inverse of :func:`run_frame` (without the header): ``(rid, timeout, cap, mode, code)``."""
    if len(body) < RUN.size:
        raise ValueError("short run request")
    rid, timeout, cap, mode = RUN.unpack_from(body)
    if mode > len(TRACEBACK_VERBOSITIES):
        raise ValueError("unknown cell mode")
    return rid, timeout, cap, mode, body[RUN.size :].decode("utf-8", "surrogatepass")


def result_frame(
    rid: int,
    status: str,
    stdout: str,
    stderr: str,
    stdout_truncated: bool,
    stderr_truncated: bool,
    duration: float,
    state: str,
    reason: str | None,
) -> bytes:
    """One execution result (the fields of :class:`~tir_agent.sandbox.result.ExecutionResult`).
    Values outside the protocol (a status a cell forged in a ``done`` message) become
    ``error``/``lost``/``crash`` instead of failing the supervisor."""
    out = stdout.encode()
    err = stderr.encode()
    head = RESULT.pack(
        b"R",
        rid,
        _STATUS_CODES.get(status, 1),
        _STATE_CODES.get(state, 2),
        _REASON_CODES.get(reason, 4),
        int(stdout_truncated) | 2 * int(stderr_truncated),
        duration,
        len(out),
        len(err),
    )
    return HEADER.pack(len(head) + len(out) + len(err)) + head + out + err


CLOSED_FRAME = HEADER.pack(RESULT.size) + RESULT.pack(b"C", 0, 0, 0, 0, 0, 0.0, 0, 0)
"""The supervisor's confirmation that a session is closed."""


def parse_reply(body: bytes) -> tuple[int | None, dict[str, Any] | None]:
    """Inverse of :func:`result_frame` / :data:`CLOSED_FRAME` (without the header):
    ``(rid or None, fields)``, fields ``None`` for *closed*. Checks every field, so the fields
    are a valid :class:`~tir_agent.sandbox.result.ExecutionResult`; raises ``ValueError`` on
    anything else (a cell that writes garbage into its session socket)."""
    if len(body) < RESULT.size:
        raise ValueError("short reply")
    kind, rid, status, state, reason, flags, duration, n_out, n_err = RESULT.unpack_from(body)
    if kind == b"C" and len(body) == RESULT.size:
        return None, None
    if (
        kind != b"R"
        or len(body) != RESULT.size + n_out + n_err
        or status >= len(STATUSES)
        or state >= len(STATES)
        or reason >= len(REASONS)
        or flags > 3
        or not math.isfinite(duration)
    ):
        raise ValueError("malformed reply")
    end = RESULT.size + n_out
    return rid or None, {
        "status": STATUSES[status],
        "stdout": body[RESULT.size : end].decode(),
        "stderr": body[end:].decode(),
        "duration": duration,
        "stdout_truncated": bool(flags & 1),
        "stderr_truncated": bool(flags & 2),
        "state": STATES[state],
        "reason": REASONS[reason],
    }


def reply_limit(cap: int) -> int:
    """The largest reply body a session sends for a request with output cap ``cap``: both
    streams at their byte budget, the cut markers and the notices (with room to spare)."""
    return RESULT.size + 2 * byte_budget(cap) + (1 << 16)


def unframe_bodies(buffer: bytearray, limit: int | None = None) -> list[bytes]:
    """Pop every complete frame's body from the front of ``buffer``. A frame announcing more
    than ``limit`` bytes raises ``ValueError`` as soon as its header is there (a cell writing
    into its session socket must not make the host buffer gigabytes)."""
    out: list[bytes] = []
    while len(buffer) >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer)
        if limit is not None and size > limit:
            raise ValueError(f"a reply of {size} bytes announced (at most {limit} expected)")
        if len(buffer) < HEADER.size + size:
            break
        out.append(bytes(buffer[HEADER.size : HEADER.size + size]))
        del buffer[: HEADER.size + size]
    return out


def format_seconds(seconds: float) -> str:
    """A timeout as configured: ``10`` for 10.0, ``1.5`` for 1.5."""
    value = float(seconds)
    return str(int(value)) if value.is_integer() else repr(value)


def timeout_text(seconds: float) -> str:
    """The timeout line of REFERENCE.md §5."""
    return f"Execution timed out after {format_seconds(seconds)} seconds\n"


ROLLED_BACK_NOTE = (
    "The session's state was restored to what it was before this execution; "
    "changes made by this execution were not kept.\n"
)
LOST_NOTE = "The Python session was restarted; all variables were lost.\n"
CUT_MARKER = "<output cut>"


def cap_text(text: str, limit: int) -> tuple[str, bool]:
    """``text[:limit] + "<output cut>"`` when longer than ``limit`` characters."""
    if len(text) > limit:
        return text[:limit] + CUT_MARKER, True
    return text, False


def byte_budget(limit: int) -> int:
    """Bytes to keep of a stream so that ``limit + 1`` characters are surely decodable."""
    return 4 * (limit + 1) + 16
