"""A scripted OpenAI Responses API endpoint (``POST /v1/responses``) for tests, as an httpx2
transport.

No API key is available where these tests run, so the replies are built from the ``openai``
SDK's own types (``openai.types.responses``: ``Response``, its output items and the stream
events), validated by them and serialised as the API sends them: a JSON body, or SSE events
(``event: <type>`` / ``data: <json>``) when the request streams. The script is the same
format-neutral :class:`~tests.agent.scripted.Step` list as the chat server's.

As a *reasoning model* (``reasoning=True``) every reply starts with a ``reasoning`` item whose
``encrypted_content`` is present only when the request asked for it
(``include=["reasoning.encrypted_content"]``). Each request is checked the way the real API
behaves: a reasoning item resent without ``encrypted_content`` under ``store=false`` is a 404
("Item with id 'rs_...' not found"), a ``function_call_output`` must answer a call the model
made, and ``previous_response_id`` must name a stored response. :attr:`carried` records, per
request, whether every reasoning item the model produced so far reached it (resent in ``input``,
or held by the server through ``previous_response_id``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx2
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseError,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)
from pydantic import BaseModel

from tests.agent.scripted import Fail, Step, _error


@dataclass
class Stored:
    """A response the server keeps (``store=true``): its full conversation after it."""

    items: list[dict[str, Any]] = field(default_factory=list)


class ScriptedResponses:
    """Answers ``/v1/responses`` requests from a list of steps; records every request."""

    def __init__(
        self,
        steps: list[Step | Fail],
        *,
        reasoning: bool = False,
        chunk: int = 7,
        headers: dict[str, str] | None = None,
        fail_stream: str | None = None,
    ) -> None:
        self.steps = list(steps)
        self.fail_stream = fail_stream
        """Streams end with ``response.failed`` carrying this message."""
        self.reasoning = reasoning
        self.chunk = chunk
        self.extra_headers = headers or {}
        self.requests: list[dict[str, Any]] = []
        self.carried: list[bool] = []
        """Per request: every reasoning item produced before it reached the model."""
        self.produced: list[str] = []
        """Ids of the reasoning items produced so far."""
        self.stored: dict[str, Stored] = {}
        self._calls: set[str] = set()
        self._previous_input_tokens = 0

    def client(self) -> httpx2.AsyncClient:
        """An httpx2 client speaking to this server."""
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))

    # -- one exchange ---------------------------------------------------------------------

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        """One HTTP exchange."""
        if not request.url.path.endswith("/responses"):
            return _error(404, f"no route {request.url.path} on the scripted Responses server")
        body = json.loads(request.content)
        self.requests.append(body)
        conversation, problem = self._conversation(body)
        if problem is not None:
            return problem
        self.carried.append(self._reasoning_seen(conversation))
        if not self.steps:
            return _error(500, "script exhausted: the agent made more calls than scripted")
        step = self.steps.pop(0)
        if isinstance(step, Fail):
            return _error(step.status, step.message, headers=step.headers)
        response = self.render(step, body, conversation)
        if body.get("store"):
            self.stored[response.id] = Stored(
                conversation
                + [item.model_dump(mode="json", exclude_none=True) for item in response.output]
            )
        headers = {"x-request-id": f"req_{len(self.requests)}", **self.extra_headers}
        if body.get("stream"):
            events = b"".join(_sse(e) for e in self._events(response, body))
            return httpx2.Response(
                200, headers={**headers, "content-type": "text/event-stream"}, content=events
            )
        return httpx2.Response(200, headers=headers, json=response.model_dump(mode="json"))

    def _conversation(
        self, body: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], httpx2.Response | None]:
        """The whole conversation the request stands for, or the error the API would send."""
        items: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            if previous not in self.stored:
                return [], _error(404, f"Previous response with id '{previous}' not found.")
            items = list(self.stored[previous].items)
        given = body.get("input")
        given = [{"role": "user", "content": given}] if isinstance(given, str) else given
        for item in given:
            if item.get("type") == "reasoning" and not body.get("store"):
                if item.get("encrypted_content") is None:
                    return [], _error(
                        404,
                        f"Item with id '{item.get('id')}' not found. Items are not persisted when "
                        "`store` is set to false. Try again with `store` set to true, or remove "
                        "this item from your input.",
                    )
                if item["encrypted_content"] != _encrypted(item["id"]):
                    return [], _error(400, f"The encrypted content of '{item['id']}' is invalid.")
            if (
                item.get("type") == "function_call_output"
                and item.get("call_id") not in self._calls
            ):
                return [], _error(
                    400,
                    f"No tool call found for function call output with call_id {item.get('call_id')}.",
                )
        return items + given, None

    def _reasoning_seen(self, conversation: list[dict[str, Any]]) -> bool:
        seen = {item.get("id") for item in conversation if item.get("type") == "reasoning"}
        return all(rid in seen for rid in self.produced)

    # -- building the reply from the SDK's types -------------------------------------------

    def render(
        self, step: Step, body: dict[str, Any], conversation: list[dict[str, Any]]
    ) -> Response:
        """The ``Response`` for ``step``, validated by the SDK's model."""
        n = len(self.requests)
        output: list[dict[str, Any]] = []
        if self.reasoning:
            rid = f"rs_{n:04d}"
            self.produced.append(rid)
            reasoning: dict[str, Any] = {
                "type": "reasoning",
                "id": rid,
                "summary": [{"type": "summary_text", "text": f"Planning step {n}."}],
                "status": None,
            }
            if "reasoning.encrypted_content" in (body.get("include") or ()):
                reasoning["encrypted_content"] = _encrypted(rid)
            output.append(reasoning)
        if step.text:
            output.append(
                {
                    "type": "message",
                    "id": f"msg_{n:04d}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": step.text, "annotations": []}],
                }
            )
        if body.get("tool_choice") != "none":
            arguments = step.arguments or [json.dumps({"code": c}) for c in step.code]
            for i, args in enumerate(arguments):
                call_id = f"call_{n}_{i}"
                self._calls.add(call_id)
                output.append(
                    {
                        "type": "function_call",
                        "id": f"fc_{n:04d}_{i}",
                        "call_id": call_id,
                        "name": step.names[i] if step.names else "python_exec",
                        "arguments": args,
                        "status": "completed",
                    }
                )
        input_tokens = len(json.dumps(conversation)) // 4 + len(body.get("instructions") or "") // 4
        cached = min(self._previous_input_tokens, input_tokens) // 64 * 64  # a cached prefix
        self._previous_input_tokens = input_tokens
        reasoning_tokens = 50 if self.reasoning else 0
        output_tokens = (
            reasoning_tokens
            + max(1, len(step.text) // 4)
            + sum(len(item.get("arguments", "")) // 4 for item in output)
        )
        incomplete = step.finish_reason == "length"
        return Response.model_validate(
            {
                "id": f"resp_{n:04d}",
                "object": "response",
                "created_at": 1700000000 + n,
                "model": body["model"],
                "status": "incomplete" if incomplete else "completed",
                "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": _tool_choice(body.get("tool_choice", "auto")),
                "tools": body.get("tools", []),
                "store": bool(body.get("store", True)),
                "instructions": body.get("instructions"),
                "previous_response_id": body.get("previous_response_id"),
                "usage": {
                    "input_tokens": input_tokens,
                    "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
                    "output_tokens": output_tokens,
                    "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                    "total_tokens": input_tokens + output_tokens,
                },
            }
        )

    def _events(self, response: Response, body: dict[str, Any]) -> list[BaseModel]:
        """The SSE events the API sends for ``response``, as the SDK's event types."""
        events: list[BaseModel] = []

        def seq() -> int:
            return len(events)

        start = response.model_copy(update={"status": "in_progress", "output": [], "usage": None})
        events.append(
            ResponseCreatedEvent(type="response.created", response=start, sequence_number=0)
        )
        events.append(
            ResponseInProgressEvent(type="response.in_progress", response=start, sequence_number=1)
        )
        n = self.chunk
        for index, item in enumerate(response.output):
            opened = item.model_copy(update={"status": "in_progress"})
            if item.type == "message":
                opened = item.model_copy(update={"status": "in_progress", "content": []})
            if item.type == "function_call":
                opened = item.model_copy(update={"status": "in_progress", "arguments": ""})
            events.append(
                ResponseOutputItemAddedEvent(
                    type="response.output_item.added",
                    item=opened,
                    output_index=index,
                    sequence_number=seq(),
                )
            )
            if item.type == "message":
                part = item.content[0]
                empty = part.model_copy(update={"text": ""})
                common = {"item_id": item.id, "output_index": index, "content_index": 0}
                events.append(
                    ResponseContentPartAddedEvent(
                        type="response.content_part.added",
                        part=empty,
                        sequence_number=seq(),
                        **common,
                    )
                )
                text = part.text  # type: ignore[union-attr]
                for i in range(0, len(text), n):
                    events.append(
                        ResponseTextDeltaEvent(
                            type="response.output_text.delta",
                            delta=text[i : i + n],
                            logprobs=[],
                            sequence_number=seq(),
                            **common,
                        )
                    )
                events.append(
                    ResponseTextDoneEvent(
                        type="response.output_text.done",
                        text=text,
                        logprobs=[],
                        sequence_number=seq(),
                        **common,
                    )
                )
                events.append(
                    ResponseContentPartDoneEvent(
                        type="response.content_part.done",
                        part=part,
                        sequence_number=seq(),
                        **common,
                    )
                )
            if item.type == "function_call":
                args = item.arguments
                for i in range(0, len(args), n):
                    events.append(
                        ResponseFunctionCallArgumentsDeltaEvent(
                            type="response.function_call_arguments.delta",
                            delta=args[i : i + n],
                            item_id=item.id or "",
                            output_index=index,
                            sequence_number=seq(),
                        )
                    )
                events.append(
                    ResponseFunctionCallArgumentsDoneEvent(
                        type="response.function_call_arguments.done",
                        arguments=args,
                        name=item.name,
                        item_id=item.id or "",
                        output_index=index,
                        sequence_number=seq(),
                    )
                )
            events.append(
                ResponseOutputItemDoneEvent(
                    type="response.output_item.done",
                    item=item,
                    output_index=index,
                    sequence_number=seq(),
                )
            )
        if self.fail_stream is not None:  # the endpoint gives up mid-stream
            failed = response.model_copy(
                update={
                    "status": "failed",
                    "error": ResponseError(code="server_error", message=self.fail_stream),
                }
            )
            events.append(
                ResponseFailedEvent(type="response.failed", response=failed, sequence_number=seq())
            )
        elif response.status == "incomplete":
            events.append(
                ResponseIncompleteEvent(
                    type="response.incomplete", response=response, sequence_number=seq()
                )
            )
        else:
            events.append(
                ResponseCompletedEvent(
                    type="response.completed", response=response, sequence_number=seq()
                )
            )
        return events


def _encrypted(rid: str) -> str:
    """The opaque blob the scripted model returns for reasoning item ``rid``."""
    return f"gAAAA-scripted-{rid}"


def _tool_choice(choice: Any) -> Any:
    return choice


def _sse(event: BaseModel) -> bytes:
    data = event.model_dump_json()
    kind = json.loads(data)["type"]
    return f"event: {kind}\ndata: {data}\n\n".encode()
