"""The journal of a batch run: finished samples, durable as they end, and the final ordered file.

Every finished sample is appended to ``<output>.journal`` and flushed at once, as one line
``<row index>\t<json record>`` after a header naming the input's digest. A rerun reads it, drops a
torn last line (a crash mid-write), and knows which samples are done. :meth:`Journal.finalize`
writes the output in input order to a temporary file, renames it over the output
(``os.replace``) and removes the journal, so the output is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tir_agent.errors import ConfigError

__all__ = ["InputScan", "Journal", "journal_path", "output_path", "read_rows", "scan_input"]

_HEADER = "#tir-agent-journal "
_MISSING = object()
_WRITTEN = frozenset(
    {
        "generation", "predicted_answer", "symbolic_correct", "error", "messages", "prompt",
        "code_rounds_executed", "num_code_timeouts", "num_generated_tokens", "generation_time",
        "code_execution_time", "finish_status", "num_model_calls", "total_code_executions",
        "cost", "usage",
    }
)  # fmt: skip
"""Fields a run writes (an input may carry them from an earlier run: not compared on resume)."""


@dataclass(frozen=True, slots=True)
class InputScan:
    """What a validating pass over the input found."""

    rows: int
    """Number of rows (after ``max_samples``)."""
    sha256: str
    """Digest of the rows used, so a journal is never resumed against another input."""


def read_rows(
    path: Path, max_samples: int | None = None, select: range | None = None
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(row index, line number, row)`` for each non-blank line of a JSONL file, streamed.

    ``select`` keeps only the rows at those positions of the file (a chunk, see
    :mod:`tir_agent.batch.chunks`); indices then count from the first selected row, and
    ``max_samples`` applies within the selection (as in NeMo-Skills).
    """
    try:
        handle = path.open(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"Cannot read input file {path}: {e.strerror or e}") from None
    start, stop = (0, None) if select is None else (select.start, select.stop)
    with handle:
        index = 0
        position = -1
        for line_no, line in enumerate(handle, start=1):
            if max_samples is not None and index >= max_samples:
                return
            if not line.strip():
                continue
            position += 1
            if position < start:
                continue
            if stop is not None and position >= stop:
                return
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); each line "
                    "must be one JSON object"
                ) from None
            if not isinstance(row, dict):
                raise ConfigError(
                    f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}"
                )
            yield index, line_no, row
            index += 1


def scan_input(
    path: Path,
    validate: Callable[[dict[str, Any]], None] | None = None,
    max_samples: int | None = None,
    select: range | None = None,
) -> InputScan:
    """Check every row (``validate`` raises :class:`ConfigError`) and count and digest them
    (only the rows of ``select``, as :func:`read_rows`)."""
    digest = hashlib.sha256()
    rows = 0
    for _, line_no, row in read_rows(path, max_samples, select):
        if validate is not None:
            try:
                validate(row)
            except ConfigError as e:
                raise ConfigError(f"{path}:{line_no}: {e}") from None
        digest.update(json.dumps(row, sort_keys=True).encode())
        digest.update(b"\n")
        rows += 1
    if rows == 0:
        raise ConfigError(f"Input file {path} has no rows")
    return InputScan(rows=rows, sha256=digest.hexdigest())


def output_path(output: Path, seed: int | None) -> Path:
    """The output file of ``seed``: ``out.jsonl`` -> ``out-rs3.jsonl``; unseeded: ``output``."""
    if seed is None:
        return output
    return output.with_name(f"{output.stem}-rs{seed}{output.suffix}")


def journal_path(output: Path) -> Path:
    """Where the journal of ``output`` lives while a run is unfinished."""
    return output.with_name(output.name + ".journal")


