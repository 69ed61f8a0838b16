"""``generate`` with a real Agent against a scripted OpenAI-compatible server (real wire format)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.batch.server import ReactiveServer, problems
from tir_agent.batch import generate
from tir_agent.config import load_config
from tir_agent.errors import ConfigError
from tir_agent.formats.tags import PRESETS

try:
    from tir_agent.sandbox.local import LocalSandbox
except ImportError:  # until the sandbox lands: the agent tests' in-process stand-in
    from tests.agent._standin import LocalSandbox  # type: ignore[assignment]

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[Any]:
    async with LocalSandbox() as box:
        yield box


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def run(
    tmp_path: Path, rows: list[dict[str, Any]], overrides: list[str], sandbox: Any,
    server: ReactiveServer | None = None,
) -> tuple[Path, ReactiveServer]:  # fmt: skip
    server = server or ReactiveServer()
    inp = write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    config = load_config(
        overrides=["model=scripted", "server_address=http://scripted.test/v1", "api_key=k",
                   "prompt_config=generic/math", "max_retries=0", *overrides],
        env={},
    )  # fmt: skip
    await generate(inp, out, config, sandbox=sandbox, http_client=server.client())
    return out, server


@pytest.mark.parametrize(
    ("fmt", "tags"),
    [("tools", "openmath"), ("tags", "qwen"), ("tags", "tool-output"), ("tags", "llama3")],
)
async def test_rows_keep_their_fields_and_gain_statistics(
    tmp_path: Path, sandbox: Any, fmt: str, tags: str
) -> None:
    rows = problems(6)
    out, server = await run(
        tmp_path, rows, [f"format={fmt}", f"code_tags={tags}", "max_concurrent_requests=4"],
        sandbox, ReactiveServer(PRESETS[tags]),
    )  # fmt: skip
    data = read(out)
    assert len(server.requests) == 12  # two model calls per sample
    for row, record in zip(rows, data, strict=True):
        assert {k: record[k] for k in row} == row
        assert f"RESULT={row['expected_answer']}\n" in record["generation"]
        assert record["predicted_answer"] == row["expected_answer"]
        assert record["code_rounds_executed"] == 1 and record["num_code_timeouts"] == 0
        assert record["num_generated_tokens"] > 0
        assert record["generation_time"] >= record["code_execution_time"] >= 0
        assert "error" not in record and "messages" not in record


async def test_openai_prompt_format_sends_row_messages(tmp_path: Path, sandbox: Any) -> None:
    rows = [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "What is 2 + 3?"}], "id": 7}
    ]  # fmt: skip
    out, server = await run(tmp_path, rows, ["prompt_format=openai"], sandbox)
    assert server.requests[0]["messages"][:2] == rows[0]["messages"]
    assert read(out)[0]["predicted_answer"] == "5"


async def test_failed_sample_gets_error_and_run_continues(tmp_path: Path, sandbox: Any) -> None:
    rows = [*problems(3), {"problem": "FAIL please", "expected_answer": "0"}]
    out, _ = await run(tmp_path, rows, [], sandbox)
    data = read(out)
    assert [("error" in r) for r in data] == [False, False, False, True]
    assert "400" in data[3]["error"]


async def test_seeds_sampling_defaults_and_conversation(tmp_path: Path, sandbox: Any) -> None:
    out, server = await run(
        tmp_path, problems(2), ["num_random_seeds=2", "starting_seed=5", "keep_conversation=true"],
        sandbox,
    )  # fmt: skip
    assert not out.exists()
    for seed in (5, 6):
        data = read(tmp_path / f"out-rs{seed}.jsonl")
        assert [r["id"] for r in data] == [0, 1]
        assert data[0]["messages"][-1]["role"] == "assistant"
    first_calls = [r for r in server.requests if len(r["messages"]) == 1]
    assert sorted(r["seed"] for r in first_calls) == [5, 5, 6, 6]
    assert {(r["temperature"], r["top_p"]) for r in server.requests} == {(0.7, 0.95)}


async def test_system_message_and_suffix_reach_the_request(tmp_path: Path, sandbox: Any) -> None:
    _, server = await run(
        tmp_path,
        problems(1),
        ["system_message=You are {terse}.", "prompt_suffix=' Think.'"],
        sandbox,
    )
    messages = server.requests[0]["messages"]
    assert messages[0] == {"role": "system", "content": "You are {terse}."}
    assert messages[1]["content"].endswith("What is 0 + 0? Think.")


async def test_row_missing_a_template_key_fails_before_any_request(
    tmp_path: Path, sandbox: Any
) -> None:
    server = ReactiveServer()
    rows = [*problems(2), {"question": "What is 1 + 1?"}]
    with pytest.raises(ConfigError, match=r"in.jsonl:3: the row lacks problem"):
        await run(tmp_path, rows, [], sandbox, server)
    assert server.requests == []
    assert not (tmp_path / "out.jsonl").exists()


def children() -> set[int]:
    """Live child processes of this test process."""
    import os
    from pathlib import Path as P

    pids: set[int] = set()
    for task in P(f"/proc/{os.getpid()}/task").iterdir():
        text = (task / "children").read_text().split()
        pids.update(int(p) for p in text)
    return pids


@pytest.mark.slow
async def test_configured_sandbox_is_started_and_closed(tmp_path: Path) -> None:
    before = children()
    out, _ = await run(tmp_path, problems(2), ["sandbox.max_sessions=2"], None)
    assert [r["code_rounds_executed"] for r in read(out)] == [1, 1]
    assert [r["predicted_answer"] for r in read(out)] == ["0", "3"]
    assert children() <= before  # the sandbox made for the run is gone
