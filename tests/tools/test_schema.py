"""Schemas from a function itself: name, description and parameters from the signature, type
hints and docstring (Google, NumPy, reST), overrides, and the strict-mode form."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from tir_agent.errors import ConfigError
from tir_agent.tools import FunctionTool, Toolbox, ToolIndex, ToolOutcome, tool


def google(city: str, unit: Literal["c", "f"] = "c", days: int = 1) -> str:
    """Forecast for a city.

    Reads the national service.

    Args:
        city: The city's name.
        unit: "c" or "f".
        days: How many days ahead.
    """
    return f"{city} {unit} {days}"


def numpy_style(x: float, scale: float | None = None) -> float:
    """Scale a number.

    Parameters
    ----------
    x : float
        The number.
    scale : float, optional
        The factor; 2 when omitted.
    """
    return x * (scale or 2)


def rest_style(text: str, times: int) -> str:
    """Repeat a text.

    :param text: What to repeat.
    :param times: How often.
    """
    return text * times


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(BaseModel):
    """A line of an order."""

    sku: str
    quantity: int = 1


def order(items: list[Item], colour: Colour, note: str | None = None) -> str:
    """Place an order."""
    return f"{len(items)} {colour.value} {note}"


def props(t: FunctionTool) -> dict[str, Any]:
    return t.parameters["properties"]


@pytest.mark.parametrize(
    ("func", "description", "params"),
    [
        (
            google,
            "Forecast for a city.\n\nReads the national service.",
            {"city": "The city's name.", "unit": '"c" or "f".', "days": "How many days ahead."},
        ),
        (
            numpy_style,
            "Scale a number.",
            {"x": "The number.", "scale": "The factor; 2 when omitted."},
        ),
        (rest_style, "Repeat a text.", {"text": "What to repeat.", "times": "How often."}),
    ],
    ids=["google", "numpy", "rest"],
)
def test_docstring_styles_reach_the_schema(
    func: Any, description: str, params: dict[str, str]
) -> None:
    t = FunctionTool(func)
    assert t.name == func.__name__
    assert t.description == description
    assert {k: v.get("description") for k, v in props(t).items()} == params


def test_plain_schema_types_enum_defaults_nested() -> None:
    t = FunctionTool(google)
    assert t.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city's name."},
            "unit": {
                "type": "string",
                "enum": ["c", "f"],
                "default": "c",
                "description": '"c" or "f".',
            },
            "days": {"type": "integer", "default": 1, "description": "How many days ahead."},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    nested = FunctionTool(order).parameters
    assert nested["required"] == ["items", "colour"]
    assert nested["properties"]["items"] == {"type": "array", "items": {"$ref": "#/$defs/Item"}}
    assert nested["$defs"]["Item"]["properties"] == {
        "sku": {"type": "string"},
        "quantity": {"type": "integer", "default": 1},
    }
    assert nested["$defs"]["Colour"] == {"enum": ["red", "blue"], "type": "string"}


def test_strict_form() -> None:
    definition = FunctionTool(google).definition()["function"]
    assert definition["strict"] is True
    schema = definition["parameters"]
    assert schema["required"] == ["city", "unit", "days"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["days"] == {
        "anyOf": [{"type": "integer"}, {"type": "null"}],
        "description": "How many days ahead. (default: 1)",
    }
    item = FunctionTool(order).definition()["function"]["parameters"]["$defs"]["Item"]
    assert item["required"] == ["sku", "quantity"] and item["additionalProperties"] is False
    assert "default" not in str(item)


def test_free_form_parameters_are_not_strict() -> None:
    def tally(counts: dict[str, int], extra: Any = None) -> int:
        """Sum counts."""
        return sum(counts.values())

    assert "strict" not in FunctionTool(tally).definition()["function"]
    with pytest.raises(ConfigError, match="cannot be expressed in strict mode"):
        FunctionTool(tally, strict=True)
    assert "strict" not in FunctionTool(google, strict=False).definition()["function"]


def test_decorator_and_wrapper_override_name_and_description() -> None:
    @tool(name="weather", description="The weather.")
    def forecast(city: str) -> str:
        """Ignored."""
        return city

    assert (forecast.name, forecast.description) == ("weather", "The weather.")
    assert forecast("Oslo") == "Oslo"  # still callable as the function

    @tool
    def plain(x: int) -> int:
        """Identity."""
        return x

    assert plain.name == "plain"
    wrapped = tool(rest_style, name="repeat")
    assert wrapped.definition()["function"]["name"] == "repeat"
    assert wrapped.definition()["function"]["description"] == "Repeat a text."


def test_unsupported_signatures_are_config_errors() -> None:
    def star(*args: int) -> int:
        return 0

    with pytest.raises(ConfigError, match=r"\*args"):
        FunctionTool(star)
    with pytest.raises(ConfigError, match="no usable name"):
        FunctionTool(lambda x: x)


async def test_arguments_reach_the_function_typed() -> None:
    """BaseModel parameters arrive as model instances, enums as members."""
    index = await Toolbox([order]).open()
    outcome = await index.dispatch(
        "order", '{"items": [{"sku": "a"}, {"sku": "b", "quantity": 2}], "colour": "blue"}'
    )
    assert outcome.output == "2 blue None" and not outcome.failed
    outcome = await index.dispatch("order", '{"items": [{"quantity": 2}], "colour": "red"}')
    assert outcome.failed
    assert outcome.output == (
        "Error: invalid arguments for order: items/0: 'sku' is a required property."
    )


async def test_return_values_become_text() -> None:
    class Reading(BaseModel):
        value: float

    def reading() -> Reading:
        """A model."""
        return Reading(value=1.5)

    def nothing() -> None:
        """Nothing."""

    async def listing() -> list[int]:
        """A list."""
        await asyncio.sleep(0)
        return [1, 2]

    index = await Toolbox([reading, nothing, listing]).open()
    assert [(await index.dispatch(n, "{}")).output for n in ("reading", "nothing", "listing")] == [
        '{"value":1.5}',
        "",
        "[1,2]",
    ]


@dataclasses.dataclass
class Point:
    x: int
    y: int = 2


def shift(p: Point) -> int:
    """Sum of a point's coordinates."""
    assert isinstance(p, Point)
    return p.x + p.y


