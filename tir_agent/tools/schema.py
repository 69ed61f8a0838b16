"""JSON schemas of a Python function's parameters, built by pydantic from its signature, type
hints and docstring, and their strict-mode form.

Parameters become the properties of one object schema: type hints through pydantic (``Literal``
-> ``enum``, a ``BaseModel`` -> a nested object in ``$defs``, ``X | None`` -> ``anyOf``), a
default makes a parameter optional, and each parameter's description comes from the docstring
(Google, NumPy or reST style, read by ``docstring_parser``). Pydantic's ``title`` keys are dropped:
they repeat the names and cost the model tokens.

Strict mode (OpenAI's constrained decoding of arguments) needs every object closed
(``additionalProperties: false``) with all its properties required and no ``default`` keywords.
:func:`strict_schema` rewrites a schema that way: an optional property becomes required and
nullable, and :func:`drop_strict_nulls` turns a ``null`` the model sent for it back into "not
given", so the function's default applies. A schema with free-form objects (``dict[str, int]``)
cannot be strict; :func:`strict_schema` returns ``None`` for it.
"""

from __future__ import annotations

import copy
import inspect
import json
import sys
import typing
from collections.abc import Callable
from typing import Any

import docstring_parser
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from tir_agent.errors import ConfigError

_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "contains", "if", "then", "else")
_SCHEMA_MAPS = ("properties", "$defs", "patternProperties")