class Journal:
    """The append-only record of finished samples of one output file."""

    def __init__(self, output: Path, scan: InputScan) -> None:
        self.output = output
        self.path = journal_path(output)
        self.scan = scan
        self.done: set[int] = set()
        """Indices with a finished record (including errors)."""
        self.errors: set[int] = set()
        """Indices whose latest record has an ``error`` field."""
        self.spent = 0.0
        """USD of every record's ``cost`` (retried samples counted each time: money spent)."""
        self._handle: TextIO | None = None

    def load(
        self, *, resume: bool, rows: Callable[[], Iterator[dict[str, Any]]] | None = None
    ) -> None:
        """Read what an earlier run finished (or start afresh when ``resume`` is false).

        ``rows`` streams the input rows; an existing output is adopted only if it matches them.
        """
        for stale in self.output.parent.glob(f".{self.output.name}.tmp-*"):
            stale.unlink(missing_ok=True)  # a final write cut short by a crash
        if not resume:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            self._read_existing()
        elif self.output.exists():
            self._adopt_output(rows() if rows is not None else None)
        if not self.path.exists():
            self._write_header()

    def _header(self) -> str:
        meta = {"input_sha256": self.scan.sha256, "rows": self.scan.rows}
        return _HEADER + json.dumps(meta) + "\n"

    def _write_header(self) -> None:
        with self.path.open("w", encoding="utf-8") as f:
            f.write(self._header())

    def _read_existing(self) -> None:
        good_end = 0
        with self.path.open("rb") as f:
            first = f.readline()
            if first.decode("utf-8", "replace") != self._header():
                raise ConfigError(
                    f"{self.path} belongs to a run over different input rows; remove it (or pass "
                    "--overwrite) to start over"
                )
            good_end = f.tell()
            for raw in f:
                parsed = _parse_journal_line(raw)
                if parsed is None:
                    break  # a torn line from a crash mid-write: drop it and what follows
                index, record = parsed
                if index >= self.scan.rows:
                    break
                self._note(index, record)
                good_end = f.tell()
        with self.path.open("r+b") as f:
            f.truncate(good_end)

    def _adopt_output(self, rows: Iterator[dict[str, Any]] | None) -> None:
        """A complete output from an earlier run: treat its rows as finished samples."""
        lines = 0
        with self.output.open(encoding="utf-8") as src:
            for _ in src:
                lines += 1
        fix = "pass --overwrite (skip_filled=false) to regenerate it"
        if lines != self.scan.rows:
            raise ConfigError(
                f"{self.output} exists with {lines} rows but the input has {self.scan.rows}; {fix}"
            )
        self._write_header()
        try:
            with (
                self.output.open(encoding="utf-8") as src,
                self.path.open("a", encoding="utf-8") as f,
            ):
                for index, line in enumerate(src):
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        raise ConfigError(
                            f"{self.output}:{index + 1} is not valid JSON; {fix}"
                        ) from None
                    row = next(rows) if rows is not None else {}
                    if any(
                        record.get(k, _MISSING) != v for k, v in row.items() if k not in _WRITTEN
                    ):
                        raise ConfigError(
                            f"{self.output}:{index + 1} does not hold input row {index + 1} (an "
                            f"output of another input?); {fix}"
                        )
                    self._note(index, record)
                    f.write(f"{index}\t{line.rstrip(chr(10))}\n")
        except ConfigError:
            self.path.unlink(missing_ok=True)
            raise

    def _note(self, index: int, record: Mapping[str, Any]) -> None:
        if isinstance(cost := record.get("cost"), int | float):
            self.spent += cost
        self.done.add(index)
        if record.get("error") is not None:
            self.errors.add(index)
        else:
            self.errors.discard(index)

    def pending(self, index: int, *, retry_errors: bool) -> bool:
        """Whether the sample at ``index`` still has to run."""
        return index not in self.done or (retry_errors and index in self.errors)

    def append(self, index: int, record: Mapping[str, Any]) -> None:
        """Record a finished sample durably (written and flushed before returning)."""
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        line = f"{index}\t{json.dumps(record, ensure_ascii=False)}\n"
        self._handle.write(line)
        self._handle.flush()
        self._note(index, record)

    def close(self) -> None:
        """Close the journal file (it stays on disk)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def finalize(self) -> None:
        """Write the output in input order, atomically, and remove the journal."""
        self.close()
        offsets: dict[int, tuple[int, int]] = {}
        with self.path.open("rb") as f:
            f.readline()
            while True:
                start = f.tell()
                raw = f.readline()
                if not raw:
                    break
                tab = raw.index(b"\t")
                offsets[int(raw[:tab])] = (start + tab + 1, len(raw) - tab - 1)
        missing = [i for i in range(self.scan.rows) if i not in offsets]
        if missing:
            raise RuntimeError(f"{self.path}: samples {missing[:10]} never finished")
        tmp = self.output.with_name(f".{self.output.name}.tmp-{os.getpid()}")
        try:
            with self.path.open("rb") as src, tmp.open("wb") as dst:
                for index in range(self.scan.rows):
                    start, length = offsets[index]
                    src.seek(start)
                    dst.write(src.read(length))
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, self.output)
        finally:
            tmp.unlink(missing_ok=True)
        self.path.unlink()


def _parse_journal_line(raw: bytes) -> tuple[int, dict[str, Any]] | None:
    if not raw.endswith(b"\n"):
        return None
    tab = raw.find(b"\t")
    if tab < 0:
        return None
    try:
        index = int(raw[:tab])
        record = json.loads(raw[tab + 1 :])
    except ValueError:
        return None
    return (index, record) if isinstance(record, dict) and index >= 0 else None
