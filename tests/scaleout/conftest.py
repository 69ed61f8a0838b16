"""Fixtures of the scale-out tests: real servers behind a real nginx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scaleout.cluster import Cluster, start_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three fast-mode servers behind nginx, shared by the tests of one module (each test uses
    its own session ids)."""
    with start_cluster(3, "--no-protect-state", "preload=[]") as c:
        yield c
