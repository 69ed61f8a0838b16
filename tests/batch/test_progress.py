"""Progress output: plain lines off a terminal, a rich bar on one."""

from __future__ import annotations

import io

from tir_agent.batch import PlainProgress, RichProgress, make_progress


def test_plain_progress_lines() -> None:
    stream = io.StringIO()
    progress = PlainProgress(stream, interval=0.0)
    progress.start(total=3, done=1)
    progress.update({"code_rounds_executed": 2, "num_code_timeouts": 1})
    progress.update({"error": "ModelError: 500"})
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "generate: 3 samples (1 already done)"
    assert lines[-1].startswith("generate: 3/3 samples, ")
    assert lines[-1].endswith("ETA 0s, 2 executions, 1 timeouts, 1 errors")


def test_rich_bar_shows_counts() -> None:
    stream = io.StringIO()
    progress = RichProgress(stream)
    progress.start(total=2, done=0)
    progress.update({"code_rounds_executed": 3})
    progress.update({"num_code_timeouts": 1})
    progress.close()
    text = stream.getvalue()
    assert "2/2" in text and "exec 3 · timeouts 1 · errors 0" in text


def test_terminal_detection() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_progress(io.StringIO()), PlainProgress)
    assert isinstance(make_progress(Tty()), RichProgress)
    silent = io.StringIO()
    quiet = make_progress(silent, enabled=False)
    quiet.start(1, 0)
    quiet.close()
    assert silent.getvalue() == ""
