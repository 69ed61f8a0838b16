"""A Python function as a tool: its schema from its signature and docstring, its calls validated
and run (sync functions in a worker thread, off the event loop)."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, overload

import pydantic
import pydantic_core

from tir_agent.errors import ConfigError
from tir_agent.tools.base import ToolOutcome
from tir_agent.tools.schema import (
    arguments_model,
    describe,
    drop_strict_nulls,
    parameters_schema,
    strict_schema,
)


class FunctionTool:
    """A Python function the model can call.

    ``FunctionTool(func)`` reads the name (``func.__name__``), description and parameters from the
    function; ``name=``, ``description=`` override them. ``strict``: ``None`` (default) sends the
    strict-mode schema when the parameters can be expressed in it, ``True`` requires it (a
    :class:`ConfigError` if they cannot), ``False`` never sends it. ``timeout`` overrides the
    agent's ``tool_timeout`` for this tool.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        if not callable(func):
            raise ConfigError(f"A tool must be a function, not {type(func).__name__}")
        self.func = func
        name = name or getattr(func, "__name__", None)
        if not name or name == "<lambda>":
            raise ConfigError(
                f"Tool {func!r} has no usable name; wrap it as tool(func, name='...')"
            )
        self._name = name
        doc, params = describe(func)
        self._description = description if description is not None else doc
        self.model = arguments_model(func, name, params)
        self._parameters = parameters_schema(self.model)
        strict_form = strict_schema(self._parameters) if strict is not False else None
        if strict and strict_form is None:
            raise ConfigError(
                f"Tool {name}: strict=True, but its parameters cannot be expressed in strict "
                "mode (a free-form dict or an untyped parameter); give them fixed types or "
                "leave strict unset"
            )
        self._strict = strict_form
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"Tool {name}: timeout={timeout} must be positive (or None)")
        self._timeout = timeout
        target = func.__call__ if not inspect.isroutine(func) else func  # type: ignore[operator]
        self.is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(func)

    @property
    def name(self) -> str:
        """The function name the model calls."""
        return self._name

    @property
    def description(self) -> str:
        """The docstring's summary and body (or the override)."""
        return self._description

    @property
    def parameters(self) -> dict[str, Any]:
        """The arguments' JSON schema as validated (optional parameters not required)."""
        return self._parameters

    @property
    def strict(self) -> bool:
        """Whether the definition is sent in strict mode."""
        return self._strict is not None

    @property
    def timeout(self) -> float | None:
        """Seconds one call may take (``None``: the agent's ``tool_timeout``)."""
        return self._timeout

    def definition(self) -> dict[str, Any]:
        """The chat-completions tool definition (the strict form when strict)."""
        function: dict[str, Any] = {"name": self._name, "description": self._description}
        if self._strict is not None:
            function["parameters"] = self._strict
            function["strict"] = True
        else:
            function["parameters"] = self._parameters
        return {"type": "function", "function": function}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself (a decorated function stays usable as one)."""
        return self.func(*args, **kwargs)

    async def invoke(self, arguments: dict[str, Any]) -> ToolOutcome:
        """Call the function with arguments valid against :meth:`definition`; what it raises is
        the model's error text, not an exception."""
        if self._strict is not None:  # a null for an optional parameter: use its default
            arguments = drop_strict_nulls(arguments, self._parameters)
        try:
            values = self.model.model_validate(arguments)
        except pydantic.ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'arguments'}: {err['msg']}"
                for err in e.errors()
            )
            return ToolOutcome(f"Error: invalid arguments for {self._name}: {problems}", True)
        # Fields as the function takes them: BaseModel parameters as model instances.
        kwargs = {key: getattr(values, key) for key in type(values).model_fields}
        try:
            if self.is_async:
                value = await self.func(**kwargs)
            else:
                value = await asyncio.to_thread(functools.partial(self.func, **kwargs))
                if inspect.isawaitable(value):
                    value = await value
        except asyncio.CancelledError:
            raise
        except Exception as e:
            return ToolOutcome(f"Error: {self._name} raised {type(e).__name__}: {e}", True)
        return ToolOutcome(as_text(value))

    def __repr__(self) -> str:
        return f"FunctionTool({self._name!r})"


def as_text(value: Any) -> str:
    """A function's return value as the tool message's text: a string as it is, ``None`` as
    nothing, anything else as JSON (pydantic models, dataclasses, dicts, lists ...)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value, fallback=str).decode()


@overload
def tool(
    func: Callable[..., Any],
    *,
    name: str | None = ...,
    description: str | None = ...,
    strict: bool | None = ...,
    timeout: float | None = ...,
) -> FunctionTool: ...


@overload
def tool(
    func: None = ...,
    *,
    name: str | None = ...,
    description: str | None = ...,
    strict: bool | None = ...,
    timeout: float | None = ...,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool | None = None,
    timeout: float | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make ``func`` a :class:`FunctionTool`, overriding what it says about itself: as a
    decorator (``@tool`` or ``@tool(name="weather")``) or a wrapper (``tool(func, name=...)``).
    The tool stays callable as the function."""

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description, strict=strict, timeout=timeout)

    return wrap if func is None else wrap(func)
