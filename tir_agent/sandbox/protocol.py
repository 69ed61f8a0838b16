"""Wire messages between the host, the template (zygote) and the session processes.

Three channels, all Unix sockets:

* host <-> template: ``SOCK_SEQPACKET``, one JSON object per packet; the reply to ``new`` carries
  the host's end of the new session's channel as an ``SCM_RIGHTS`` file descriptor.
* host <-> session supervisor: ``SOCK_STREAM``, frames of a 4-byte big-endian length and a JSON
  object (results may be large).
* supervisor <-> holder/runner: ``SOCK_SEQPACKET``, one JSON object per packet, each tagged with the
  sender's pid (``pid``) or the addressed runner's pid (``to``).

This module stays free of heavy imports: it is loaded by the template before forking.
"""

from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct(">I")
"""Length prefix of a stream frame."""

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


def frame(message: Message) -> bytes:
    """One length-prefixed stream frame."""
    body = encode(message)
    return HEADER.pack(len(body)) + body


def unframe(buffer: bytearray) -> list[Message]:
    """Pop every complete frame from the front of ``buffer``."""
    out: list[Message] = []
    while len(buffer) >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer)
        if len(buffer) < HEADER.size + size:
            break
        out.append(decode(bytes(buffer[HEADER.size : HEADER.size + size])))
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
