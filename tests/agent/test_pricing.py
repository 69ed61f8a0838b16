"""Cost: the shipped price table, overrides, ``result.cost``, and unknown models."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.agent.scripted import ScriptedServer, Step
from tir_agent import pricing
from tir_agent.agent import Agent
from tir_agent.errors import ConfigError
from tir_agent.formats.tags import PRESETS
from tir_agent.pricing import Price, default_prices, load_prices
from tir_agent.sandbox.base import Sandbox
from tir_agent.turn import Usage


def test_shipped_table_is_dated_and_sourced() -> None:
    table = default_prices()
    assert table.as_of and table.source and table.source.startswith("https://")
    for model in ("gpt-4o-mini", "gpt-4.1", "o4-mini", "o3", "gpt-5", "gpt-5-mini"):
        assert table.lookup(model) is not None, model
    assert table.lookup("gpt-4o-mini") == Price(input=0.15, cached_input=0.075, output=0.60)
    # Snapshots and provider prefixes find their model; an unknown name does not guess.
    assert table.lookup("gpt-4o-mini-2024-07-18") == table.lookup("gpt-4o-mini")
    assert table.lookup("openai/o4-mini") == table.lookup("o4-mini")
    assert table.lookup("gpt-4o-mini-tts") is None and table.lookup("my-model") is None


def test_cost_counts_cached_input_at_its_price() -> None:
    price = Price(input=1.0, cached_input=0.25, output=4.0)
    usage = Usage(input_tokens=1_000_000, cached_tokens=400_000, output_tokens=500_000)
    assert price.cost(usage) == pytest.approx(0.6 + 0.1 + 2.0)
    no_cache_price = Price(input=1.0, output=4.0)
    assert no_cache_price.cost(usage) == pytest.approx(1.0 + 2.0)


def test_overrides_from_a_mapping_and_a_file(tmp_path: Path) -> None:
    merged = default_prices().merged(
        {"gpt-4o-mini": {"input": 1, "output": 2}, "mine": {"input": 0, "output": 0}}
    )
    assert merged.lookup("gpt-4o-mini") == Price(input=1, output=2)
    assert merged.lookup("mine") is not None and merged.lookup("o3") == default_prices().lookup(
        "o3"
    )
    file = tmp_path / "prices.yaml"
    file.write_text("models:\n  local-llama: {input: 0.01, output: 0.02}\n")
    assert load_prices(file).lookup("local-llama") == Price(input=0.01, output=0.02)
    flat = tmp_path / "flat.yaml"
    flat.write_text("local-llama: {input: 0.01, cached_input: 0.001, output: 0.02}\n")
    assert load_prices(str(flat)).lookup("local-llama") == Price(
        input=0.01, cached_input=0.001, output=0.02
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {input: 1, outptu: 2}\n")
    with pytest.raises(ConfigError, match=r"price of 'm' is invalid.*USD per 1M tokens"):
        load_prices(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        Agent("gpt-4o-mini", api_key="k", prices=str(tmp_path / "missing.yaml"))


@pytest.mark.asyncio(loop_scope="module")
async def test_result_cost_and_one_warning_for_an_unknown_model(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pricing, "_warned", set())
    steps = [Step("Compute.", ["print(6 * 7)\n"]), Step("\\boxed{42}")]

    def agent(model: str, **options: object) -> Agent:
        server = ScriptedServer(list(steps), tags=PRESETS["openmath"])
        return Agent(
            model, base_url="http://scripted.test/v1", api_key="k", sandbox=sandbox,
            http_client=server.client(), user="{problem}", **options,
        )  # fmt: skip

    result = await agent("gpt-4o-mini").asolve("p")
    price = default_prices().models["gpt-4o-mini"]
    assert result.cost == pytest.approx(price.cost(result.usage)) and result.cost > 0
    assert result.to_record()["cost"] == result.cost
    cheap = await agent("gpt-4o-mini", prices={"gpt-4o-mini": {"input": 0, "output": 0}}).asolve(
        "p"
    )
    assert cheap.cost == 0.0
    with capture_logs() as logs:
        first = await agent("mystery-model").asolve("p")
        second = await agent("mystery-model").asolve("p")
    assert first.cost is None and second.cost is None and first.answer == "42"
    assert [e["model"] for e in logs if e["event"] == "cost.unknown"] == ["mystery-model"]


@pytest.mark.asyncio(loop_scope="module")
async def test_the_embedded_model_costs_nothing(sandbox: Sandbox) -> None:
    """``model="local"`` (here its server stood in for by the scripted one, as a ``base_url``)."""
    server = ScriptedServer([Step("\\boxed{1}")], tags=PRESETS["openmath"])
    agent = Agent(
        "local", base_url="http://scripted.test/v1", format="tags", api="chat",
        sandbox=sandbox, http_client=server.client(), user="{problem}",
    )  # fmt: skip
    with capture_logs() as logs:
        result = await agent.asolve("p")
    assert result.cost == 0.0 and not [e for e in logs if e["event"] == "cost.unknown"]
