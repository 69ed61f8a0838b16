"""The attack suite of issue 2. Each case checks that the host is unaffected, that the result is
correct and clear, and that the next execution in the same session works with its earlier state.

Runs with the default configuration (protect_state=True). Cases that depend on isolation assert
the protection whenever ``sandbox.protections`` says it is active (on this machine and in CI all
are: see test_protections.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tir_agent.sandbox.local import LocalSandbox, LocalSession
from tir_agent.sandbox.protocol import ROLLED_BACK_NOTE
from tir_agent.sandbox.result import ExecutionResult

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

SECRET = "tir-attack-secret-4f1c"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def box() -> AsyncIterator[LocalSandbox]:
    os.environ["TIR_ATTACK_SECRET"] = SECRET  # the host has a secret in its environment
    try:
        async with LocalSandbox(
            preload=("numpy",), max_processes=32, memory_limit=2 * 1024**3
        ) as sandbox:
            yield sandbox
    finally:
        del os.environ["TIR_ATTACK_SECRET"]


def host_is_fine() -> None:
    """The host process can still fork, exec and see its own environment."""
    assert os.environ["TIR_ATTACK_SECRET"] == SECRET
    assert subprocess.run(["true"], timeout=10).returncode == 0


async def attack(
    sandbox: LocalSandbox, code: str, *, timeout: float = 2
) -> tuple[LocalSession, ExecutionResult]:
    """Open a session with earlier state, run the attack, check the host. The caller checks the
    result and then calls :func:`still_works`."""
    s = await sandbox.open_session()
    await s.run("canary = 'alive'\nimport math")
    r = await s.run(code, timeout=timeout)
    host_is_fine()
    return s, r


async def still_works(s: LocalSession) -> None:
    try:
        r = await s.run("canary, math.sqrt(16)")
        assert (r.status, r.stdout) == ("completed", "('alive', 4.0)\n")
    finally:
        await s.close()


async def test_fork_bomb(box: LocalSandbox) -> None:
    s, r = await attack(
        box,
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        timeout=2,
    )
    assert r.status == "timeout" and r.state == "rolled_back"
    assert r.stderr.endswith("Execution timed out after 2 seconds\n" + ROLLED_BACK_NOTE)
    await still_works(s)


async def test_50_gb_allocation(box: LocalSandbox) -> None:
    s, r = await attack(box, "x = bytearray(50 * 10**9)")
    assert (r.status, r.reason, r.state) == ("error", "memory", "kept")
    assert (
        r.stderr
        == "Traceback (most recent call last):\n    x = bytearray(50 * 10**9)\nMemoryError\n"
    )
    await still_works(s)


async def test_infinite_loop(box: LocalSandbox) -> None:
    s, r = await attack(box, "canary = 'changed'\nwhile True:\n    pass", timeout=1)
    assert (r.status, r.state) == ("timeout", "rolled_back")
    assert r.stderr == "Execution timed out after 1 seconds\n" + ROLLED_BACK_NOTE
    await still_works(s)


async def test_loop_ignoring_sigint_and_sigterm(box: LocalSandbox) -> None:
    code = (
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "while True:\n    try:\n        pass\n    except BaseException:\n        pass"
    )
    s, r = await attack(box, code, timeout=1)
    assert (r.status, r.state) == ("timeout", "rolled_back")
    await still_works(s)


async def test_printing_a_billion_characters(box: LocalSandbox) -> None:
    started = time.monotonic()
    s, r = await attack(box, "for _ in range(1000):\n    print('x' * 10**6, end='')", timeout=10)
    assert time.monotonic() - started < 8
    assert r.status == "completed"
    assert r.stdout == "x" * 1000 + "<output cut>" and r.stdout_truncated
    await still_works(s)


async def test_thread_that_keeps_printing_after_the_cell(box: LocalSandbox) -> None:
    code = (
        "import threading, time\ndef spam():\n    while True:\n        print('spam')\n        time.sleep(0.001)\n"
        "threading.Thread(target=spam, daemon=True).start()\ntime.sleep(0.01)"
    )
    s, r = await attack(box, code)
    assert r.status == "completed" and set(r.stdout.split()) <= {"spam"}
    for _ in range(3):
        time.sleep(0.05)
        r = await s.run("print('quiet')")
        assert r.stdout == "quiet\n"  # the thread's output never lands in a later cell
    await still_works(s)


async def test_background_process_that_should_outlive_the_cell(box: LocalSandbox) -> None:
    code = (
        "import os, subprocess\n"
        "subprocess.Popen(['sh', '-c', 'while true; do echo spam; sleep 0.01; done'])\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        import time\n"
        "        while True:\n            print('daemon', flush=True)\n            time.sleep(0.01)\n    os._exit(0)\n"
        "print('started')"
    )
    s, r = await attack(box, code)
    assert r.status == "completed" and "started" in r.stdout  # interleaved with the spam
    time.sleep(0.1)
    r = await s.run(
        "import subprocess, os\nps = subprocess.run(['ps', '-o', 'uid=,args='], capture_output=True, text=True).stdout\n"
        "print(sum(1 for l in ps.splitlines() if l.split()[0] == str(os.getuid()) and ('sh -c' in l or 'daemon' in l)))"
    )
    assert r.stdout == "0\n"  # nothing the cell started survived it
    await still_works(s)


async def test_reading_secrets(box: LocalSandbox) -> None:
    code = (
        "import os\nfound = []\n"
        "for path in ['/etc/shadow', '/proc/1/environ']:\n"
        "    try:\n        found.append((path, open(path, 'rb').read()[:50]))\n"
        "    except OSError as e:\n        found.append((path, type(e).__name__))\n"
        "leak = [k for k, v in os.environ.items() if 'tir-attack' in v or 'TIR_ATTACK' in k]\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        try:\n            leak += ['environ'] if b'tir-attack' in open(f'/proc/{pid}/environ', 'rb').read() else []\n"
        "        except OSError:\n            pass\n"
        "print(found, leak)"
    )
    s, r = await attack(box, code)
    assert r.status == "completed"
    assert "leak" not in r.stdout and r.stdout.endswith(" []\n")  # no host environment anywhere
    assert SECRET not in r.stdout
    if box.protections.filesystem:
        assert "('/etc/shadow', 'PermissionError')" in r.stdout
    if box.protections.pid_namespace:
        assert "('/proc/1/environ', 'PermissionError')" in r.stdout  # pid 1 is the sandbox's init
    await still_works(s)


async def test_writing_outside_the_work_directory(box: LocalSandbox, tmp_path: Path) -> None:
    target = tmp_path / "host-file.txt"
    target.write_text("original")
    package = Path(__file__).resolve().parents[2] / "tir_agent"
    code = (
        "import os\nresults = []\n"
        f"for path in [{str(target)!r}, {str(package / 'pwned.py')!r}, '/etc/pwned', '/usr/pwned', '/root/pwned', '/pwned']:\n"
        "    try:\n        open(path, 'w').write('x')\n        results.append('WROTE ' + path)\n"
        "    except OSError as e:\n        results.append(type(e).__name__)\n"
        f"os.symlink({str(target)!r}, 'link1')\nos.symlink('/etc/passwd', 'link2')\nos.symlink('/usr', 'link3')\n"
        "for path in ['link1', 'link2', 'link3/pwned']:\n"
        "    try:\n        open(path, 'a').write('x')\n        results.append('WROTE ' + path)\n"
        "    except OSError as e:\n        results.append(type(e).__name__)\n"
        "print(results)"
    )
    s, r = await attack(box, code)
    assert r.status == "completed"
    assert target.read_text() == "original"
    assert not (package / "pwned.py").exists() and not Path("/etc/pwned").exists()
    if box.protections.filesystem:
        assert (
            "WROTE /" not in r.stdout
            and "WROTE link2" not in r.stdout
            and "WROTE link3" not in r.stdout
        )
    await still_works(s)


async def test_reaching_a_listener_on_localhost(box: LocalSandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept())

    thread = threading.Thread(target=accept)
    thread.start()
    code = (
        f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    print('CONNECTED')\n"
        "except OSError as e:\n    print(type(e).__name__)"
    )
    s, r = await attack(box, code)
    stop.set()
    thread.join()
    server.close()
    assert r.status == "completed"
    if box.protections.network:
        assert accepted == [] and "CONNECTED" not in r.stdout
        assert r.stdout in ("PermissionError\n", "ConnectionRefusedError\n", "OSError\n")
    await still_works(s)


async def test_killing_the_parent_and_pid_1(box: LocalSandbox) -> None:
    code = (
        "import os, signal\nout = []\nfor pid in (os.getppid(), 1):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n        out.append('killed')\n"
        "    except OSError as e:\n        out.append(type(e).__name__)\nprint(out)"
    )
    s, r = await attack(box, code)
    assert r.status == "completed"
    if box.protections.pid_namespace:
        assert r.stdout.endswith(", 'PermissionError']\n")  # pid 1 is the sandbox's own init
    await still_works(s)
    # the host is no child of the sandbox: its pid is not even visible
    if box.protections.pid_namespace:
        r = await box.run(
            f"import os\nos.path.exists('/proc/{os.getpid()}/cmdline') and {os.getpid()} > 1000"
        )
        assert r.stdout in ("False\n",)


async def test_os_exit(box: LocalSandbox) -> None:
    s, r = await attack(box, "import os\ncanary = 'changed'\nos._exit(0)")
    assert (r.status, r.reason, r.state) == ("error", "exit", "rolled_back")
    assert (
        r.stderr == "The interpreter exited with code 0 during this execution.\n" + ROLLED_BACK_NOTE
    )
    await still_works(s)


async def test_segfault_through_ctypes(box: LocalSandbox) -> None:
    s, r = await attack(box, "import ctypes\ncanary = 'changed'\nctypes.string_at(0)")
    assert (r.status, r.reason, r.state) == ("error", "crash", "rolled_back")
    assert r.stderr == "The interpreter crashed (signal SIGSEGV).\n" + ROLLED_BACK_NOTE
    await still_works(s)


async def test_deep_recursion(box: LocalSandbox) -> None:
    s, r = await attack(box, "def f(n):\n    return f(n + 1)\nf(0)")
    assert (r.status, r.state) == ("error", "kept")
    assert r.stderr.startswith(
        "Traceback (most recent call last):\n    f(0)\n    return f(n + 1)\n"
    )
    assert "[Previous line repeated" in r.stderr
    assert r.stderr.endswith("RecursionError: maximum recursion depth exceeded\n")
    assert len(r.stderr) < 500
    await still_works(s)
    # without the recursion limit: Python frames eat memory (MemoryError), the C stack
    # overflows (crash) or time runs out, depending on the build; the session survives each
    s, r = await attack(
        box,
        "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)",
        timeout=3,
    )
    assert r.status in ("error", "timeout")
    assert (r.state, r.reason) in (
        ("kept", "memory"),
        ("rolled_back", "crash"),
        ("rolled_back", "timeout"),
    )
    await still_works(s)


async def test_sys_exit(box: LocalSandbox) -> None:
    s, r = await attack(box, "import sys\nsys.exit('bye')")
    assert (r.status, r.reason, r.state) == ("error", "exit", "kept")
    assert r.stderr == "Traceback (most recent call last):\n    sys.exit('bye')\nSystemExit: bye\n"
    await still_works(s)


async def test_raising_keyboard_interrupt(box: LocalSandbox) -> None:
    s, r = await attack(box, "raise KeyboardInterrupt")
    assert (r.status, r.state) == ("error", "kept")
    assert (
        r.stderr
        == "Traceback (most recent call last):\n    raise KeyboardInterrupt\nKeyboardInterrupt\n"
    )
    await still_works(s)


async def test_raising_resource_limits(box: LocalSandbox) -> None:
    code = (
        "import resource\nout = []\n"
        "for name in ('RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_CPU', 'RLIMIT_NOFILE'):\n"
        "    res = getattr(resource, name)\n    soft, hard = resource.getrlimit(res)\n"
        "    try:\n        resource.setrlimit(res, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n        out.append('RAISED')\n"
        "    except (ValueError, OSError) as e:\n        out.append(type(e).__name__)\n"
        "    assert resource.getrlimit(res) == (soft, hard)\nprint(out)"
    )
    s, r = await attack(box, code)
    assert r.status == "completed", r.stderr
    assert "RAISED" not in r.stdout
    await still_works(s)


async def test_one_session_reading_another_sessions_files(box: LocalSandbox) -> None:
    async with box.session() as victim:
        r = await victim.run("import os\nopen('secret.txt', 'w').write('victim data')\nos.getcwd()")
        victim_dir = r.stdout.strip().strip("'")
        code = (
            "import os\nout = []\n"
            f"for path in [{victim_dir + '/secret.txt'!r}, {victim_dir!r}]:\n"
            "    try:\n        out.append(open(path).read() if path.endswith('.txt') else os.listdir(path))\n"
            "    except OSError as e:\n        out.append(type(e).__name__)\nprint(out)"
        )
        s, r = await attack(box, code)
        assert r.status == "completed" and "victim data" not in r.stdout
        if box.protections.session_files:  # its own /sandbox: the other one is not even there
            assert r.stdout == "['FileNotFoundError', 'FileNotFoundError']\n"
        elif box.protections.session_uids:
            assert r.stdout == "['PermissionError', 'PermissionError']\n"
        await still_works(s)
        assert (await victim.run("open('secret.txt').read()")).stdout == "'victim data'\n"
