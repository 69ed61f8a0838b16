"""The session processes' ends of their channels: requests from the host socket, messages to
and from the supervisor (see :mod:`tir_agent.sandbox.protocol` for the wire format)."""

from __future__ import annotations

import contextlib
import os
import socket

from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.worker.layout import FD_HOST


def send(ctl: socket.socket, message: proto.Message) -> None:
    """One control message to the supervisor (lost if the channel is gone: we are then too)."""
    with contextlib.suppress(OSError):
        ctl.send(proto.encode(message))


class Frames:
    """Blocking reader of length-prefixed frames from the host socket. It never reads ahead: a
    runner that is killed must not take the next request with it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def _exactly(self, n: int) -> bytes | None:
        chunks = []
        while n:
            try:
                data = self.sock.recv(n, socket.MSG_WAITALL)
            except InterruptedError:
                continue
            except OSError:
                return None
            if not data:
                return None
            chunks.append(data)
            n -= len(data)
        return b"".join(chunks)

    def next(self) -> tuple[int, float, int, int, str] | None:
        """The next run request ``(rid, timeout, cap, mode, code)``; ``None`` once the host
        closed."""
        while True:
            header = self._exactly(proto.HEADER.size)
            body = None if header is None else self._exactly(proto.HEADER.unpack(header)[0])
            if body is None:
                return None
            try:
                return proto.parse_run(body)
            except ValueError:
                continue


def pending(sock: socket.socket) -> bool:
    """Whether the host has already sent another request."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False


def await_ack(ctl: socket.socket, me: int) -> None:
    """Wait for the supervisor's ``ack`` to this runner (``me``); exit if the channel closes."""
    while True:
        data = ctl.recv(proto.MAX_PACKET)
        if not data:
            os._exit(0)
        try:
            message = proto.decode(data)
        except ValueError:
            continue
        if message.get("op") == "ack" and message.get("to") == me:
            return


def silence() -> None:
    """Point fd 1 and 2 at /dev/null (threads a committed cell left running go quiet)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def await_assignment(ctl: socket.socket) -> proto.Message:
    """The session's uid, work dir and mode; the host socket comes with it (put on FD_HOST)."""
    while True:
        data, fds, _, _ = socket.recv_fds(ctl, proto.MAX_PACKET, 1)
        if not data:
            os._exit(0)
        try:
            message = proto.decode(data)
        except ValueError:
            message = {}
        if message.get("op") == "assign" and fds:
            os.dup2(fds[0], FD_HOST)
            os.close(fds[0])
            return message
        for fd in fds:
            os.close(fd)
