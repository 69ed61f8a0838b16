"""Non-streamed chat and completions calls go through the SDK's plain ``post`` (no typed-dict walk
of the request, no model tree of the reply): the same request bodies as
``chat.completions.create`` / ``completions.create`` send, and the same :class:`ModelReply` as
reading the SDK's models gave (the old code's reading is kept below as the reference).

The endpoint is an ``httpx2.MockTransport`` (as in :mod:`tests.agent.scripted`): these tests
compare what two code paths put on the wire and read from it, byte-level, which a recording
transport shows directly."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from openai._models import construct_type
from openai.types import Completion
from openai.types.chat import ChatCompletion

from tir_agent.client import ModelClient
from tir_agent.errors import ModelError
from tir_agent.formats.base import ModelReply, ModelRequest, ToolCallData
from tir_agent.formats.native import tool_definition
from tir_agent.formats.replies import chat_reply, completion_reply
from tir_agent.usage import usage_from

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHAT_BODY: dict[str, Any] = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": "Let me compute.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "python_exec", "arguments": '{"code": "1"}'},
                    }
                ],
            },
        }
    ],
    "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
}


def _chat(**changes: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(CHAT_BODY))
    choice = body["choices"][0]
    for key, value in changes.items():
        where, _, name = key.partition("__")
        target = {"choice": choice, "message": choice["message"], "body": body}[where]
        if value is _DROP:
            target.pop(name, None)
        else:
            target[name] = value
    return body


_DROP = object()

CHAT_BODIES = [
    CHAT_BODY,
    _chat(message__content=None, message__tool_calls=None, choice__finish_reason="stop"),
    _chat(message__reasoning_content="thinking", choice__stop_reason="</code>"),
    _chat(message__reasoning="thinking too", choice__matched_stop=151643),
    _chat(choice__stop_reason=None, choice__matched_stop="x"),  # stop_reason wins, even None
    _chat(choice__finish_reason="eos"),  # a server's own reason: "stop"
    _chat(choice__finish_reason=None),
    _chat(body__usage=_DROP),
    _chat(
        body__usage={
            "prompt_tokens": 7,
            "completion_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 4},
        }
    ),
    _chat(body__usage={"prompt_tokens": 7, "completion_tokens": 9, "prompt_tokens_details": None}),
    _chat(  # (a call without "type": test_a_tool_call_without_its_type_is_still_a_call)
        message__tool_calls=[
            {"id": "b", "type": "custom", "custom": {"name": "x", "input": "y"}},
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        ]
    ),
]

COMPLETION_BODIES: list[dict[str, Any]] = [
    {
        "id": "x",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "text": "print(1)\n", "finish_reason": "stop", "stop_reason": "```"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
    },
    {
        "id": "x",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
    },
]


def _sdk_chat_reply(data: dict[str, Any]) -> ModelReply:
    """How the client read a chat completion through the SDK's models (the code replaced)."""
    completion: Any = construct_type(type_=ChatCompletion, value=data)
    choice = completion.choices[0]
    message = choice.message
    calls = [
        ToolCallData(tc.id, tc.function.name, tc.function.arguments)
        for tc in message.tool_calls or ()
        if tc.type == "function"
    ]
    extra = message.model_extra or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
    return ModelReply(
        text=message.content or "",
        finish_reason=_sdk_finish(choice.finish_reason),
        usage=usage_from(completion.usage),
        tool_calls=calls,
        matched_stop=_sdk_matched_stop(choice),
        reasoning=reasoning if isinstance(reasoning, str) else None,
    )


def _sdk_completion_reply(data: dict[str, Any]) -> ModelReply:
    completion: Any = construct_type(type_=Completion, value=data)
    choice = completion.choices[0]
    return ModelReply(
        text=choice.text,
        finish_reason=_sdk_finish(choice.finish_reason),
        usage=usage_from(completion.usage),
        tool_calls=[],
        matched_stop=_sdk_matched_stop(choice),
        reasoning=None,
    )


def _sdk_finish(value: Any) -> Any:
    if value in ("stop", "length", "tool_calls", "content_filter", "function_call"):
        return value
    return None if value is None else "stop"


def _sdk_matched_stop(choice: Any) -> str | int | None:
    extra = choice.model_extra or {}
    value = extra.get("stop_reason", extra.get("matched_stop"))
    return value if isinstance(value, str | int) else None


@pytest.mark.parametrize("body", CHAT_BODIES)
async def test_chat_replies_read_as_the_sdk_models_were(body: dict[str, Any]) -> None:
    assert chat_reply(json.loads(json.dumps(body))) == _sdk_chat_reply(body)


