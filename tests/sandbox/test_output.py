"""Output limits: per-stream cap with the marker, applied while reading; binary output readable."""

from __future__ import annotations

import time

import pytest

from tir_agent.sandbox.local import LocalSandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_each_stream_is_capped_with_marker(sandbox: LocalSandbox) -> None:
    r = await sandbox.run(
        "import sys\nprint('a' * 1500)\nprint('b' * 30, file=sys.stderr)",
        max_output_characters=1000,
    )
    assert r.stdout == "a" * 1000 + "<output cut>"
    assert r.stdout_truncated and not r.stderr_truncated
    assert r.stderr == "b" * 30 + "\n"
    r = await sandbox.run("import sys\nsys.stderr.write('e' * 20)", max_output_characters=5)
    assert (r.stderr, r.stderr_truncated) == ("eeeee<output cut>", True)


async def test_exactly_at_the_cap_is_not_cut(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("print('x' * 9)", max_output_characters=10)
    assert (r.stdout, r.truncated) == ("x" * 9 + "\n", False)


async def test_cap_counts_characters_not_bytes(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("print('é' * 8)", max_output_characters=5)
    assert r.stdout == "ééééé<output cut>"


async def test_default_cap_is_the_config_value(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("print('z' * 5000)")
    assert r.stdout == "z" * sandbox.config.max_output_characters + "<output cut>"


@pytest.mark.slow
async def test_a_billion_characters_from_python_are_fast(sandbox: LocalSandbox) -> None:
    started = time.monotonic()
    r = await sandbox.run(
        "import sys\nfor _ in range(1000):\n    sys.stdout.write('x' * 10**6)\nprint('end')",
        timeout=20,
    )
    assert r.status == "completed" and r.stdout == "x" * 1000 + "<output cut>"
    assert time.monotonic() - started < 5


@pytest.mark.slow
async def test_a_billion_bytes_through_the_file_descriptor_are_bounded(
    sandbox: LocalSandbox,
) -> None:
    async with sandbox.session() as s:
        await s.run("kept = 'yes'")
        started = time.monotonic()
        r = await s.run(
            "import os\nchunk = b'y' * 10**6\nfor _ in range(1000):\n    os.write(1, chunk)",
            timeout=8,
        )
        assert r.stdout == "y" * 1000 + "<output cut>" and r.stdout_truncated
        assert r.status in ("completed", "timeout")
        assert time.monotonic() - started < 12
        assert (await s.run("kept")).stdout == "'yes'\n"


async def test_invalid_utf8_and_binary_are_readable(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import sys\n_ = sys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')")
    assert r.stdout == "ok \\xff\\xfe end\n"
    r = await sandbox.run("import os\n_ = os.write(1, bytes(range(0, 256, 51)) + b'\\xc3')")
    assert r.stdout == "\x003f\\x99\\xcc\\xff\\xc3"
    r = await sandbox.run("print('\\udcff lone surrogate')")
    assert r.status == "completed" and r.stdout == "\\udcff lone surrogate\n"


async def test_fd_and_python_level_output_both_arrive(sandbox: LocalSandbox) -> None:
    r = await sandbox.run(
        "import os, subprocess\nos.write(1, b'fd\\n')\n_ = subprocess.run(['echo', 'child'])"
    )
    assert r.stdout == "fd\nchild\n"
