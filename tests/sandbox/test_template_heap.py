"""The template's heap: what it imports and how it is mapped.

Every session is a fork of the template, and in protected mode every cell is a fork of its
session, so the template's heap is copied (page table entries) and torn down again all the time:
it must hold only what the sandbox's processes use, in huge pages where the kernel allows.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import subprocess
import sys

import pytest

from tir_agent.sandbox.local import LocalSandbox
from tir_agent.sandbox.worker import hugepages

HOST_SIDE = ("asyncio", "structlog", "rich", "httpx", "openai", "tir_agent.sandbox.local")
"""Modules of the host side that the template has no use for."""


def test_the_template_imports_nothing_of_the_host_side() -> None:
    code = (
        "import sys\n"
        "from tir_agent.sandbox.worker import template_main\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [m for m in HOST_SIDE if m in out]


def collapse_supported() -> str | None:
    """Why huge pages cannot be tested here, or None."""
    try:
        with open(hugepages.THP_SETTING) as f:
            if "[never]" in f.read():
                return "transparent huge pages are disabled on this host"
    except OSError:
        return "no transparent huge pages on this kernel"
    probe = mmap.mmap(-1, 2 * hugepages.HUGE_PAGE, flags=mmap.MAP_PRIVATE)
    probe.write(b"x" * len(probe))
    address = ctypes.addressof(ctypes.c_char.from_buffer(probe))
    aligned = (address + hugepages.HUGE_PAGE - 1) & ~(hugepages.HUGE_PAGE - 1)
    error = hugepages.collapse(aligned)
    return None if not error else f"MADV_COLLAPSE refused ({os.strerror(error)}): needs Linux 6.1+"


def test_collapse_heap_maps_anonymous_memory_in_huge_pages() -> None:
    reason = collapse_supported()
    if reason:
        pytest.skip(reason)
    code = (
        "import mmap, sys\n"
        "from tir_agent.sandbox.worker import hugepages\n"
        "m = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE)\n"
        "m.write(b'y' * len(m))\n"
        "n = hugepages.collapse_heap()\n"
        "huge = [r for r in open('/proc/self/smaps_rollup') if r.startswith('AnonHugePages:')]\n"
        "print(n, int(huge[0].split()[1]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    collapsed, kib = (int(x) for x in out.stdout.split())
    assert collapsed >= 7  # 16 MiB, aligned or not, hold at least seven 2 MiB ranges
    assert kib >= 7 * 2048


async def test_the_template_heap_is_in_huge_pages() -> None:
    reason = collapse_supported()
    if reason:
        pytest.skip(reason)
    async with LocalSandbox(preload=("numpy",)) as sandbox:
        await sandbox.start()
        # what the template collapsed, as it reported (its pages split again as it works on:
        # AnonHugePages in its smaps may already be 0 here)
        assert sandbox.huge_pages >= 1  # 3-8 ranges with numpy, by how its regions are aligned
        async with sandbox.session() as session:
            result = await session.run("print(6 * 7)")
            assert result.stdout == "42\n"
