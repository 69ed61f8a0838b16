"""examples/quickstart.ipynb runs in a real Jupyter kernel (nbclient + ipykernel).

The kernel talks to the real embedded model: the test starts the llama.cpp server and hands its
URL to the notebook through ``TIR_AGENT_BASE_URL``. Checked: the synchronous ``solve()`` inside
the kernel's running event loop, the rich display of a result, and streaming output that reaches
the client in many messages while the cell still runs (not all at the end).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tir_agent.local_model import LlamaCppServer

# Two real solves with the 0.5B default: minutes on 2 busy cores (a bound against hangs).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


class TimedClient(NotebookClient):
    """Notes when each output message of each cell reached the client."""

    arrivals: dict[int, list[float]]

    def output(self, outs: Any, msg: Any, display_id: Any, cell_index: int) -> Any:
        self.arrivals.setdefault(cell_index, []).append(time.monotonic())
        return super().output(outs, msg, display_id, cell_index)


def _cell(nb: Any, needle: str) -> tuple[int, Any]:
    return next((i, c) for i, c in enumerate(nb.cells) if needle in c.source)


def test_quickstart_notebook_runs_in_a_real_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    with LlamaCppServer() as server:
        monkeypatch.setenv("TIR_AGENT_BASE_URL", server.base_url)
        client = TimedClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        )
        client.arrivals = {}
        client.execute()  # raises CellExecutionError if any cell fails

    index, solved = _cell(nb, 'result = agent.solve("')
    display = next(o for o in solved.outputs if o.output_type == "execute_result")
    assert {"text/markdown", "text/html", "text/plain"} <= set(display.data)
    assert "**status:**" in display.data["text/markdown"]
    assert "executions" in display.data["text/html"]

    _, summary = _cell(nb, 'print("answer:", result.answer')
    assert "status:" in "".join(o.get("text", "") for o in summary.outputs)

    index, streamed = _cell(nb, "async for event in agent.stream(")
    text = "".join(o.get("text", "") for o in streamed.outputs if o.output_type == "stream")
    assert "answer:" in text and len(text) > 40
    times = client.arrivals[index]
    assert len(times) >= 5, "streamed text should arrive in many messages"
    assert times[-1] - times[0] > 0.3, "all output arrived at once: not streamed"

    shown = nb.cells[index + 1]  # the cell that displays the streamed result
    assert shown.source.strip() == "streamed"
    assert (
        "text/markdown" in next(o for o in shown.outputs if o.output_type == "execute_result").data
    )
