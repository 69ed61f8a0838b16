"""Re-record the cassettes of real model exchanges used by the default test run.

    python scripts/record_cassettes.py            # the embedded model -> tests/cassettes/local/
    OPENAI_API_KEY=sk-... python scripts/record_cassettes.py   # gpt-4o-mini -> tests/cassettes/openai/

Without a key it starts the embedded llama.cpp server (the default model, Qwen2.5-Coder-0.5B,
``bash scripts/setup.sh``); with ``OPENAI_API_KEY`` set it records the same scenarios against OpenAI
(``--model`` to pick another), plus the Responses API scenarios (``responses_*``: a reasoning
model, ``--responses-model``, default o4-mini, solving with several python_exec calls, its
reasoning items carried encrypted from request to request). Each scenario writes ``<name>.json`` (the cassette, secrets and
version headers filtered) and ``<name>.summary.json`` (what the replay must reproduce). The
sandbox runs for real while recording, as it does during replay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.local.scenarios import (  # noqa: E402
    CASSETTES,
    OPENAI_CASSETTES,
    OPENAI_ONLY,
    RECORDED,
    build_agent,
    recorder,
    run,
    summary,
)
from tir_agent.local_model import LlamaCppServer  # noqa: E402
from tir_agent.sandbox.local import LocalSandbox  # noqa: E402


async def record(
    base_url: str,
    chat_model: str,
    library: Path,
    only: list[str],
    responses_model: str | None = None,
) -> None:
    """Record every scenario (or those named in ``only``) into ``library``."""
    library.mkdir(parents=True, exist_ok=True)
    async with LocalSandbox() as sandbox:
        openai = "api.openai.com" in base_url
        for scenario in RECORDED + OPENAI_ONLY if openai else RECORDED:
            if only and scenario.name not in only:
                continue
            if scenario.api == "completions" and openai:
                continue  # OpenAI's chat models have no /v1/completions
            model = chat_model
            if scenario.openai_model is not None:
                model = responses_model or scenario.openai_model
            cassette = library / f"{scenario.name}.json"
            cassette.unlink(missing_ok=True)
            agent = build_agent(scenario, base_url, sandbox, model)
            with recorder("all", library).use_cassette(cassette.name):
                result, _ = await run(agent, scenario)
            await agent.aclose()
            (library / f"{scenario.name}.summary.json").write_text(
                json.dumps(summary(result), indent=2, ensure_ascii=False) + "\n"
            )
            print(
                f"recorded {scenario.name}: {result.status}, answer {result.answer}, "
                f"{len(result.executions)} executions, {len(result.turns)} model calls"
            )


def main() -> None:
    """Parse the command line and record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--model", default="gpt-4o-mini", help="OpenAI model when a key is set")
    parser.add_argument(
        "--responses-model", help="reasoning model of the responses_* scenarios (default o4-mini)"
    )
    parser.add_argument(
        "--base-url",
        help="an embedded-model server already running (LlamaCppServer().base_url) instead of "
        "starting one (the model must be the default, served as 'local')",
    )
    args = parser.parse_args()
    if os.environ.get("OPENAI_API_KEY"):
        asyncio.run(
            record(
                "https://api.openai.com/v1",
                args.model,
                OPENAI_CASSETTES,
                args.scenarios,
                args.responses_model,
            )
        )
        return
    if args.base_url:
        asyncio.run(record(args.base_url, "local", CASSETTES, args.scenarios))
        return
    with LlamaCppServer() as server:
        asyncio.run(record(server.base_url, "local", CASSETTES, args.scenarios))


if __name__ == "__main__":
    main()
