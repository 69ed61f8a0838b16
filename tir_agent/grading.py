"""Answer equivalence with HuggingFace ``math-verify`` (REFERENCE.md §9), usable from any thread.

Both answers are normalized first (:func:`normalize_answer`: surrounding ``$``, ``\\$``, a trailing
``%``/``\\%`` and a trailing ``.`` go), identical strings are equal at once, and single letters
``A``–``J`` are compared as multiple-choice letters. Everything else goes to ``math_verify``:
``verify(parse(expected), parse(predicted))`` with both wrapped in ``\\boxed{}``.

``math-verify`` bounds its own time with ``signal.alarm``, which Python allows only in the main
thread. So:

- in the main thread, :func:`is_equivalent` calls it inline with its own timeouts;
- elsewhere (a worker thread, an asyncio executor), it sends the pair to a worker process, whose
  main thread can use those timeouts; the caller also keeps a wall-clock deadline and kills a
  worker stuck in C code (huge integer powers do that), counting the pair as not equivalent;
- :func:`grade_many` grades a whole file: pairs are deduplicated (multi-seed runs repeat answers
  a lot), trivial ones are settled in the parent, and the rest go in chunks to a pool of worker
  processes (inline instead when there are only a few and the caller is the main thread).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tir_agent._log import get_logger
from tir_agent.answers import extract_answer
from tir_agent.errors import ConfigError, TirAgentError

__all__ = [
    "GradingPool",
    "choice_letter",
    "close_pools",
    "grade_many",
    "grade_records",
    "is_equivalent",
    "normalize_answer",
]

log = get_logger(__name__)

DEFAULT_TIMEOUT = 5.0
"""Seconds math-verify may spend on each of parsing the two answers and comparing them."""

_CHOICE = re.compile(r"^(?:\\text(?:bf)?\{)?\(?\s*(?:\\text(?:bf)?\{)?([A-J])\}?\s*\)?\}?$")
_INTEGER = re.compile(r"^[+-]?\d{1,50}$")
_INLINE_LIMIT = 64
"""Up to this many pairs needing math-verify are graded inline (main thread only): starting worker
processes costs about as much as grading this many pairs."""


def normalize_answer(answer: str) -> str:
    """The answer without decoration that does not change its value.

    Strips surrounding whitespace, dollar signs (``$...$`` delimiters, ``\\$`` currency), a
    trailing ``%``/``\\%`` and a trailing full stop, repeatedly (``\\$10\\%.`` becomes ``10``).
    """
    text = answer.replace("\\$", "").replace("$", "").strip()
    while True:
        before = text
        text = text.rstrip()
        text = text.removesuffix(".")
        text = text.removesuffix("\\%").removesuffix("%")
        text = text.strip()
        if text == before:
            return text


def choice_letter(answer: str) -> str | None:
    """The multiple-choice letter ``A``–``J`` an answer consists of (``C``, ``(C)``,
    ``\\text{C}``), or ``None``."""
    match = _CHOICE.match(normalize_answer(answer))
    return match[1] if match else None


def _settle(predicted: str | None, expected: str | None) -> bool | tuple[str, str]:
    """The verdict when no math is needed, else the normalized pair for math-verify."""
    if predicted is None or expected is None:
        return False
    pred, gold = normalize_answer(predicted), normalize_answer(expected)
    if not pred or not gold:
        return False
    if pred == gold:
        return True
    if _INTEGER.match(pred) and _INTEGER.match(gold):
        return int(pred) == int(gold)  # exact, and the commonest case by far
    gold_letter = choice_letter(gold)
    if gold_letter is not None:
        return choice_letter(pred) == gold_letter
    return pred, gold


def _seconds(timeout: float | None) -> int | None:
    # signal.alarm counts whole seconds.
    return None if timeout is None else max(1, math.ceil(timeout))


def _verify(predicted: str, expected: str, timeout: int | None) -> bool:
    """math-verify on a normalized pair; ``timeout`` must be ``None`` outside the main thread."""
    # Imported here, not at module level: it loads sympy (math-verify ships no type hints).
    from math_verify import parse, verify  # type: ignore[import-untyped]

    # math-verify's signal.alarm replaces and then cancels any timer the caller had armed (a
    # pytest-timeout, a CLI's own alarm): put it back, minus the time spent here.
    pending, interval = signal.getitimer(signal.ITIMER_REAL) if timeout else (0.0, 0.0)
    start = time.monotonic()
    try:
        gold = parse("\\boxed{" + expected + "}", parsing_timeout=timeout)
        pred = parse("\\boxed{" + predicted + "}", parsing_timeout=timeout)
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=timeout))
    except Exception:  # math-verify raises on malformed input and on its own timeouts
        return False
    finally:
        if pending > 0:
            left = max(pending - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def is_equivalent(
    predicted: str | None, expected: str | None, *, timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """Whether ``predicted`` is mathematically the same answer as ``expected``.

    ``None`` or empty answers are never equivalent. Works from any thread: outside the main
    thread the comparison runs in a worker process (see the module docstring).
    """
    settled = _settle(predicted, expected)
    if isinstance(settled, bool):
        return settled
    if _in_main_thread():
        return _verify(*settled, _seconds(timeout))
    return _shared_pool(timeout).grade_settled([settled])[0]


def grade_many(
    pairs: Iterable[tuple[str | None, str | None]],
    *,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    pool: GradingPool | None = None,
) -> list[bool]:
    """:func:`is_equivalent` for every ``(predicted, expected)`` pair, in order, in parallel.

    ``workers`` worker processes (default: the CPU count; ``0`` grades inline in this thread,
    with math-verify's timeouts only in the main thread). The workers are shared by calls with
    the same settings and stay warm until exit or :func:`close_pools`; pass ``pool`` to use your
    own :class:`GradingPool` instead.
    """
    verdicts: list[bool | None] = []
    pending: dict[tuple[str, str], list[int]] = {}
    for index, (predicted, expected) in enumerate(pairs):
        settled = _settle(predicted, expected)
        if isinstance(settled, bool):
            verdicts.append(settled)
        else:
            verdicts.append(None)
            pending.setdefault(settled, []).append(index)
    unique = list(pending)
    if not unique:
        results: list[bool] = []
    elif workers == 0 or (pool is None and len(unique) <= _INLINE_LIMIT and _in_main_thread()):
        seconds = _seconds(timeout) if _in_main_thread() else None
        results = [_verify(pred, gold, seconds) for pred, gold in unique]
    else:
        results = (pool or _shared_pool(timeout, workers)).grade_settled(unique)
    for pair, verdict in zip(unique, results, strict=True):
        for index in pending[pair]:
            verdicts[index] = verdict
    return [bool(v) for v in verdicts]


def grade_records(
    records: Sequence[Mapping[str, Any]],
    *,
    expected_key: str = "expected_answer",
    generation_key: str = "generation",
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    pool: GradingPool | None = None,
) -> list[dict[str, Any]]:
    """Each record plus ``predicted_answer`` (the last ``\\boxed{}`` of its generation, or
    ``None``) and ``symbolic_correct``, graded in parallel by :func:`grade_many`.

    A record without ``expected_key`` is a :class:`~tir_agent.errors.ConfigError` naming it; a
    record without a generation (a failed sample) gets no answer and is not correct.
    """
    graded: list[dict[str, Any]] = []
    pairs: list[tuple[str | None, str | None]] = []
    for index, record in enumerate(records):
        if record.get(expected_key) is None:
            raise ConfigError(
                f"record {index} has no {expected_key!r} to grade against (keys: "
                f"{', '.join(record)}); pass expected_key= to use another field"
            )
        generation = record.get(generation_key)
        predicted = extract_answer(generation) if isinstance(generation, str) else None
        graded.append({**record, "predicted_answer": predicted})
        pairs.append((predicted, str(record[expected_key])))
    verdicts = grade_many(pairs, workers=workers, timeout=timeout, pool=pool)
    for record, verdict in zip(graded, verdicts, strict=True):
        record["symbolic_correct"] = verdict
    return graded


# --- worker processes ---------------------------------------------------------------------------


def _worker_loop() -> None:
    """A grading worker (``python -m tir_agent.grading``): reads JSON requests
    ``{"pairs": [[predicted, expected], ...], "timeout": seconds}`` on stdin and writes one verdict
    line (``1``/``0``) per pair."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills us
    # Keep the protocol on its own descriptor: anything a library prints goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for line in sys.stdin:
        request = json.loads(line)
        for predicted, expected in request["pairs"]:
            protocol.write("1\n" if _verify(predicted, expected, request["timeout"]) else "0\n")
            protocol.flush()


class _Worker:
    """One worker process and the pipes to it."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # The child must import this very package, wherever the parent found it.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tir_agent.grading"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin = self.process.stdin
        self._stdout = self.process.stdout.fileno()
        self._buffer = b""
        self.fresh = True

    def send(self, pairs: Sequence[tuple[str, str]], seconds: int | None) -> None:
        request = json.dumps({"pairs": pairs, "timeout": seconds}) + "\n"
        self._stdin.write(request.encode())
        self._stdin.flush()

    def verdict(self, wait: float) -> bool:
        """The next verdict; ``TimeoutError`` after ``wait`` seconds, ``EOFError`` if it died."""
        deadline = time.monotonic() + wait
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._stdout], [], [], remaining)[0]:
                raise TimeoutError
            data = os.read(self._stdout, 65536)
            if not data:
                raise EOFError("grading worker exited")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line == b"1"

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._stdin.close()  # EOF ends the worker's loop
            self.process.wait(2)
        self.kill()


class GradingPool:
    """Worker processes that run math-verify in their own main thread, with its timeouts.

    Thread-safe: many threads may call :meth:`grade` at once. Use as a context manager or call
    :meth:`close`; workers start on first use.
    """

    chunk_size = 32
    startup_grace = 60.0
    """Extra seconds a new worker may take before its first verdict (it imports sympy)."""

    def __init__(self, workers: int | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self.timeout = timeout
        self._seconds = _seconds(timeout)
        # A pair takes three math-verify steps, each bounded by the timeout inside the worker.
        self._deadline = 3 * float(self._seconds or 0) + 2.0
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._started = 0
        self._closed = False
        self._all: set[_Worker] = set()

    def __enter__(self) -> GradingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers."""
        with self._lock:
            self._closed = True
            workers, self._all = self._all, set()
        for worker in workers:
            worker.stop()

    def grade(self, pairs: Iterable[tuple[str | None, str | None]]) -> list[bool]:
        """:func:`grade_many` on this pool's workers."""
        return grade_many(pairs, timeout=self.timeout, pool=self)

    def grade_settled(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """math-verify verdicts for normalized pairs, in order."""
        chunks = [
            list(pairs[i : i + self.chunk_size]) for i in range(0, len(pairs), self.chunk_size)
        ]
        if len(chunks) == 1:
            return self._run_chunk(chunks[0])
        with ThreadPoolExecutor(max_workers=min(self.workers, len(chunks))) as threads:
            return [v for verdicts in threads.map(self._run_chunk, chunks) for v in verdicts]

    def _acquire(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("GradingPool is closed")
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            if self._started < self.workers:
                self._started += 1
                worker = _Worker()
                self._all.add(worker)
                return worker
        return self._idle.get()

    def _release(self, worker: _Worker) -> None:
        self._idle.put(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            self._started -= 1

    def _run_chunk(self, chunk: list[tuple[str, str]]) -> list[bool]:
        verdicts: list[bool] = []
        while len(verdicts) < len(chunk):
            worker = self._acquire()
            rest = chunk[len(verdicts) :]
            try:
                worker.send(rest, self._seconds)
                for _ in rest:
                    wait = self._deadline + (self.startup_grace if worker.fresh else 0.0)
                    verdicts.append(worker.verdict(wait))
                    worker.fresh = False
            except (TimeoutError, EOFError, OSError) as e:
                self._discard(worker)
                if worker.fresh and not isinstance(e, TimeoutError):
                    raise TirAgentError(
                        f"a grading worker process failed to start ({e!r}); grade inline with "
                        "workers=0 to see the error"
                    ) from e
                # Stuck beyond its own timeouts (C code ignores signals) or died: the pair it
                # was on counts as not equivalent; the rest go to a new worker.
                log.warning("grading.worker_lost", pair_index=len(verdicts), chunk=len(chunk))
                verdicts.append(False)
                continue
            self._release(worker)
        return verdicts


_shared: dict[tuple[float, int | None], GradingPool] = {}
_shared_lock = threading.Lock()


def _shared_pool(timeout: float, workers: int | None = None) -> GradingPool:
    """The process pool shared by :func:`is_equivalent` and :func:`grade_many` calls with these
    settings: its workers stay warm between calls and stop at exit or :func:`close_pools`."""
    with _shared_lock:
        pool = _shared.get((timeout, workers))
        if pool is None:
            pool = _shared[(timeout, workers)] = GradingPool(workers, timeout=timeout)
        return pool


def close_pools() -> None:
    """Stop the worker processes of the shared pools (they restart on next use)."""
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)


if __name__ == "__main__":
    _worker_loop()