def describe(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The function's description and its parameters' descriptions, from its docstring."""
    doc = docstring_parser.parse(inspect.getdoc(func) or "")
    parts = [part for part in (doc.short_description, doc.long_description) if part]
    params = {p.arg_name: p.description for p in doc.params if p.description}
    return "\n\n".join(parts), params


def arguments_model(
    func: Callable[..., Any], name: str, descriptions: dict[str, str]
) -> type[BaseModel]:
    """A pydantic model of ``func``'s parameters (each one a field, with its description)."""
    signature = inspect.signature(func)
    hints = _parameter_hints(func, signature, name)
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(
                f"Tool {name}: *{param.name} / **{param.name} cannot be described to a model; "
                "give the function named parameters"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise ConfigError(
                f"Tool {name}: parameter {param.name!r} is positional-only; a model passes "
                "arguments by name"
            )
        hint = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hint, Field(default, description=descriptions.get(param.name)))
    try:
        return pydantic.create_model(  # type: ignore[call-overload, no-any-return]
            f"{name}_arguments",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
    except (pydantic.PydanticSchemaGenerationError, TypeError) as e:
        raise ConfigError(
            f"Tool {name}: a parameter's type has no JSON schema ({e}); use JSON types, "
            "Literal, Enum, dataclasses or pydantic models"
        ) from e


def _parameter_hints(
    func: Callable[..., Any], signature: inspect.Signature, name: str
) -> dict[str, Any]:
    """The parameters' type hints, evaluated (``from __future__ import annotations`` makes them
    strings); the return annotation is not needed and not evaluated."""

    def shim() -> None: ...

    shim.__annotations__ = {
        p.name: p.annotation
        for p in signature.parameters.values()
        if p.annotation is not inspect.Parameter.empty
    }
    target = inspect.unwrap(func)
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    namespace = getattr(target, "__globals__", None)
    if namespace is None:
        namespace = vars(module) if module is not None else {}
    try:
        return typing.get_type_hints(shim, globalns=namespace, include_extras=True)
    except Exception as e:  # a name that does not resolve (a class defined in a function, say)
        raise ConfigError(
            f"Tool {name}: cannot evaluate the type hints of its parameters ({e}); define the "
            "types they name at module level"
        ) from e


def parameters_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of an arguments model, without pydantic's ``title`` keys."""
    try:
        schema = model.model_json_schema()
    except pydantic.PydanticInvalidForJsonSchema as e:
        raise ConfigError(f"{model.__name__}: {e}") from e
    result: dict[str, Any] = _without_titles(schema)
    return result


def _without_titles(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: _without_titles(v) for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_without_titles(v) for v in value]
        elif key in _SCHEMA_VALUES:
            out[key] = _without_titles(value)
        else:
            out[key] = value
    return out


def strict_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """``schema`` in OpenAI's strict form, or ``None`` when it cannot be made strict (an object
    without fixed properties, such as ``dict[str, int]``)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "$ref" in node and len(node) > 1:  # strict mode takes no keywords beside a $ref
            ref = node.pop("$ref")
            target = defs.get(ref.rsplit("/", 1)[-1], {})
            node = {**target, **node}
        default = node.pop("default", None)  # strict mode takes no defaults: say it in words
        if default is not None and "description" in node:
            node["description"] += f" (default: {json.dumps(default)})"
        elif default is not None:
            node["description"] = f"Default: {json.dumps(default)}."
        if not node.keys() & {"type", "$ref", "anyOf", "allOf", "oneOf", "enum", "const"}:
            raise _NotStrict  # ``Any``: strict mode needs a type
        if node.keys() & _NOT_IN_STRICT:
            raise _NotStrict
        if "const" in node:  # a one-value Literal, as the enum strict mode surely takes
            node["enum"] = [node.pop("const")]
        if node.get("type") == "object" or "properties" in node:
            if "properties" not in node or node.get("additionalProperties") not in (None, False):
                raise _NotStrict
            properties = node.get("properties", {})
            required = set(node.get("required", []))
            node["properties"] = {
                key: walk(value if key in required else _nullable(value))
                for key, value in properties.items()
            }
            node["required"] = list(properties)
            node["additionalProperties"] = False
        for key in _SCHEMA_LISTS:
            if key in node:
                node[key] = [walk(v) for v in node[key]]
        for key in ("items", "prefixItems"):
            if isinstance(node.get(key), dict):
                node[key] = walk(node[key])
        if "$defs" in node:
            node["$defs"] = {k: walk(v) for k, v in node["$defs"].items()}
        return node

    try:
        result: dict[str, Any] = walk(copy.deepcopy(schema))
    except _NotStrict:
        return None
    return result


_NOT_IN_STRICT = frozenset(
    {
        "uniqueItems",
        "patternProperties",
        "unevaluatedProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedItems",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
    }
)
"""Keywords OpenAI's strict mode rejects (a ``set[int]`` gives ``uniqueItems``): such a tool is
sent non-strict."""


class _NotStrict(Exception):
    """A schema part that strict mode cannot express."""


def _allows_null(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_allows_null(v) for v in node.get("anyOf", []) if isinstance(v, dict))


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """An optional property as strict mode has it: required, and ``null`` meaning "not given"."""
    if _allows_null(node):
        return node
    description = node.get("description")
    inner = {k: v for k, v in node.items() if k not in ("description", "default")}
    out: dict[str, Any] = {"anyOf": [inner, {"type": "null"}]}
    if description:
        out["description"] = description
    if "default" in node:
        out["default"] = node["default"]
    return out


def drop_strict_nulls(value: Any, schema: dict[str, Any]) -> Any:
    """Arguments sent against the strict form of ``schema`` as the original reads them: a ``null``
    for an optional property that does not allow ``null`` is removed (its default applies)."""
    defs = schema.get("$defs", {})

    def walk(value: Any, node: dict[str, Any]) -> Any:
        if "$ref" in node:
            node = {**defs.get(node["$ref"].rsplit("/", 1)[-1], {}), **node}
            node.pop("$ref")
        if isinstance(value, dict) and "properties" in node:
            required = set(node.get("required", []))
            out = {}
            for key, item in value.items():
                sub = node["properties"].get(key)
                if sub is None:
                    out[key] = item
                elif item is None and key not in required and not _allows_null(sub):
                    continue
                else:
                    out[key] = walk(item, sub)
            return out
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            return [walk(item, node["items"]) for item in value]
        if "anyOf" in node and value is not None:
            for option in node["anyOf"]:
                if isinstance(option, dict) and ("properties" in option or "$ref" in option):
                    return walk(value, option)
        return value

    return walk(value, schema)