async def test_dataclass_parameters_are_nested_objects() -> None:
    definition = FunctionTool(shift).definition()["function"]["parameters"]
    assert definition["$defs"]["Point"]["required"] == ["x", "y"]
    index = await Toolbox([shift]).open()
    assert (await index.dispatch("shift", '{"p": {"x": 1, "y": null}}')).output == "3"
    assert (await index.dispatch("shift", '{"p": {"x": 1}}')).output == "3"


def test_keywords_strict_mode_rejects_make_a_tool_non_strict() -> None:
    def tags(names: set[str], kind: Literal["label"]) -> int:
        """Count tags."""
        return len(names)

    assert FunctionTool(tags).parameters["properties"]["names"]["uniqueItems"] is True
    assert "strict" not in FunctionTool(tags).definition()["function"]

    def single(kind: Literal["label"]) -> str:
        """One value."""
        return kind

    strict = FunctionTool(single).definition()["function"]["parameters"]["properties"]["kind"]
    assert strict == {"enum": ["label"], "type": "string"}


class BrokenSchemaTool:
    """A tool whose schema jsonschema cannot resolve (as an MCP server may list one)."""

    name = "broken"
    description = "Has a dangling $ref."
    parameters: dict[str, Any] = {  # noqa: RUF012
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Missing"}},
    }
    timeout = None

    def definition(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "parameters": self.parameters}}

    async def invoke(self, arguments: dict[str, Any]) -> ToolOutcome:
        return ToolOutcome(f"ran with {arguments}")


async def test_a_schema_jsonschema_cannot_use_leaves_the_check_to_the_tool() -> None:
    index = ToolIndex([BrokenSchemaTool()], timeout=5)
    outcome = await index.dispatch("broken", '{"a": 1}')
    assert (outcome.output, outcome.failed) == ("ran with {'a': 1}", False)
