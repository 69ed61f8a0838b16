"""Huge pages for the template's heap: cheaper forks for every session and protected cell.

A fork copies the page table entries of every private writable mapping, and an exit tears them
down again: for the template's ~60 MB heap (numpy, sympy, scipy, mpmath preloaded) that is about
16,000 entries each time, and in protected mode it happens once per cell (a runner is forked,
the holder it replaces exits). Profiled with ``perf`` on 2 cores, those two kernel functions
(``copy_page_range``, ``unmap_page_range`` and their callers) were 55-65% of the sandbox's CPU
in back-to-back protected cells. A transparent huge page maps 2 MiB with one entry, so the
template collapses its heap into huge pages once, after the preload (``MADV_COLLAPSE``, Linux
6.1+; it works whatever the system's THP setting short of ``never`` says, and makes no later
allocation huge). Sessions share those pages copy-on-write like any other. A write into one
splits its mapping into small entries, in the writer only, and those entries still point into
the one large page, which recent kernels copy and tear down in runs rather than page by page.
Measured on this project's 2-core host (Linux 6.18, default preload): the kernel CPU time per
protected cell fell by about a third (docs/sandbox.md, "Where protected mode's time goes").
"""

from __future__ import annotations

import ctypes
import sys

from tir_agent.sandbox.worker.procs import madvise, private_writable

MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def collapse_heap() -> int:
    """Collapse this process's anonymous writable memory into transparent huge pages where the
    kernel can; returns how many 2 MiB ranges it collapsed (0 where THP is unavailable).
    Refusals are not errors: a range the kernel cannot collapse (EINVAL before Linux 6.1 or on
    a range with nothing in it, EAGAIN on a busy page) stays in small pages."""
    if not sys.platform.startswith("linux"):
        return 0
    try:  # (the template's mount namespace may have no /sys: then the kernel decides)
        with open(THP_SETTING) as f:
            if "[never]" in f.read():
                return 0
    except OSError:
        pass
    collapsed = 0
    for start, end in private_writable(anonymous=True):
        lo = (start + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        for address in range(lo, end - HUGE_PAGE + 1, HUGE_PAGE):
            # one range per call: a range the kernel refuses must not stop the others
            if madvise(address, HUGE_PAGE, MADV_COLLAPSE) == 0:
                collapsed += 1
    return collapsed


def collapse(address: int) -> int:
    """Ask for the 2 MiB range at ``address`` (aligned) in one huge page: 0, or the errno."""
    return 0 if madvise(address, HUGE_PAGE, MADV_COLLAPSE) == 0 else ctypes.get_errno()
