"""Shared settings of the server tests: light sandboxes (nothing preloaded), real servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import ServerProcess
from tests.service.client import Client

LIGHT = ("preload=[]", "max_processes=32", "--memory-limit", "2G")
"""Sandbox options of the test servers: fast to start, bounded."""


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    """A keep-alive client of the module's ``server`` fixture."""
    c = Client(server.url)
    yield c
    c.close()
