"""NeMo-Skills' manual sharding: ``num_chunks=N chunk_id=K`` runs one contiguous slice of the input.

Slurm-style clusters run one job per chunk. Chunk ``K`` of ``N`` holds the rows NeMo-Skills gives it
(``calculate_chunk_indices``: ``N`` contiguous slices, the first ``rows % N`` of them one row
longer) and writes ``<output stem>_chunk_K<suffix>`` (per seed: ``out-rs0_chunk_K.jsonl``), with
its own journal, so each chunk is resumable on its own. When a chunk job finishes and every chunk
file of its output exists, the chunks are concatenated in order into the output and removed (as
NeMo-Skills' ``merge_chunks`` does); ``tir-agent merge`` does the same by hand. A chunk file exists
only once that chunk is complete (it is written atomically at the end of its run), so "all chunk
files exist" means "all chunks are done".

Several jobs may finish at once and both merge: each writes the same bytes to its own temporary
file and renames it over the output, so the result is the same whoever wins.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tir_agent.errors import ConfigError

__all__ = ["Chunk", "chunk_path", "chunk_rows", "count_rows", "merge_chunks", "missing_chunks"]


def chunk_rows(total: int, num_chunks: int, chunk_id: int) -> range:
    """Positions of the input rows in chunk ``chunk_id`` of ``num_chunks`` (NeMo-Skills' split)."""
    if num_chunks < 1 or not 0 <= chunk_id < num_chunks:
        raise ConfigError(
            f"chunk_id={chunk_id} is outside 0..{num_chunks - 1} (num_chunks={num_chunks})"
        )
    base, extra = divmod(total, num_chunks)
    start = chunk_id * base + min(chunk_id, extra)
    return range(start, start + base + (1 if chunk_id < extra else 0))


def chunk_path(output: Path, chunk_id: int) -> Path:
    """The file of one chunk: ``out.jsonl`` -> ``out_chunk_3.jsonl`` (NeMo-Skills' name)."""
    return output.with_name(f"{output.stem}_chunk_{chunk_id}{output.suffix}")


def count_rows(path: Path) -> int:
    """Non-blank lines of a JSONL file (the rows, as :func:`~.journal.read_rows` counts them)."""
    try:
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError as e:
        raise ConfigError(f"Cannot read input file {path}: {e.strerror or e}") from None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a chunked run."""

    id: int
    """``chunk_id``, 0-based."""
    count: int
    """``num_chunks``."""
    rows: range
    """Positions of its rows in the input file."""

    @classmethod
    def of(cls, input_path: Path, num_chunks: int, chunk_id: int) -> Chunk:
        """Chunk ``chunk_id`` of ``num_chunks`` of ``input_path``."""
        return cls(chunk_id, num_chunks, chunk_rows(count_rows(input_path), num_chunks, chunk_id))

    def path(self, output: Path) -> Path:
        """This chunk's file for ``output`` (one seed's output file)."""
        return chunk_path(output, self.id)


def missing_chunks(output: Path, num_chunks: int) -> list[int]:
    """Ids of the chunks of ``output`` whose file does not exist (not finished yet)."""
    return [k for k in range(num_chunks) if not chunk_path(output, k).exists()]


def merge_chunks(output: Path, num_chunks: int) -> bool:
    """Concatenate the ``num_chunks`` chunk files of ``output`` into it, in order, then remove them.

    Returns ``False`` (and changes nothing) while a chunk file is missing and the output does not
    exist yet; ``True`` once the output holds the merged chunks (also when another job merged
    them first). The output is written to a temporary file and renamed, never half-written.
    """
    paths = [chunk_path(output, k) for k in range(num_chunks)]
    handles: list[BinaryIO] = []
    try:
        for path in paths:
            try:
                handles.append(path.open("rb"))
            except FileNotFoundError:
                return output.exists() and not any(p.exists() for p in paths)
        tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
        try:
            with tmp.open("wb") as dst:
                for handle in handles:
                    data = handle.read()
                    dst.write(data)
                    if data and not data.endswith(b"\n"):
                        dst.write(b"\n")
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        for handle in handles:
            handle.close()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return True
