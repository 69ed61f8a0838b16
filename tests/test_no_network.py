"""The cassette tests' network block really blocks (a replay must never reach an endpoint)."""

from __future__ import annotations

import socket

import pytest


def test_no_network_refuses_internet_sockets(no_network: None) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(OSError, match="network blocked"):
            socket.create_connection(listener.getsockname(), timeout=1)
    finally:
        listener.close()


def test_no_network_keeps_local_ipc(no_network: None) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"x")
        assert b.recv(1) == b"x"
