"""What a solve costs: a dated price table shipped as data, overridable per agent or per run.

The table (``tir_agent/data/prices.yaml``) holds OpenAI's prices in USD per 1M input, cached
input and output tokens, with the date it was transcribed and its source. ``Agent(prices=...)``
and ``tir-agent generate ++prices=file.yaml`` add or replace models: a mapping
``{model: {input, cached_input, output}}``, or a YAML file holding one (at the top level or under
``models:``). A model is looked up by its name as sent, then without a provider prefix
(``openai/``) and a snapshot date (``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini``). A model with no
price gives ``cost=None`` and one warning per process, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tir_agent._log import get_logger
from tir_agent._resources import read_yaml
from tir_agent.errors import ConfigError
from tir_agent.turn import Usage

__all__ = ["Price", "PriceTable", "Prices", "cost_of", "default_prices", "load_prices"]

log = get_logger(__name__)

_TABLE = Path(__file__).resolve().parent / "data" / "prices.yaml"
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")


class Price(BaseModel):
    """The price of one model in USD per 1M tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    """Input (prompt) tokens."""
    output: float = Field(ge=0)
    """Output tokens, reasoning tokens included."""
    cached_input: float | None = Field(None, ge=0)
    """Input tokens served from the prompt cache; ``None``: the input price."""

    def cost(self, usage: Usage) -> float:
        """USD for ``usage`` at this price."""
        cached = min(usage.cached_tokens, usage.input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        return (
            (usage.input_tokens - cached) * self.input
            + cached * cached_price
            + usage.output_tokens * self.output
        ) / 1_000_000


Prices = Mapping[str, Price | Mapping[str, float]] | str | Path
"""What ``prices=`` takes: ``{model: {input, cached_input, output}}`` or a YAML file of that."""


class PriceTable:
    """Prices by model name, with the table's date and source."""

    def __init__(
        self, models: Mapping[str, Price], *, as_of: str | None = None, source: str | None = None
    ) -> None:
        self.models = dict(models)
        self.as_of = as_of
        self.source = source

    def lookup(self, model: str) -> Price | None:
        """The price of ``model`` (as sent, then without provider prefix and snapshot date)."""
        name = model.rsplit("/", 1)[-1]
        for candidate in (model, name, _DATED.sub("", name)):
            if candidate in self.models:
                return self.models[candidate]
        return None

    def merged(self, prices: Prices | None) -> PriceTable:
        """This table with ``prices`` added over it."""
        if prices is None:
            return self
        extra = load_prices(prices)
        return PriceTable({**self.models, **extra.models}, as_of=self.as_of, source=self.source)


def _parse(data: Any, where: str) -> PriceTable:
    if isinstance(data, Mapping) and isinstance(data.get("models"), Mapping):
        as_of, source, models = data.get("as_of"), data.get("source"), data["models"]
    elif isinstance(data, Mapping):
        as_of, source, models = None, None, data
    else:
        raise ConfigError(
            f"{where}: expected a mapping of model names to prices, like "
            "{'gpt-4o-mini': {'input': 0.15, 'cached_input': 0.075, 'output': 0.60}}"
        )
    table: dict[str, Price] = {}
    for name, value in models.items():
        try:
            table[str(name)] = value if isinstance(value, Price) else Price.model_validate(value)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}" for err in e.errors()
            )
            raise ConfigError(
                f"{where}: the price of {name!r} is invalid ({problems}); give USD per 1M tokens "
                "as {input: ..., cached_input: ..., output: ...}"
            ) from None
    return PriceTable(
        table,
        as_of=None if as_of is None else str(as_of),
        source=None if source is None else str(source),
    )


def load_prices(prices: Prices) -> PriceTable:
    """A table from a mapping or a YAML file (:data:`Prices`)."""
    if isinstance(prices, str | Path):
        path = Path(prices)
        return _parse(read_yaml(path, what="Price file"), f"Price file {path}")
    return _parse(prices, "prices")


@cache
def default_prices() -> PriceTable:
    """The shipped table (``tir_agent/data/prices.yaml``)."""
    return _parse(read_yaml(_TABLE, what="Price table"), f"Price table {_TABLE}")


_warned: set[str] = set()


def cost_of(usage: Usage, model: str, table: PriceTable | None = None) -> float | None:
    """USD for ``usage`` of ``model``; ``None`` (with one warning per model) when unpriced."""
    price = (table or default_prices()).lookup(model)
    if price is None:
        if model not in _warned:
            _warned.add(model)
            log.warning(
                "cost.unknown",
                model=model,
                reason="no price for this model: cost is None; pass prices={model: {input, "
                "cached_input, output}} (USD per 1M tokens) or ++prices=file.yaml",
            )
        return None
    return price.cost(usage)
