"""Copy-on-write ahead of time (``worker/prefault.py``), on real forks and the kernel's own
page map: what a runner wrote is found, and the next runner's copies are made without a byte
changing."""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct

import numpy  # noqa: F401  (the scan needs it loaded, as in the sandbox's runners)

from tir_agent.sandbox.worker import prefault

PAGES = 32


def exclusive(address: int) -> bool:
    """Whether this process's page at ``address`` is present and mapped by it alone."""
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(address // prefault.PAGE * 8)
        (entry,) = struct.unpack("<Q", f.read(8))
    want = prefault.PRESENT | prefault.EXCLUSIVE
    return bool(entry & want == want)


def covered(runs: list[tuple[int, int]], address: int) -> bool:
    return any(start <= address < start + length for start, length in runs)


def in_child(body: object) -> dict[str, object]:
    """Run ``body()`` in a forked child; its JSON-able return value."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.write(w, json.dumps(body()).encode())  # type: ignore[operator]
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    result: dict[str, object] = json.loads(data)
    return result


def test_the_pages_a_runner_wrote_are_found_and_copied_ahead_for_the_next() -> None:
    region = mmap.mmap(-1, PAGES * prefault.PAGE, flags=mmap.MAP_PRIVATE)
    region.write(b"\x01" * len(region))  # present, and shared with the forks below
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    page = [base + i * prefault.PAGE for i in range(PAGES)]

    def runner() -> dict[str, object]:
        region[3 * prefault.PAGE] = 7  # the "cell" writes two pages
        region[10 * prefault.PAGE] = 8
        prefault.remember(True, faulted=prefault.STALE + 1)
        found = prefault._written
        mine = {"3": covered(found, page[3]), "10": covered(found, page[10])}
        mine["5"] = covered(found, page[5])  # only read: not this runner's

        def next_runner() -> dict[str, object]:
            before = {i: exclusive(page[i]) for i in (3, 10, 5)}
            prefault.populate(lambda: False)
            after = {i: exclusive(page[i]) for i in (3, 10, 5)}
            values = [region[i * prefault.PAGE] for i in (3, 10, 5)]
            return {"before": before, "after": after, "values": values}

        return {"found": mine, "next": in_child(next_runner)}

    result = in_child(runner)
    assert result["found"] == {"3": True, "10": True, "5": False}
    following = result["next"]
    assert isinstance(following, dict)
    # forked: nothing is its own yet; populated: the two written pages are, the other is not
    assert following["before"] == {"3": False, "10": False, "5": False}
    assert following["after"] == {"3": True, "10": True, "5": False}
    assert following["values"] == [7, 8, 1]  # copied, not changed


def test_cells_back_to_back_leave_nothing_to_copy() -> None:
    def runner() -> dict[str, object]:
        prefault._written = [(0, prefault.PAGE)]
        prefault.remember(False, faulted=1000)
        return {"left": len(prefault._written)}

    assert in_child(runner) == {"left": 0}


def test_a_list_that_spared_its_cell_the_faults_is_passed_on_unscanned() -> None:
    inherited = [(4096, prefault.PAGE)]  # not this process's: a scan would not list it

    def runner() -> dict[str, object]:
        prefault._written = list(inherited)
        prefault.remember(True, faulted=prefault.STALE)
        kept = prefault._written == inherited
        prefault.remember(True, faulted=prefault.STALE + 1)  # it missed: scanned anew
        return {"kept": kept, "rescanned": prefault._written != inherited}

    assert in_child(runner) == {"kept": True, "rescanned": True}


def test_a_request_that_comes_stops_the_copying() -> None:
    def runner() -> dict[str, object]:
        prefault._written = [(0, prefault.PAGE)] * 100  # (address 0: would fail if used)
        calls = []

        def stop() -> bool:
            calls.append(1)
            return True

        prefault.populate(stop)
        return {"asked": len(calls)}

    assert in_child(runner) == {"asked": 1}


def test_a_large_array_written_once_is_not_copied_ahead_whole() -> None:
    """At most REGION_LIMIT pages of one mapping: a page copied ahead looks written to the next
    scan, so a filled array would otherwise be copied by every later runner."""
    big = mmap.mmap(-1, 4 * prefault.REGION_LIMIT * prefault.PAGE, flags=mmap.MAP_PRIVATE)
    small = mmap.mmap(-1, 4 * prefault.PAGE, flags=mmap.MAP_PRIVATE)
    big.write(b"\x01" * len(big))
    small.write(b"\x01" * len(small))
    big_at = ctypes.addressof(ctypes.c_char.from_buffer(big))
    small_at = ctypes.addressof(ctypes.c_char.from_buffer(small))

    def runner() -> dict[str, object]:
        big.seek(0)
        big.write(b"\x02" * len(big))  # every page of the array
        small[0] = 2
        found = prefault.written()
        in_big = sum(
            length // prefault.PAGE
            for start, length in found
            if big_at <= start < big_at + len(big)
        )
        return {"big": in_big, "small": covered(found, small_at)}

    assert in_child(runner) == {"big": prefault.REGION_LIMIT, "small": True}
