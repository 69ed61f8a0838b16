"""Copy-on-write ahead of time: a protected runner copies the pages its cell will write while it
waits for the cell, not while the caller waits for the result.

A runner is a fork of the holder: every page it writes is first copied by the kernel (a page
fault, about 3 us on this project's host). A cell's path writes a few hundred pages, mostly
the same ones from cell to cell (the evaluation loop's frames, the namespace, the output
objects, reference counts of the same objects), so the next runner's cell would fault on
nearly the same pages as the last. The last runner finds its pages before it becomes the
holder: in ``/proc/self/pagemap``, a present page that is mapped exclusively was written (or
allocated) since the fork, because until then it was shared with the holder. The next runner,
forked from it, has the list and writes those pages with ``MADV_POPULATE_WRITE`` (Linux 5.14+)
while it is idle: the kernel makes each a private copy without changing a byte, safe with
threads. A request waiting already (cells back to back) skips it: then it would only delay
the cell.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from typing import Any

from tir_agent.sandbox.worker.procs import madvise, private_writable

MADV_POPULATE_WRITE = 23
PAGE = os.sysconf("SC_PAGE_SIZE")
PRESENT = 1 << 63
EXCLUSIVE = 1 << 56
LIMIT = 1024
"""At most this many pages are copied ahead (4 MiB; a cell's path writes 150-500), and at most
:data:`REGION_LIMIT` of one mapping. A page copied ahead counts as written at the next scan
(the kernel tells no difference), so a large array a cell filled once would otherwise be
copied by every later runner."""
REGION_LIMIT = 128

_written: list[tuple[int, int]] = []


STALE = 50
"""A cell that faulted more often than this on its way (request to answer) had a list that
missed its pages: its runner makes a new one."""


def faults() -> int:
    """The page faults this process has taken so far (one system call)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def remember(paced: bool, faulted: int) -> None:
    """Leave the next runner the pages this runner wrote since it was forked: the list it
    inherited, if its cell took at most :data:`STALE` faults with it (the scan costs 1.5-3 ms
    of CPU, and meanwhile the next runner is not forked), else a new one. ``paced`` False (the
    cell came right after the previous one: the next will too) leaves nothing and costs
    nothing. Call it before this runner replaces the holder: from then on the pages it shared
    with that holder count as its own."""
    global _written
    if not paced:
        _written = []
    elif faulted > STALE or not _written:
        _written = written()


def populate(stop: Callable[[], bool]) -> None:
    """Copy the pages the previous runner wrote (see :func:`remember`), until ``stop()``
    says a request has come."""
    if not _written:
        return
    for i, (start, length) in enumerate(_written):
        if i % 16 == 0 and stop():
            return
        madvise(start, length, MADV_POPULATE_WRITE)


def written() -> list[tuple[int, int]]:
    """``(address, length)`` of the runs of pages this process has to itself (written or
    allocated since the fork) in its private writable mappings, within :data:`LIMIT`;
    empty without numpy (one vector operation with it; in pure Python the scan of ~30,000
    entries would cost more than it saves)."""
    np: Any = sys.modules.get("numpy")
    if np is None:
        return []
    regions = private_writable()
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return []
    try:
        chunks = [
            os.pread(fd, (end - start) // PAGE * 8, start // PAGE * 8) for start, end in regions
        ]
    except OSError:
        return []
    finally:
        os.close(fd)
    flags = np.frombuffer(b"".join(chunks), dtype=np.uint64)
    want = np.uint64(PRESENT | EXCLUSIVE)
    found = np.flatnonzero((flags & want) == want)
    if not len(found):
        return []
    # page index -> address: the region each falls in, by the regions' first indexes
    starts = np.array([start for start, _ in regions], dtype=np.int64)
    firsts = np.cumsum([0] + [len(chunk) // 8 for chunk in chunks])[:-1]
    region = np.searchsorted(firsts, found, side="right") - 1
    # at most REGION_LIMIT per region (its first ones), LIMIT in all
    _, first_of, counts = np.unique(region, return_index=True, return_counts=True)
    rank = np.arange(len(found)) - np.repeat(first_of, counts)
    keep = np.flatnonzero(rank < REGION_LIMIT)[:LIMIT]
    found, region = found[keep], region[keep]
    addresses = starts[region] + (found - firsts[region]) * PAGE
    breaks = np.flatnonzero(np.diff(addresses) != PAGE) + 1
    run_starts = np.concatenate(([0], breaks))
    run_ends = np.concatenate((breaks, [len(addresses)]))
    return list(
        zip(addresses[run_starts].tolist(), ((run_ends - run_starts) * PAGE).tolist(), strict=True)
    )
