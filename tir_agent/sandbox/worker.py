"""Code that runs inside the sandbox: the template (zygote), session supervisors and runners.

Process tree (all inside the namespaces made by :func:`isolation.template_command`)::

    template (zygote)      imports config.preload once, gc.freeze(), keeps spare supervisors
    └── supervisor S       privileged, never runs user code; subreaper; owns the output pipes,
        │                  enforces the timeout, answers the host on the session socket
        └── holder H       confined (own uid, rlimits, seccomp); holds the session's state
            └── runner C   protect_state=True: a fork of H that runs the next cell; on success it
                           becomes the new holder, on timeout/crash S kills it and H forks again

Runners read the requests straight from the session socket (shared with S). Protected mode
(three hops): they tell S ``start`` and ``done`` on the control channel; S drains the output and
writes the result. Fast mode (two hops, :class:`_Direct`): a cell that ends within
:data:`TAKEOVER` without leaving processes behind is answered by the runner itself, and S sleeps
through it; a token pipe decides, race-free, whether the runner or S answers each cell.

With ``protect_state=False`` the holder runs the cells itself (no fork per execution); a timeout
first raises an exception in the cell (soft interrupt), then kills the holder and S forks a fresh
one from its clean state (state lost).

User code writes to fd 1 and 2, pipes drained by S with the cap applied while reading; Python's
``sys.stdout``/``sys.stderr`` also stop writing once over the cap, so print loops stay cheap.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import ctypes
import fcntl
import gc
import importlib
import io
import json
import linecache
import math
import mmap
import os
import select
import signal
import socket
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from tir_agent.sandbox import _ipython_cell, isolation
from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.config import SandboxConfig

FD_CTL = 3
"""In holders and runners: the supervisor channel."""
FD_OUT_SAVED = 4
FD_ERR_SAVED = 5
"""In protected holders: the output pipes, kept for the runners while fd 1 and 2 go nowhere."""
FD_HOST = 6
"""In holders and runners: the host's session socket (runners read requests from it)."""
FD_TOKEN_R = 7
FD_TOKEN_W = 8
"""Fast mode: the token pipe shared with the supervisor (see :class:`_Direct`)."""
FD_TIMER = 9
"""Fast mode: a timerfd shared with the supervisor; the runner arms it when a cell starts."""
FD_OUT_R = 10
FD_ERR_R = 11
"""Fast mode: read ends of the output pipes (the runner drains them when it answers itself)."""
FD_SIBLINGS = 12
"""Fast mode: the supervisor's ``/proc/.../children`` (processes a cell left behind show there)."""
FD_LAST = FD_SIBLINGS

SPARES = 2
"""Supervisors (each with its holder) the template keeps forked ahead of time for new sessions."""

SOFT_GRACE = 0.25
"""Fast mode: seconds between the soft interrupt and the hard kill of a timed-out cell."""

SPIN = 0.0002
"""Seconds a fast-mode runner polls for the next cell before sleeping, when the last cell
followed its predecessor within that time (back-to-back cells skip a wake-up)."""

DRAIN_INTERVAL = 0.005
"""Seconds between drains of a running cell's output pipes (until a flood is detected)."""
TAKEOVER = DRAIN_INTERVAL
"""Fast mode: a cell still running after this many seconds (or its timeout, if shorter) is
taken over by the supervisor, which then drains its output and answers the host."""
PIPE_SIZE = 1 << 20
"""Capacity of the output pipes (a cell can write this much between two drains)."""
F_SETPIPE_SZ = 1031

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC

_DEBUG = bool(os.environ.get("TIR_AGENT_SANDBOX_DEBUG"))
_libc = ctypes.CDLL(None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _itimerspec(seconds: float) -> _Itimerspec:
    """A one-shot timer ``seconds`` from now (0: disarmed)."""
    spec = _Itimerspec()
    spec.it_value.tv_sec = int(seconds)
    spec.it_value.tv_nsec = int((seconds - int(seconds)) * 1e9)
    if seconds > 0 and not spec.it_value.tv_sec and not spec.it_value.tv_nsec:
        spec.it_value.tv_nsec = 1
    return spec


def _timerfd() -> int:
    fd = int(_libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "timerfd_create failed")
    return fd


def _prctl(option: int, value: int) -> None:
    _libc.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(value),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's), from /proc."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return out


def _descendants(roots: list[int], exclude: tuple[int, ...] = ()) -> list[int]:
    """``roots`` and every process below them, skipping ``exclude`` and their subtrees."""
    seen: list[int] = []
    stack = [p for p in roots if p not in exclude]
    while stack:
        pid = stack.pop()
        seen.append(pid)
        stack.extend(p for p in _children(pid) if p not in exclude)
    return seen


def kill_until_gone(targets: Callable[[], list[int]], rounds: int) -> set[int]:
    """SIGKILL what ``targets()`` lists, again and again (fork bombs race us), until it lists
    nothing or ``rounds`` are spent; return the pids signalled."""
    killed: set[int] = set()
    for _ in range(rounds):
        pids = targets()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        killed.update(pids)
        time.sleep(0.0002)
    return killed


def kill_tree(roots: list[int], *, include_roots: bool = True, rounds: int = 200) -> None:
    """SIGKILL ``roots`` (unless ``include_roots`` is False) and every live process below them,
    repeating while new ones appear."""

    def targets() -> list[int]:
        pids = [p for p in _descendants(roots) if _alive(p)]
        return pids if include_roots else [p for p in pids if p not in roots]

    kill_until_gone(targets, rounds)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _parent(pid: int) -> int:
    """The parent of ``pid`` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


# --------------------------------------------------------------------------------------------------
# Runner: executes cells


class _CappedRaw(io.RawIOBase):
    """fd 1/2 of user code at the Python level: writes through until ``limit`` bytes, then drops."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.limit = 1 << 20
        self.written = 0

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return False

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = len(view)
        room = self.limit - self.written
        self.written += n
        if room > 0:
            chunk = view[:room] if n > room else view
            try:
                while chunk:
                    chunk = chunk[os.write(self.fd, chunk) :]
            except OSError:
                pass
        return n


class _SoftInterrupt(BaseException):
    """Raised in the cell by the supervisor's soft-timeout signal (fast mode)."""


def _no_input(prompt: object = "") -> str:
    raise EOFError(
        "input() is not available in the sandbox: there is no standard input. "
        "Put the data in the code instead."
    )


class Runner:
    """The interpreter state of one session and the code that runs cells in it."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.cell = 0
        self.out_raw = _CappedRaw(1)
        self.err_raw = _CappedRaw(2)
        self.in_cell = False
        sys.stdout = io.TextIOWrapper(
            self.out_raw,
            encoding="utf-8",
            errors="backslashreplace",
            write_through=True,  # type: ignore[arg-type]
        )
        sys.stderr = io.TextIOWrapper(
            self.err_raw,
            encoding="utf-8",
            errors="backslashreplace",
            write_through=True,  # type: ignore[arg-type]
        )
        setattr(sys, "__stdout__", sys.stdout)  # noqa: B010 - Final for type checkers only
        setattr(sys, "__stderr__", sys.stderr)  # noqa: B010
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0 is /dev/null
        builtins.input = _no_input
        sys.argv = [""]
        sys.ps1 = sys.ps2 = ""  # type: ignore[attr-defined]
        signal.signal(signal.SIGUSR1, self._soft_interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _soft_interrupt(self, signum: int, frame: types.FrameType | None) -> None:
        if self.in_cell:
            raise _SoftInterrupt

    def execute(self, code: str, cap: int, mode: int = 0) -> proto.Message:
        """Run one cell; return ``status``, ``reason``, ``duration``. ``mode`` (of the request,
        :func:`protocol.cell_mode`): 0 plain Python, else IPython with a traceback verbosity."""
        budget = proto.byte_budget(cap)
        self.out_raw.limit = self.err_raw.limit = budget
        self.out_raw.written = self.err_raw.written = 0
        if mode:  # hook: an IPython cell (NeMo-Skills' semantics), see _ipython_cell
            verbosity = proto.TRACEBACK_VERBOSITIES[mode - 1]
            return _ipython_cell.execute(self, code, verbosity, 4 * budget, _SoftInterrupt)
        self.cell += 1
        filename = f"<cell-{self.cell}>"
        lines = code.splitlines(keepends=True)
        linecache.cache[filename] = (len(code), None, lines, filename)
        status, reason = "completed", None
        start = time.perf_counter()
        try:
            self.in_cell = True
            tree = ast.parse(code, filename, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)  # type: ignore[attr-defined]
            if tree.body:
                exec(compile(tree, filename, "exec"), self.ns)
            if last is not None:
                value = eval(compile(last, filename, "eval"), self.ns)
                if value is not None:
                    self.in_cell = False
                    sys.stdout.write(repr(value) + "\n")
            self.in_cell = False
        except _SoftInterrupt:
            self.in_cell = False
            status, reason = "timeout", "timeout"
        except BaseException as e:
            self.in_cell = False
            status = "error"
            reason = "exit" if isinstance(e, SystemExit) else "exception"
            if isinstance(e, MemoryError):
                reason = "memory"
            with contextlib.suppress(BaseException):
                sys.stderr.write(short_traceback(e))
        duration = time.perf_counter() - start
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        return {"status": status, "reason": reason, "duration": duration}


def short_traceback(e: BaseException) -> str:
    """``Traceback (most recent call last):`` + the user's source lines + the exception line."""
    if isinstance(e, SyntaxError) and (e.filename or "").startswith("<cell-"):
        only = traceback.format_exception_only(type(e), e)
        if only and only[0].lstrip().startswith("File "):
            only = only[1:]
        return "".join(only)
    parts = ["Traceback (most recent call last):\n"]
    last, repeats = "", 0
    for frame, lineno in traceback.walk_tb(e.__traceback__):
        name = frame.f_code.co_filename
        if name.startswith("<cell-") and lineno is not None:
            line = linecache.getline(name, lineno).strip()
            if not line:
                continue
            key = f"{name}:{lineno}"
            if key == last:
                repeats += 1
                if repeats >= 3:
                    continue
            else:
                if repeats >= 3:
                    parts.append(f"    [Previous line repeated {repeats - 2} more times]\n")
                last, repeats = key, 0
            parts.append(f"    {line}\n")
    if repeats >= 3:
        parts.append(f"    [Previous line repeated {repeats - 2} more times]\n")
    parts.extend(traceback.format_exception_only(type(e), e))
    return "".join(parts)


def _has_children() -> bool:
    """Whether this process (any of its threads) has a child, alive or not: one syscall."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def _send(ctl: socket.socket, message: proto.Message) -> None:
    with contextlib.suppress(OSError):
        ctl.send(proto.encode(message))


class _Frames:
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


ZERO_RECORD = bytes(proto.RECORD.size)


class _Direct:
    """Fast mode, two hops: the runner answers the host itself when its cell ends normally.

    Who answers a cell is decided by a token: when a cell starts, the runner writes the cell's
    record (:data:`protocol.RECORD`, atomic: smaller than ``PIPE_BUF``) into a pipe it shares
    with the supervisor and arms a shared timerfd for :data:`TAKEOVER` seconds (or the timeout,
    if shorter). Whoever reads the record first owns the answer; a pipe read is atomic, so
    exactly one does. The runner reads when the cell ends; the supervisor when the timer fires
    (the cell runs long: it then drains the output while the cell runs, enforces the timeout and
    answers after the runner's ``done``) or when the runner dies. The token also decides who
    reads the output pipes: only the owner. Nobody reads them between cells.

    A normal short cell so costs the supervisor nothing (it sleeps through it), and the runner a
    few syscalls instead of two messages. When the cell left processes behind (its own children,
    or orphans below the supervisor), the runner hands the cell over: the supervisor sweeps them
    and answers. While the runner writes its answer, the record also sits in a shared memory
    page, so a supervisor that sees the runner die then still answers that request.
    """

    def __init__(self, me: int, shm: mmap.mmap, lost: str, notes: bool) -> None:
        self.me = str(me).encode()
        self.shm = shm
        self.lost = lost
        """Why the interpreter was restarted before its first cell (see ``Supervisor.restart``):
        the first answer says so, and that the state was lost."""
        self.notes = notes
        self.out = _Stream(FD_OUT_R)
        self.err = _Stream(FD_ERR_R)
        self.spec = _itimerspec(TAKEOVER)
        self.off = _itimerspec(0)
        self.record = ZERO_RECORD

    def begin(self, rid: int, timeout: float, cap: int) -> None:
        """Announce a cell (its record on the token pipe) and arm the takeover timer."""
        self.record = proto.RECORD.pack(rid, cap, timeout, time.monotonic())
        with contextlib.suppress(OSError):
            os.write(FD_TOKEN_W, self.record)
        spec = self.spec if timeout >= TAKEOVER else _itimerspec(timeout)
        _libc.timerfd_settime(FD_TIMER, 0, ctypes.byref(spec), None)

    def claim(self) -> bool:
        """Take the token: True when this runner answers the cell, False when the supervisor
        took the cell over (it then waits for ``done``)."""
        self.shm[: proto.RECORD.size] = self.record
        try:
            if os.read(FD_TOKEN_R, 4096):
                return True
        except OSError:
            pass
        self.shm[: proto.RECORD.size] = ZERO_RECORD
        return False

    def alone(self) -> bool:
        """Whether the cell left no process behind: no child of ours, no orphan below the
        supervisor (its children are exactly this runner)."""
        if _has_children():
            return False
        try:
            return os.pread(FD_SIBLINGS, 4096, 0).split() == [self.me]
        except OSError:
            return False

    def answer(
        self, sock: socket.socket, rid: int, timeout: float, cap: int, result: proto.Message
    ) -> None:
        """Drain this cell's output and send the result to the host."""
        budget = proto.byte_budget(cap)
        self.out.start(budget)
        self.err.start(budget)
        self.out.drain()
        self.err.drain()
        stdout, out_cut = self.out.text(cap)
        stderr, err_cut = self.err.text(cap)
        status = result["status"]
        if status == "timeout":  # a cell that sent itself the soft-interrupt signal
            stderr = _join(stderr, proto.timeout_text(timeout))
        state = "kept"
        if self.lost:
            state, stderr = "lost", _join(stderr, self.lost)
            if self.notes:
                stderr += proto.LOST_NOTE
            self.lost = ""
        frame = proto.result_frame(
            rid,
            status,
            stdout,
            stderr,
            out_cut,
            err_cut,
            result["duration"],
            state,
            result["reason"],
        )
        with contextlib.suppress(OSError):
            sock.sendall(frame)
        self.shm[: proto.RECORD.size] = ZERO_RECORD
        # after the answer (off the critical path): no supervisor wake-up at TAKEOVER
        _libc.timerfd_settime(FD_TIMER, 0, ctypes.byref(self.off), None)

    def hand_over(self) -> dict[str, Any]:
        """The fields for ``done``: the cell's record (a supervisor that does not own the cell,
        because the runner won the token but the cell left processes behind, sweeps them and
        answers) and the pending restart notice. Call :meth:`settle` once ``done`` is sent."""
        fields: dict[str, Any] = {"record": list(proto.RECORD.unpack(self.record))}
        if self.lost:
            fields["lost"], self.lost = self.lost, ""
        return fields

    def settle(self) -> None:
        """The supervisor has the cell's ``done``: no answer of ours is in flight any more (a
        death before this point makes the supervisor answer, at worst a second time: the host
        drops the duplicate by its request id)."""
        self.shm[: proto.RECORD.size] = ZERO_RECORD


def serve_cells(
    runner: Runner,
    ctl: socket.socket,
    frames: _Frames,
    *,
    protect: bool,
    shm: mmap.mmap | None = None,
    lost: str = "",
    notes: bool = True,
) -> None:
    """Read the host's cells straight from its socket and run them. Protected mode: the
    supervisor hears of each start and end (it answers the host), and this returns after a
    committed cell (the caller becomes the holder). Fast mode (``shm`` given): two hops, see
    :class:`_Direct`; ``lost`` and ``notes`` as there."""
    me = os.getpid()
    _send(ctl, {"op": "ready", "pid": me})
    direct = _Direct(me, shm, lost, notes) if shm is not None and not protect else None
    spin = False
    while True:
        # Back-to-back cells: when the last request came within SPIN, look for the next one
        # without sleeping for that long (a wake-up costs 30-50 us); a longer gap stops this.
        waited = time.perf_counter()
        if spin:
            until = waited + SPIN
            while not _pending(frames.sock) and time.perf_counter() < until:
                pass
        request = frames.next()
        spin = time.perf_counter() - waited < SPIN
        if request is None:
            os._exit(0)  # the host closed the session
        rid, timeout, cap, mode, code = request
        if direct is not None:
            direct.begin(rid, timeout, cap)
        else:
            _send(ctl, {"op": "start", "pid": me, "rid": rid, "cap": cap, "timeout": timeout})
        result = runner.execute(code, cap, mode)
        if os.getpid() != me:  # a process the cell forked got here: it is not the runner
            os._exit(0)
        handed: dict[str, Any] = {}
        if direct is not None:
            if direct.claim() and direct.alone():
                direct.answer(frames.sock, rid, timeout, cap, result)
                continue
            handed = direct.hand_over()
        # A request already waiting means the host gave up on this one (a cancelled run): wait
        # until the supervisor has collected this cell's output before the next cell writes any.
        pending = _pending(frames.sock)
        result.update(op="done", pid=me, rid=rid, children=_has_children(), wait=pending)
        result.update(handed)
        if protect:  # processes the cell started do not outlive it (fast mode: S kills them)
            kill_tree([me], include_roots=False, rounds=50)
            # This process commits and becomes the holder: threads the cell left running go
            # quiet now, before the supervisor collects the output (not into the next cell's).
            _silence()
        _send(ctl, result)
        if direct is not None:
            direct.settle()
        if pending:
            _await_ack(ctl, me)
        if protect:
            return


def _pending(sock: socket.socket) -> bool:
    """Whether the host has already sent another request."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False


def _await_ack(ctl: socket.socket, me: int) -> None:
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


def _silence() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def _await_assignment(ctl: socket.socket) -> proto.Message:
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


def holder_main(
    config: SandboxConfig, protections: isolation.Protections, shm: mmap.mmap
) -> NoReturn:
    """The first process of a session's state: forked ahead of time, it waits for its session
    (uid, work dir, mode), confines itself, then runs cells (fast) or forks runners (protected).
    ``shm`` is the page shared with the supervisor (fast mode, see :class:`_Direct`)."""
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        isolation.prepare_session(config, protections)  # ahead of time: own mounts and IPC
        ctl = socket.socket(fileno=FD_CTL)
        assignment = _await_assignment(ctl)
        protect = bool(assignment["protect"])
        isolation.confine_session(
            config, protections, uid=int(assignment["uid"]), workdir=str(assignment["workdir"])
        )
        _prctl(PR_SET_DUMPABLE, 1)  # /proc/self stays readable by the session's own uid
        runner = Runner()
        frames = _Frames(socket.socket(fileno=FD_HOST))
    except BaseException as e:
        os.write(2, f"session start failed: {e!r}\n".encode())
        os._exit(70)
    if not protect:
        lost = str(assignment.get("lost") or "")
        serve_cells(
            runner, ctl, frames, protect=False, shm=shm, lost=lost, notes=config.state_notes
        )
        os._exit(0)
    os.closerange(FD_HOST + 1, FD_LAST + 1)  # the fast mode's descriptors
    shm.close()
    # The holder writes nowhere: threads left running by a committed cell go quiet. Runners get
    # the supervisor's pipes back on fd 1 and 2.
    os.dup2(1, FD_OUT_SAVED)
    os.dup2(2, FD_ERR_SAVED)
    _silence()
    old = 0
    while True:  # protected: this process holds the state and only forks runners
        me = os.getpid()
        _send(ctl, {"op": "holder", "pid": me})
        while True:
            try:
                pid = os.fork()
                break
            except OSError:
                time.sleep(0.01)
        if pid == 0:
            os.dup2(FD_OUT_SAVED, 1)
            os.dup2(FD_ERR_SAVED, 2)
            if not protections.pid_namespace:
                # no pid namespace takes us down with the host: die with the holder (a cell
                # that kills its holder then loses the session, instead of outliving the host)
                _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            serve_cells(runner, ctl, frames, protect=True)  # (silenced us before its done)
            # committed: this runner becomes the holder; the old one goes (S may be faster).
            # Our parent-death signal is re-armed for the supervisor once we are reparented.
            _prctl(PR_SET_PDEATHSIG, 0)
            with contextlib.suppress(OSError):
                os.kill(me, signal.SIGKILL)
            old = me
            continue
        if old:  # off the critical path: wait to be reparented, then die with the supervisor
            while os.getppid() == old:
                time.sleep(0.0002)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            old = 0
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                status = -1
                break
        _send(ctl, {"op": "died", "pid": pid, "status": status})


# --------------------------------------------------------------------------------------------------
# Supervisor


class _Stream:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self.budget = 0
        self.dropped = False
        self.capturing = False

    def start(self, budget: int) -> None:
        # bytes written between cells (threads a fast-mode cell left running) count for this one
        self.data.clear()
        self.budget = budget
        self.dropped = False
        self.capturing = True

    def read(self) -> bool:
        """Read what is there; False at EOF."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        if self.capturing:
            room = self.budget - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            if len(chunk) > room:
                self.dropped = True
        return True

    def drain(self, *, discard: bool = False) -> int:
        """Read everything there is now; return how many bytes."""
        capturing = self.capturing
        total = 0
        if discard:
            self.capturing = False
        for _ in range(1024):
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            total += len(chunk)
            if self.capturing:
                room = self.budget - len(self.data)
                if room > 0:
                    self.data += chunk[:room]
                if len(chunk) > room:
                    self.dropped = True
            if len(chunk) < 1 << 16:  # a short read: the pipe is empty now (saves a syscall)
                break
        self.capturing = capturing
        return total

    def text(self, cap: int) -> tuple[str, bool]:
        self.capturing = False
        text, cut = proto.cap_text(self.data.decode("utf-8", "backslashreplace"), cap)
        if self.dropped and not cut:
            text, cut = text[:cap] + proto.CUT_MARKER, True
        self.data.clear()
        return text, cut


def _describe_exit(status: int | None, *, during: bool = True) -> tuple[str, str]:
    """(stderr line, reason) for an interpreter that died during a cell, or (``during`` False)
    between cells: after the previous cell returned, e.g. in a thread that cell started."""
    when = "during this execution" if during else "after the previous execution"
    if status is None or status < 0:
        return f"The interpreter died {when}.\n", "crash"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        at = "" if during else f" {when}"
        if sig == signal.SIGKILL:
            return (
                f"The interpreter was killed (signal {name}){at}, e.g. for using too much memory.\n",
                "crash",
            )
        return f"The interpreter crashed (signal {name}){at}.\n", "crash"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return f"The interpreter exited with code {code} {when}.\n", "exit"


def _forged(during: bool) -> str:
    """The stderr line for a session that wrote to its supervisor's control channel."""
    when = "during this execution" if during else "after the previous execution"
    return f"The interpreter wrote to the sandbox's control channel {when}.\n"


class Supervisor:
    """One per session: owns the output pipes and the host channel, enforces timeouts."""

    def __init__(self, config: SandboxConfig, protections: isolation.Protections) -> None:
        self.host = socket.socket(socket.AF_UNIX)  # replaced by assign()
        self.config = config
        self.protections = protections
        self.protect = True
        self.uid = os.getuid()
        self.workdir = ""
        out_r, self.out_w = os.pipe()
        err_r, self.err_w = os.pipe()
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
        for fd in (out_r, err_r):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        self.pipes_watched = False
        self.next_drain = 0.0
        self.drain_interval = DRAIN_INTERVAL
        self.out = _Stream(out_r)
        self.err = _Stream(err_r)
        # fast mode (see _Direct): the token pipe, the takeover timer, the shared page
        self.token_r, self.token_w = os.pipe2(os.O_NONBLOCK)
        self.timer = _timerfd()
        self.shm = mmap.mmap(-1, mmap.PAGESIZE)
        self.takeover_due = False
        self.ctl, self.ctl_child = proto.control_channel()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.statuses: dict[int, int] = {}
        self.children_fd = os.open(f"/proc/{os.getpid()}/task/{os.getpid()}/children", os.O_RDONLY)
        self.holder = 0
        self.runner = 0
        self.pidfds: dict[int, int] = {}  # pidfd -> pid
        self.retired: dict[int, None] = {}  # see retire()
        self.running: proto.Message | None = None  # sent to the runner
        self.deadline = 0.0
        self.grace_deadline = 0.0
        self.died_wait = 0.0
        self.started = 0.0
        self.rid: object = None
        self.lost_notice = ""
        """Why the session's interpreter was restarted between cells (reported with the next
        cell's result, then cleared; in fast mode it goes to the new holder with its assignment)."""
        self.poll = select.poll()
        # The output pipes are read only while a cell runs (on a timer, or on every write during
        # a flood) and when it ends. Never between cells: once the host has a result, the next
        # runner may already be writing the next cell's output, which must not be dropped.
        for fd in (self.ctl.fileno(), self.wake_r):
            self.poll.register(fd, select.POLLIN)

    def assign(self, host: socket.socket, slot: int, protect: bool) -> None:
        """Become the supervisor of session ``slot`` (the holder was forked ahead of time)."""
        self.host.close()
        self.host = host  # blocking: the runners share its file description and read from it
        # only the host's half-close (session close) wakes us
        self.poll.register(host.fileno(), select.POLLRDHUP)
        self.protect = protect
        if not protect:
            self.poll.register(self.timer, select.POLLIN)
        if self.protections.session_uids:
            self.uid = isolation.session_uid(slot, self.protections)
        self.workdir = os.path.join(self.protections.workspace_root, f"s{slot}")
        self.send_assignment()

    def send_assignment(self) -> None:
        self.runner = self.holder if not self.protect else 0
        message = {
            "op": "assign",
            "uid": self.uid,
            "workdir": self.workdir,
            "protect": self.protect,
            "lost": self.lost_notice,
        }
        if not self.protect:  # the holder answers its first cell itself (see _Direct)
            self.lost_notice = ""
        socket.send_fds(self.ctl, [proto.encode(message)], [self.host.fileno()])

    # -- processes

    def spawn_holder(self) -> None:
        self.reset_token()
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(self.out_w, 1)
                os.dup2(self.err_w, 2)
                # out of the way first: a source may sit on a target number
                sources = [
                    fcntl.fcntl(fd, fcntl.F_DUPFD, 64)
                    for fd in (
                        self.ctl_child.fileno(),
                        self.token_r,
                        self.token_w,
                        self.timer,
                        self.out.fd,
                        self.err.fd,
                        self.children_fd,
                    )
                ]
                targets = (FD_CTL, FD_TOKEN_R, FD_TOKEN_W, FD_TIMER, FD_OUT_R, FD_ERR_R)
                for source, target in zip(sources, (*targets, FD_SIBLINGS), strict=True):
                    os.dup2(source, target)
                # Nothing else of ours reaches the session: not the spare's link to the
                # template, not the supervisor's own ends (they may sit on 4-6 here).
                for fd in (FD_OUT_SAVED, FD_ERR_SAVED, FD_HOST):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                os.closerange(FD_LAST + 1, 1 << 16)
                holder_main(self.config, self.protections, self.shm)
            finally:
                os._exit(70)
        self.holder = pid
        self.runner = 0
        self.watch(pid)
        if _DEBUG:
            os.write(2, f"S{os.getpid()} spawned holder {pid}\n".encode())

    def reset_token(self) -> None:
        """Between holders (fast mode): no record, no answer in flight, no timer."""
        with contextlib.suppress(OSError):
            while os.read(self.token_r, 4096):
                pass
        self.shm[: proto.RECORD.size] = ZERO_RECORD
        _libc.timerfd_settime(self.timer, 0, ctypes.byref(_itimerspec(0)), None)

    def claim(self) -> proto.Message | None:
        """Fast mode: take the token of the running cell (see :class:`_Direct`); the cell's
        request, or None when there is none (no cell, or the runner took it)."""
        data = self.take_token()
        return (self.request_of(data) or self.default_request()) if data else None

    def take_token(self) -> bytes:
        try:
            return os.read(self.token_r, 4096)
        except OSError:
            return b""

    def request_of(self, record: bytes) -> proto.Message | None:
        """A cell's request from its record (the first one: whatever a cell wrote into the
        token pipe comes after); None for one the runner did not write (only a cell writes
        such a thing): the runner stamps it with the same clock, at most the cell's timeout
        (and the soft interrupt's grace) before anyone reads it."""
        record = record[: proto.RECORD.size]
        if len(record) == proto.RECORD.size:
            rid, cap, timeout, start = proto.RECORD.unpack(record)
            now = time.monotonic()
            if (
                0 < rid < 1 << 53
                and cap < 1 << 40
                and math.isfinite(timeout)
                and 0 < timeout < 1e9
                and now - timeout - 60 <= start <= now + 1
            ):
                return {"rid": rid, "cap": cap, "timeout": timeout, "start": start}
        return None

    def default_request(self) -> proto.Message:
        """What to supervise a cell by whose record a cell garbled (its own session only)."""
        return {
            "rid": 0,
            "cap": self.config.max_output_characters,
            "timeout": self.config.timeout,
            "start": time.monotonic(),
        }

    def watch(self, pid: int) -> None:
        self.retired.pop(pid, None)
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        self.pidfds[fd] = pid
        self.poll.register(fd, select.POLLIN)

    def unwatch(self, pid: int) -> None:
        self.retire((pid,))
        for fd, p in list(self.pidfds.items()):
            if p == pid:
                self.poll.unregister(fd)
                os.close(fd)
                del self.pidfds[fd]

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if _DEBUG:
                os.write(2, f"S{os.getpid()} reaped {pid} status {status}\n".encode())
            if pid in (self.holder, self.runner):
                self.statuses[pid] = status

    def strays(self) -> list[int]:
        """Children of the supervisor that are neither the holder nor the runner (orphans)."""
        try:  # the supervisor is single-threaded: one children file, kept open (1 syscall)
            pids = [int(x) for x in os.pread(self.children_fd, 1 << 16, 0).split()]
        except (OSError, ValueError):
            pids = _children(os.getpid())
        return [p for p in pids if p not in (self.holder, self.runner)]

    def purge(self, extra: tuple[int, ...] = (), ignore: tuple[int, ...] = ()) -> None:
        """Kill ``extra`` and every orphan (all children of the supervisor but the holder and
        ``ignore``), with everything below them, until none is left (fork bombs race us)."""

        # Only ever processes below this supervisor: whatever the session claimed, nothing of
        # the template or of another session is named here.
        if extra:
            ours = set(_descendants(_children(os.getpid())))
            extra = tuple(p for p in extra if p in ours)

        def targets() -> list[int]:
            self.reap()
            keep = tuple(p for p in (self.holder, self.runner) if p and p not in extra) + ignore
            roots = [p for p in (*extra, *self.strays()) if _alive(p) and p not in ignore]
            return [p for p in _descendants(roots, keep) if _alive(p)]

        self.retire(kill_until_gone(targets, 2000))

    def retire(self, pids: Iterable[int]) -> None:
        """Remember processes of the session that we killed or stopped watching: what they
        sent before they went is stale, not forged."""
        self.retired.update(dict.fromkeys(pids))
        if len(self.retired) > 4096:  # a fork bomb's worth at most; forget the oldest
            for pid in list(self.retired)[:1024]:
                del self.retired[pid]

    def kill_everything(self) -> None:
        self.holder = self.runner = 0
        self.purge()
        if self.protections.session_uids:
            isolation.kill_uid(self.uid)
        for pid in list(self.pidfds.values()):
            self.unwatch(pid)
        self.reap()

    # -- host channel

    def reply(self, message: proto.Message) -> None:
        """Send a result (``op`` is ``result``) or the close confirmation to the host. Results
        carry the request's id: the host drops replies to requests it gave up on."""
        if message.get("op") == "result":
            frame = proto.result_frame(
                self.rid if isinstance(self.rid, int) else 0,
                message["status"],
                message["stdout"],
                message["stderr"],
                message["stdout_truncated"],
                message["stderr_truncated"],
                message["duration"],
                message["state"],
                message["reason"],
            )
        else:
            frame = proto.CLOSED_FRAME
        with contextlib.suppress(OSError):
            self.host.sendall(frame)

    def shutdown(self, reply: bool = False) -> NoReturn:
        self.kill_everything()
        with contextlib.suppress(OSError):
            isolation.remove_workdir(self.workdir)
        if reply:
            self.reply({"op": "closed"})
        os._exit(0)

    # -- session channel

    def on_ctl(self) -> None:
        """Messages of the session's processes. The sender is who the kernel says it is
        (``SCM_CREDENTIALS``), never a pid in the message; anything the protocol does not allow
        from that sender at that moment ends the session's interpreter (:meth:`forged`)."""
        while True:
            try:
                data, ancdata, _, _ = self.ctl.recvmsg(proto.MAX_PACKET, proto.CREDENTIALS_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sender = proto.sender_pid(ancdata)
            try:
                message = proto.decode(data)
            except ValueError:
                message = {}
            # sent by a process we have dealt with (e.g. a runner killed meanwhile): stale;
            # unless its number was reused by the holder's next runner
            if (
                sender in self.retired
                and sender not in (self.holder, self.runner)
                and (
                    message.get("op") != "ready"
                    or _parent(sender) not in (self.holder, os.getpid())
                )
            ):
                continue
            if _DEBUG:
                os.write(
                    2,
                    f"S{os.getpid()} {time.monotonic():.4f} ctl {sender} {message} holder={self.holder} runner={self.runner}\n".encode(),
                )
            if not self.on_message(sender, message):
                if _DEBUG:
                    os.write(
                        2,
                        f"S{os.getpid()} forged by {sender}: parent {_parent(sender)} running {self.running} holder {self.holder} runner {self.runner}\n".encode(),
                    )
                self.forged()

    def on_message(self, sender: int, message: proto.Message) -> bool:
        """Act on one control message from ``sender``; False if the protocol does not allow it
        (only user code sends such a thing: it holds the same descriptor as its runner)."""
        op = message.get("op")
        holder, runner, running = self.holder, self.runner, self.running
        if op == "ready":  # a runner introduces itself
            if not self.protect:
                return sender == holder  # the holder is the runner (no-op)
            # a fork of the holder, or one the supervisor inherited (its holder is gone), or
            # one already gone itself (a cell that ends the runner at once: the holder reaps
            # it before we read this, then reports its exit; a dead process can do no harm)
            parent = _parent(sender)
            if running is not None or sender == holder or parent not in (holder, os.getpid(), 0):
                return False
            if runner and runner != holder:
                self.unwatch(runner)
            self.runner = sender
            self.watch(sender)
            return True
        if op == "holder" and self.protect:  # a committed runner took over the state
            if sender == holder:
                return True
            if sender != runner or running is not None:
                return False
            self.holder, self.runner = runner, 0
            return True
        if op == "start" and self.protect:
            request = proto.checked_start(message)
            if sender != runner or running is not None or request is None:
                return False
            self.begin(request)
            return True
        if op == "done":
            if sender != runner or not proto.valid_done(message):
                return False
            if running is None and not self.protect and "record" in message:
                # fast mode: the runner won the token but the cell left processes behind (or
                # the cell took the token itself): sweep, collect and answer
                record = proto.RECORD.pack(*message["record"])
                self.begin(self.request_of(record) or self.default_request())
            if self.running is not None and self.running.get("rid") == 0:
                # we took the cell over by a record the cell garbled: the runner knows its id
                self.running["rid"] = self.rid = message["rid"]
            if self.running is None or message.get("rid") != self.running.get("rid"):
                return False
            self.finish_done(message)
            return True
        if op == "died" and self.protect:  # the holder reports its runner's exit status
            pid, status = message.get("pid"), message.get("status")
            if sender != holder or type(pid) is not int or type(status) is not int:
                return False
            if running is not None and pid == runner:
                self.fail_running(pid, timed_out=False, status=status)
            return True  # (about a runner already dealt with: nothing to do)
        return False

    def forged(self) -> None:
        """The session wrote something to the control channel that its runner or holder would
        not: end its interpreter (every process of the session) and start a fresh one. The
        running cell, or else the next one, reports the state as lost."""
        if _DEBUG:
            os.write(2, f"S{os.getpid()} forged control message\n".encode())
        uncertain = not self.protect and self.running is None and self.adopt()
        if self.running is not None:
            then = _forged(during=False) if uncertain else ""
            self.fail_running(self.runner, timed_out=False, forged=True, then=then)
        else:
            self.restart(_forged(during=False))

    def restart(self, notice: str) -> None:
        """Between cells: the session's state is gone. Start a fresh holder; the next cell's
        result says why (``notice``) and that the state was lost."""
        self.kill_everything()
        # a new channel too: the session may have shut its end down (every read then returns
        # nothing at once), and nothing queued on the old one is of interest
        self.poll.unregister(self.ctl.fileno())
        self.ctl.close()
        self.ctl_child.close()
        self.ctl, self.ctl_child = proto.control_channel()
        self.poll.register(self.ctl.fileno(), select.POLLIN)
        self.lost_notice = notice
        self.spawn_holder()
        self.send_assignment()

    def begin(self, request: proto.Message) -> None:
        """The runner started a cell: capture its output, start the clock."""
        self.rid = request.get("rid")
        cap = int(request["cap"])
        self.out.start(proto.byte_budget(cap))
        self.err.start(proto.byte_budget(cap))
        self.running = request
        self.started = float(request.get("start") or time.monotonic())
        # While the cell runs, output is drained on a timer instead of on every write: a cell
        # costs one supervisor wake-up (its end) instead of one more per print.
        self.watch_pipes(False)
        self.drain_interval = DRAIN_INTERVAL
        self.next_drain = self.started + DRAIN_INTERVAL
        self.deadline = self.started + float(request["timeout"])
        self.grace_deadline = self.died_wait = 0.0

    def watch_pipes(self, on: bool) -> None:
        if on != self.pipes_watched:
            for stream in (self.out, self.err):
                if on:
                    self.poll.register(stream.fd, select.POLLIN)
                else:
                    self.poll.unregister(stream.fd)
            self.pipes_watched = on

    def drain_running(self) -> None:
        """Timer-driven draining of a running cell's output; a flood switches to draining on
        every write."""
        now = time.monotonic()
        if self.pipes_watched or now < self.next_drain:
            return
        got = self.out.drain() + self.err.drain()
        if got >= PIPE_SIZE // 2:
            self.watch_pipes(True)
        # quiet cells (long computations) are checked less and less often
        self.drain_interval = DRAIN_INTERVAL if got else min(2 * self.drain_interval, 0.1)
        self.next_drain = now + self.drain_interval

    def collect(self, cap: int) -> tuple[str, bool, str, bool]:
        self.watch_pipes(False)
        self.out.drain()
        self.err.drain()
        stdout, out_cut = self.out.text(cap)
        stderr, err_cut = self.err.text(cap)
        return stdout, out_cut, stderr, err_cut

    def finish_done(self, message: proto.Message) -> None:
        assert self.running is not None
        request, self.running = self.running, None
        self.died_wait = 0.0
        cap = int(request["cap"])
        stdout, out_cut, stderr, err_cut = self.collect(cap)
        status = message.get("status", "error")
        if status == "timeout":
            stderr = _join(stderr, proto.timeout_text(float(request["timeout"])))
        previous = self.holder
        if self.protect:
            self.holder = self.runner  # the runner committed and is the holder now
            self.runner = 0
        # Processes the cell started do not outlive it. This happens before the reply: once the
        # host has it, the session moves on without us (the next runner reads the host socket).
        # The old holder is no stray: the committed runner kills it.
        ignore = (previous,) if self.protect else ()
        orphans = [p for p in self.strays() if p not in ignore]
        if not self.protect and message.get("children"):
            orphans += _children(self.runner)
        if orphans:
            self.purge(tuple(orphans), ignore=ignore)
        # the interpreter was restarted before this cell: protected mode keeps the notice here,
        # in fast mode the runner had it (with its assignment) and sends it along
        lost = self.lost_notice if self.protect else str(message.get("lost") or "")
        self.lost_notice = ""
        state = "kept"
        if lost:
            state, stderr = "lost", _join(stderr, lost)
            if self.config.state_notes:
                stderr += proto.LOST_NOTE
        self.reply(
            {
                "op": "result",
                "status": status,
                "stdout": stdout,
                "stderr": stderr,
                "stdout_truncated": out_cut,
                "stderr_truncated": err_cut,
                "duration": float(message.get("duration", 0.0)),
                "state": state,
                "reason": message.get("reason"),
            }
        )
        if message.get("wait"):
            runner = self.holder if self.protect else self.runner
            with contextlib.suppress(OSError):
                self.ctl.send(proto.encode({"op": "ack", "to": runner}))

    def fail_running(
        self,
        runner: int,
        *,
        timed_out: bool,
        status: int | None = None,
        forged: bool = False,
        then: str = "",
    ) -> None:
        """The runner timed out (and is to be killed), died, or its session wrote to the
        control channel (``forged``: the whole session goes): report, restore a runner.
        ``then``: the runner may have answered this cell itself before it died (the host keeps
        the first answer), so the next cell reports the loss too, with this line."""
        assert self.running is not None
        request, self.running = self.running, None
        self.died_wait = 0.0
        cap = int(request["cap"])
        duration = time.monotonic() - self.started
        if self.protect and not forged:
            self.purge((runner,))
        else:
            self.kill_everything()
        stdout, out_cut, stderr, err_cut = self.collect(cap)
        self.unwatch(runner)
        if self.runner == runner:
            self.runner = 0
        holder_alive = self.protect and self.holder != 0 and _alive(self.holder)
        if timed_out:
            notice, reason, result_status = (
                proto.timeout_text(float(request["timeout"])),
                "timeout",
                "timeout",
            )
        elif forged:
            notice, reason, result_status = _forged(during=True), "crash", "error"
        else:
            notice, reason = _describe_exit(status)
            result_status = "error"
        # a restart before this cell (protected mode) was not reported yet: it is now
        notice = _join(self.lost_notice, notice) if self.lost_notice else notice
        if holder_alive and not self.lost_notice:
            state, note = "rolled_back", proto.ROLLED_BACK_NOTE
        elif holder_alive:
            state, note = "lost", proto.LOST_NOTE
            self.lost_notice = ""
        else:
            state, note = "lost", proto.LOST_NOTE
            self.restart(then)
        stderr = _join(stderr, notice)
        if self.config.state_notes:
            stderr += note
        self.reply(
            {
                "op": "result",
                "status": result_status,
                "stdout": stdout,
                "stderr": stderr,
                "stdout_truncated": out_cut,
                "stderr_truncated": err_cut,
                "duration": duration,
                "state": state,
                "reason": reason,
            }
        )

    def on_exit(self, pid: int) -> None:
        """A watched process (holder or runner) ended."""
        if _DEBUG:
            os.write(
                2, f"S{os.getpid()} exit {pid} holder={self.holder} runner={self.runner}\n".encode()
            )
        self.unwatch(pid)
        self.reap()
        then = ""
        if not self.protect and self.running is None and pid == self.runner and self.adopt():
            then = _describe_exit(self.statuses.get(pid), during=False)[0]
        if self.running is not None and pid == self.runner:
            if self.protect and self.holder and _alive(self.holder):
                self.died_wait = time.monotonic() + 1.0  # the holder reports the exit status
            else:
                status = self.statuses.pop(pid, None)
                self.fail_running(pid, timed_out=False, status=status, then=then)
            return
        if self.running is None and pid in (self.holder, self.runner):
            others = [p for p in (self.holder, self.runner) if p and p != pid]
            if self.protect and any(_alive(p) for p in others):
                return  # the other one holds the state (e.g. the runner forked for the next cell)
            # the state is gone between cells (a thread of the last cell called os._exit,
            # crashed, or a stray process killed it): start over, and say so with the next cell
            status = self.statuses.pop(self.holder, None)
            self.restart(_describe_exit(status, during=False)[0])

    def adopt(self) -> bool:
        """Fast mode, the runner is dying or about to be killed: take over the cell it runs,
        if any (its record is in the token pipe; or in the shared page while the runner
        answers it: then True, the host may already have the runner's answer)."""
        # garbage in the pipe (written by a thread between cells) is no cell
        request = self.request_of(self.take_token())
        uncertain = False
        if request is None and any(self.shm[: proto.RECORD.size]):
            request = self.request_of(bytes(self.shm[: proto.RECORD.size]))
            uncertain = request is not None
        if request is not None:
            self.begin(request)
        return uncertain

    def check_deadline(self) -> None:
        if self.running is None:
            return
        now = time.monotonic()
        if self.died_wait:
            if now >= self.died_wait:
                self.fail_running(self.runner, timed_out=False, status=None)
            return
        if self.grace_deadline:
            if now >= self.grace_deadline:
                self.fail_running(self.runner, timed_out=True)
            return
        if now >= self.deadline:
            if self.protect:
                self.fail_running(self.runner, timed_out=True)
            else:
                with contextlib.suppress(OSError):
                    os.kill(self.runner, signal.SIGUSR1)
                self.grace_deadline = now + SOFT_GRACE

    def serve(self) -> NoReturn:
        while True:
            timeout = None
            if self.running is not None:
                until = self.died_wait or self.grace_deadline or self.deadline
                if not self.pipes_watched:
                    until = min(until, self.next_drain)
                timeout = max(0.0, until - time.monotonic()) * 1000 + 1
            try:
                events = self.poll.poll(timeout)
            except InterruptedError:
                events = []
            fds = {fd for fd, _ in events}
            if self.host.fileno() in fds:  # the host closed the session
                self.shutdown(reply=True)
            watched = dict(self.pidfds)
            if self.ctl.fileno() in fds:
                self.on_ctl()
            for stream in (self.out, self.err):
                if stream.fd in fds and self.running is not None:
                    stream.read()
            if self.wake_r in fds:
                with contextlib.suppress(OSError):
                    os.read(self.wake_r, 4096)
                self.reap()
            if self.timer in fds:  # fast mode: a cell runs past TAKEOVER, take it over
                with contextlib.suppress(OSError):
                    os.read(self.timer, 8)
                self.takeover_due = True
            for fd in fds:
                pid = self.pidfds.get(fd)
                # a pidfd closed and reused for another process meanwhile: not an exit
                if pid is not None and pid == watched.get(fd):
                    self.on_exit(pid)
            if self.takeover_due and self.running is None:
                # (after the previous cell's done, should both come in one wake-up)
                self.takeover_due = False
                request = self.claim()
                if request is not None:
                    self.begin(request)
            if self.running is not None:
                self.drain_running()
            self.check_deadline()


def _join(text: str, notice: str) -> str:
    if text and not text.endswith("\n"):
        text += "\n"
    return text + notice


def supervisor_main(
    link: socket.socket, config: SandboxConfig, protections: isolation.Protections
) -> NoReturn:
    """A spare supervisor: fork the holder ahead of time, wait for a session, then serve it."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_DUMPABLE, 0)
    supervisor = Supervisor(config, protections)
    supervisor.spawn_holder()
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(link, proto.MAX_PACKET, 1)
            break
        except InterruptedError:
            continue
    if not data or not fds:
        supervisor.kill_everything()
        os._exit(0)
    request = proto.decode(data)
    link.close()
    supervisor.assign(socket.socket(fileno=fds[0]), int(request["slot"]), bool(request["protect"]))
    if os.environ.get("TIR_AGENT_SANDBOX_PROFILE"):
        import cProfile

        profile = cProfile.Profile()
        original = supervisor.shutdown

        def dump(reply: bool = False) -> NoReturn:
            profile.disable()
            profile.dump_stats(f"/tmp/supervisor-{os.getpid()}.prof")
            original(reply)

        supervisor.shutdown = dump  # type: ignore[method-assign]
        profile.enable()
    supervisor.serve()


# --------------------------------------------------------------------------------------------------
# Template (zygote)


def _reap_all(sessions: dict[int, int]) -> None:
    """Reap exited children; forget the sessions (slot -> supervisor pid) among them."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        for slot in [k for k, v in sessions.items() if v == pid]:
            del sessions[slot]


def template_main(argv: list[str]) -> NoReturn:
    """Entry point of the template: ``argv`` = control fd, protections JSON, config JSON."""
    ctl = socket.socket(fileno=int(argv[0]))
    protections = isolation.Protections.from_dict(json.loads(argv[1]))
    config = SandboxConfig.model_validate_json(argv[2])
    failed: dict[str, str] = {}
    for name in config.preload:
        try:
            importlib.import_module(name)
        except Exception as e:
            failed[name] = repr(e)
    try:  # hook: IPython's shell for IPython cells, made once here (see _ipython_cell)
        _ipython_cell.preload(config.preload)
    except Exception as e:
        failed["IPython"] = f"the IPython shell could not be made: {e!r}"
    isolation.prepare_template(config, protections)
    isolation.start_memory_watchdog(config, protections)
    compile("x = 1\nx", "<warm>", "exec")
    gc.collect()
    gc.freeze()
    ctl.send(proto.encode({"op": "ready", "pid": os.getpid(), "failed": failed}))
    signal.signal(signal.SIGCHLD, lambda *_: None)
    spares: list[tuple[int, socket.socket]] = []
    # Supervisors handed out, by slot. A pid is killed only while it is in here: it is then our
    # own unreaped child, so the number cannot have been reused by another process.
    sessions: dict[int, int] = {}
    while True:
        _reap_all(sessions)
        idle = 0.0 if len(spares) < SPARES else 1.0
        try:
            ready, _, _ = select.select([ctl], [], [], idle)
        except InterruptedError:
            continue
        if not ready:
            if len(spares) < SPARES:  # nothing to do: prepare the next sessions
                spares.append(_spawn_spare(ctl, spares, config, protections))
            continue
        try:
            data = ctl.recv(proto.MAX_PACKET)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)  # sessions die with us (PR_SET_PDEATHSIG)
        request = proto.decode(data)
        if request.get("op") == "kill":  # a supervisor stopped answering: clean up after it
            slot = int(request["slot"])
            if sessions.get(slot) == request["pid"]:
                with contextlib.suppress(OSError):
                    os.kill(sessions[slot], signal.SIGKILL)
            if protections.session_uids:
                isolation.kill_uid(isolation.session_uid(slot, protections))
            with contextlib.suppress(OSError):
                isolation.remove_workdir(os.path.join(protections.workspace_root, f"s{slot}"))
            ctl.send(proto.encode({"op": "killed", "pid": request["pid"]}))
        elif request.get("op") == "new":
            if not spares:
                spares.append(_spawn_spare(ctl, spares, config, protections))
            pid, link = spares.pop(0)
            host_end, session_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            assignment = {"slot": request["slot"], "protect": request["protect"]}
            socket.send_fds(link, [proto.encode(assignment)], [session_end.fileno()])
            link.close()
            session_end.close()
            sessions[int(request["slot"])] = pid
            reply = proto.encode({"op": "new", "pid": pid, "id": request.get("id")})
            socket.send_fds(ctl, [reply], [host_end.fileno()])
            host_end.close()


def _spawn_spare(
    ctl: socket.socket,
    spares: list[tuple[int, socket.socket]],
    config: SandboxConfig,
    protections: isolation.Protections,
) -> tuple[int, socket.socket]:
    """Fork a spare supervisor (with its holder) that waits for a session."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            ctl.close()
            ours.close()
            for _, other in spares:
                other.close()
            supervisor_main(theirs, config, protections)
        finally:
            os._exit(70)
    theirs.close()
    return pid, ours


def main() -> NoReturn:
    template_main(sys.argv[1:])


if __name__ == "__main__":
    main()