@pytest.mark.parametrize("body", COMPLETION_BODIES)
async def test_completion_replies_read_as_the_sdk_models_were(body: dict[str, Any]) -> None:
    assert completion_reply(json.loads(json.dumps(body))) == _sdk_completion_reply(body)


class Recorder:
    """Records each request (method, path, JSON body) and answers with ``reply``."""

    def __init__(self, reply: bytes | dict[str, Any]) -> None:
        self.reply = reply
        self.seen: list[tuple[str, str, Any]] = []

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append((request.method, request.url.path, json.loads(request.content)))
        if isinstance(self.reply, bytes):
            return httpx2.Response(200, content=self.reply)
        return httpx2.Response(200, json=self.reply)

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))


MESSAGES = [
    {"role": "system", "content": "Solve."},
    {"role": "user", "content": "What is 6*7? ünïcode"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c",
                "type": "function",
                "function": {"name": "python_exec", "arguments": '{"code": "print(6*7)"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c", "content": "42\n"},
]

REQUESTS = [
    ModelRequest(
        "chat",
        {
            "temperature": 0.7,
            "top_p": 0.95,
            "seed": 3,
            "extra_body": {"top_k": 20, "temperature": 0.5},  # extra_body wins, as in the SDK
            "messages": MESSAGES,
            "tools": [tool_definition()],
            "tool_choice": {"type": "function", "function": {"name": "python_exec"}},
            "stop": ["```output"],
            "max_tokens": 64,
        },
    ),
    ModelRequest("chat", {"messages": MESSAGES[:2]}),
    ModelRequest(
        "completions",
        {
            "prompt": "<|im_start|>user\nhi<|im_end|>\n",
            "stop": ["```output"],
            "seed": 1,
            "extra_body": {"repetition_penalty": 1.1},
        },
    ),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=["chat-full", "chat-bare", "completions"])
async def test_requests_are_what_the_sdk_create_sends(request_: ModelRequest) -> None:
    chat = request_.api == "chat"
    recorder = Recorder(CHAT_BODY if chat else COMPLETION_BODIES[0])
    client = ModelClient(
        model="m", base_url="http://endpoint.test/v1", api_key="k", http_client=recorder.http()
    )
    reply = await client.request(request_)
    sdk = openai.AsyncOpenAI(
        base_url="http://endpoint.test/v1", api_key="k", max_retries=0, http_client=recorder.http()
    )
    params = {**request_.params, "model": "m"}
    if chat:
        await sdk.chat.completions.create(**params)
    else:
        await sdk.completions.create(**params)
    ours, theirs = recorder.seen
    assert ours == theirs
    assert ours[1] == ("/v1/chat/completions" if chat else "/v1/completions")
    body = CHAT_BODY if chat else COMPLETION_BODIES[0]
    expected = _sdk_chat_reply(body) if chat else _sdk_completion_reply(body)
    assert (reply.text, reply.tool_calls, reply.usage) == (
        expected.text,
        expected.tool_calls,
        expected.usage,
    )


@pytest.mark.parametrize("reply", [b"<html>not an API</html>", {"error": "no choices"}])
async def test_a_reply_that_is_not_a_completion_is_a_model_error(
    reply: bytes | dict[str, Any],
) -> None:
    """A 200 that is not a completion (a web page, a proxy's own JSON) fails the call with a
    ModelError (an ``error`` record in a batch), naming what came back."""
    client = ModelClient(
        model="m",
        base_url="http://endpoint.test/v1",
        api_key="k",
        http_client=Recorder(reply).http(),
    )
    with pytest.raises(ModelError, match=r"not JSON|no choices") as caught:
        await client.request(ModelRequest("chat", {"messages": MESSAGES[:2]}))
    assert ("html" in str(caught.value)) == isinstance(reply, bytes)


async def test_a_tool_call_without_its_type_is_still_a_call() -> None:
    """Some OpenAI-compatible servers leave ``"type"`` out of a tool call. The SDK's models typed
    such a call as nothing, and it was dropped without a word (the model's code never ran and
    its reply read as a final answer); it is a function call, as the streamed path reads it. A
    call of another type is not ours."""
    function = {"name": "python_exec", "arguments": '{"code": "print(1)"}'}
    body = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "a", "function": function},
                        {"id": "b", "type": None, "function": function},
                        {"id": "c", "type": "custom", "custom": {"name": "x", "input": "y"}},
                        {"id": "d", "type": "custom", "function": function},
                    ],
                },
            }
        ]
    }
    reply = chat_reply(body)
    assert reply.tool_calls == [
        ToolCallData("a", "python_exec", '{"code": "print(1)"}'),
        ToolCallData("b", "python_exec", '{"code": "print(1)"}'),
    ]
