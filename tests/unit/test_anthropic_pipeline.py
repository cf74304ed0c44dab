"""The Anthropic pieces of the pipeline: provider, codecs, schema, routing, auth, fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from anthropic.types import ModelInfo

from kubellm_gateway.api.anthropic import SCHEMA, model_info, models_page
from kubellm_gateway.asgi import Message
from kubellm_gateway.auth.apikeys import presented_key
from kubellm_gateway.codecs import AnthropicFromOpenAI, AnthropicRelay
from kubellm_gateway.errors import APIError
from kubellm_gateway.providers.base import (
    Exchange,
    FailureReason,
    Headers,
    Operation,
    Provider,
    UpstreamFailure,
)
from kubellm_gateway.providers.mock import MockProvider
from kubellm_gateway.providers.openai_anthropic import AnthropicProvider
from kubellm_gateway.providers.pool import ProviderPool
from kubellm_gateway.providers.sse import DONE
from kubellm_gateway.proxy import Proxy, exhausted
from kubellm_gateway.resources import LLMProviderSpec
from kubellm_gateway.routing import ModelEntry, Route, capability_route
from kubellm_gateway.telemetry.metrics import Call, Metrics
from tests.unit.conftest import model_entry

HELLO = [{"role": "user", "content": "Hello!"}]


def anthropic_provider(**anthropic: Any) -> AnthropicProvider:
    spec = LLMProviderSpec.model_validate(
        {
            "type": "Anthropic",
            "baseURL": "https://claude.example",
            "apiKeySecretRef": {"name": "s", "key": "k"},
            **({"anthropic": anthropic} if anthropic else {}),
        }
    )
    return AnthropicProvider("default/claude", spec, "sk-ant-test")


# --- the provider -------------------------------------------------------------------------------


def test_provider_sends_its_key_and_pinned_version_never_a_bearer() -> None:
    provider = anthropic_provider()
    assert provider.url(Operation.chat, "claude-x") == "https://claude.example/v1/messages"
    assert provider.headers({"x-request-id": "rid"}) == {
        "x-request-id": "rid",
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-ant-test",
    }
    assert anthropic_provider(version="2026-10-21").headers({})["anthropic-version"] == (
        "2026-10-21"
    )


def test_provider_payloads() -> None:
    provider = anthropic_provider(defaultMaxTokens=77)
    native = {"model": "claude", "max_tokens": 5, "messages": HELLO, "top_k": 3}
    assert orjson.loads(provider.payload(Operation.messages, native, "claude-x", False)) == {
        **native,
        "model": "claude-x",
    }
    chat = orjson.loads(
        provider.payload(Operation.chat, {"model": "c", "messages": HELLO}, "claude-x", True)
    )
    assert chat == {"model": "claude-x", "messages": HELLO, "max_tokens": 77, "stream": True}
    with pytest.raises(APIError, match="`seed`"):
        provider.payload(Operation.chat, {"model": "c", "messages": HELLO, "seed": 1}, "x", False)


@pytest.mark.parametrize("op", [Operation.embeddings, Operation.completions])
async def test_provider_refuses_what_anthropic_has_no_api_for(op: Operation) -> None:
    with pytest.raises(APIError) as caught:
        await anthropic_provider().open(op, {"model": "c", "input": "x"}, "claude-x", False, {})
    assert caught.value.status == 400
    assert f"Anthropic has no {op.value} API" in caught.value.message


def test_operations_each_provider_takes() -> None:
    assert AnthropicProvider.operations == {Operation.chat, Operation.messages}
    assert Operation.messages not in MockProvider.operations


# --- codecs -------------------------------------------------------------------------------------


def frames(out: bytes) -> list[tuple[bytes, Any]]:
    pairs = [f.split(b"\n") for f in out.split(b"\n\n") if f]
    return [(n.removeprefix(b"event: "), orjson.loads(d.removeprefix(b"data: "))) for n, d in pairs]


def test_anthropic_relay_rebuilds_event_lines_and_counts_tokens() -> None:
    call = Call("messages", "rid", stream=True)
    relay = AnthropicRelay(call)
    start = {
        "type": "message_start",
        "message": {
            "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 1}
        },
    }
    out, done = relay.events(
        [
            orjson.dumps(start),
            b'{"type":"ping"}',
            b'{"index":0}',  # no type: nothing a client could use
            b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}',
        ]
    )
    assert not done
    assert [name for name, _ in frames(out)] == [b"message_start", b"ping", b"content_block_delta"]
    assert (call.input_tokens, call.output_tokens) == (105, 1)
    # message_delta's counts are totals; those it leaves out stay as they were.
    relay.events([b'{"type":"message_delta","usage":{"output_tokens":9}}'])
    assert (call.input_tokens, call.output_tokens) == (105, 9)
    delta = b'{"type":"message_delta","usage":{"input_tokens":7,"output_tokens":12}}'
    out, done = relay.events([delta, b'{"type":"message_stop"}', b'{"type":"ping"}'])
    assert done
    assert [name for name, _ in frames(out)] == [b"message_delta", b"message_stop"]
    assert (call.input_tokens, call.output_tokens) == (107, 12)  # the cache reads kept


def test_anthropic_relay_ends_at_an_error_event_and_reads_whole_messages() -> None:
    call = Call("messages", "rid")
    relay = AnthropicRelay(call)
    out, done = relay.events([b'{"type":"error","error":{"type":"api_error","message":"x"}}'])
    assert done and frames(out)[0][0] == b"error"
    body = b'{"type":"message","usage":{"input_tokens":3,"output_tokens":4}}'
    assert relay.response(body) == body  # bytes as they came
    assert (call.input_tokens, call.output_tokens) == (3, 4)
    with pytest.raises(APIError) as caught:
        relay.response(b"{")
    assert caught.value.status == 502


def test_anthropic_from_openai_translates_and_counts() -> None:
    call = Call("messages", "rid", stream=True)
    codec = AnthropicFromOpenAI(call)
    assert codec.op is Operation.chat
    assert (
        codec.request({"model": "m", "max_tokens": 3, "messages": HELLO})["max_completion_tokens"]
        == 3
    )
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    out, done = codec.events(
        [
            orjson.dumps(
                {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
            ),
            orjson.dumps({"id": "chatcmpl-1", "choices": [], "usage": usage}),
            DONE,
        ]
    )
    assert done
    assert [name for name, _ in frames(out)][-2:] == [b"message_delta", b"message_stop"]
    assert (call.input_tokens, call.output_tokens) == (4, 2)
    error = frames(codec.error_event(APIError(504, "slow", type="server_error")))
    assert error == [
        (b"error", {"type": "error", "error": {"type": "timeout_error", "message": "slow"}})
    ]


def test_anthropic_from_openai_refuses_a_body_that_is_not_a_completion() -> None:
    with pytest.raises(APIError) as caught:
        AnthropicFromOpenAI(Call("messages", "rid")).response(b"[]")
    assert caught.value.status == 502


# --- the schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 5, "messages": HELLO}, "model"),
        ({"model": "", "max_tokens": 5, "messages": HELLO}, "model"),
        ({"model": "m", "messages": HELLO}, "max_tokens"),
        ({"model": "m", "max_tokens": -1, "messages": HELLO}, "max_tokens"),
        ({"model": "m", "max_tokens": True, "messages": HELLO}, "max_tokens"),
        ({"model": "m", "max_tokens": 5}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": "hi"}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": HELLO, "system": 5}, "system"),
        ({"model": "m", "max_tokens": 5, "messages": HELLO, "stream": "yes"}, "stream"),
    ],
)
def test_schema_validation(body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as caught:
        SCHEMA.validate(Operation.messages, body)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_schema_validation_passes_a_whole_request() -> None:
    body = {"model": "m", "max_tokens": 0, "messages": HELLO, "system": "s", "stream": False}
    assert SCHEMA.validate(Operation.messages, body) == "m"


def test_betas_reach_anthropic_backends_only() -> None:
    headers = [(b"anthropic-beta", b"prompt-caching-2024-07-31"), (b"anthropic-beta", b"x-2")]
    pick = SCHEMA.codecs(Call("messages", "r"), {}, Operation.messages, Operation.chat, headers)
    assert pick(anthropic_provider()).forward() == {
        "anthropic-beta": "prompt-caching-2024-07-31,x-2"
    }
    mock = MockProvider("default/mock", LLMProviderSpec.model_validate({"type": "Mock"}))
    assert pick(mock).forward() == {}  # an OpenAI-shaped backend has no use for them


def test_schema_picks_the_codec_by_provider() -> None:
    pick = SCHEMA.codecs(Call("messages", "r"), {}, Operation.messages, Operation.chat, [])
    assert isinstance(pick(anthropic_provider()), AnthropicRelay)
    mock = MockProvider("default/mock", LLMProviderSpec.model_validate({"type": "Mock"}))
    assert isinstance(pick(mock), AnthropicFromOpenAI)


def test_models_in_anthropic_shape() -> None:
    entry = model_entry()
    info = model_info(entry)
    assert ModelInfo.model_validate(info).id == "chat"
    assert info["created_at"] == "1970-01-01T00:00:00Z"
    assert models_page([entry]) == {
        "data": [info],
        "has_more": False,
        "first_id": "chat",
        "last_id": "chat",
    }
    assert models_page([]) == {"data": [], "has_more": False, "first_id": None, "last_id": None}


def test_messages_are_served_by_chat_models() -> None:
    assert (
        capability_route(model_entry(capabilities=frozenset({Operation.chat})), Operation.messages)
        is Operation.chat
    )
    assert (
        capability_route(
            model_entry(capabilities=frozenset({Operation.embeddings})), Operation.messages
        )
        is None
    )


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([(b"x-api-key", b"sk-1")], "sk-1"),
        ([(b"x-api-key", b"  ")], None),
        ([(b"authorization", b"Bearer sk-2"), (b"x-api-key", b"sk-1")], "sk-2"),
        ([(b"anthropic-version", b"2023-06-01"), (b"x-api-key", b"sk-1")], "sk-1"),
    ],
)
def test_x_api_key_is_a_way_to_send_the_key(
    headers: list[tuple[bytes, bytes]], key: str | None
) -> None:
    assert presented_key({"headers": headers}) == key


# --- failures -----------------------------------------------------------------------------------


def test_an_exhausted_overload_is_a_503_with_retry_after() -> None:
    failure = UpstreamFailure(FailureReason.status, "Overloaded", status=529, retry_after=1.5)
    error = exhausted(failure, Call("chat", "r", attempts=3))
    assert (error.status, error.code) == (503, "upstream_overloaded")
    assert error.headers == {"x-should-retry": "false", "retry-after": "2"}


def test_a_final_failure_tells_sdks_not_to_retry_even_after_one_attempt() -> None:
    failure = UpstreamFailure(FailureReason.status, "spent", status=429, final=True)
    assert exhausted(failure, Call("chat", "r", attempts=1)).headers == {"x-should-retry": "false"}
    plain = UpstreamFailure(FailureReason.status, "busy", status=429)
    assert exhausted(plain, Call("chat", "r", attempts=1)).headers == {}


class Scripted(Provider):
    """A provider that fails with the scripted failures, then answers with `body`."""

    def __init__(self, name: str, failures: list[UpstreamFailure], body: bytes = b"{}") -> None:
        super().__init__(
            name,
            LLMProviderSpec.model_validate(
                {"type": "Mock", "retry": {"attempts": 2, "initialBackoff": "1ms"}}
            ),
        )
        self.failures = failures
        self.body = body
        self.calls = 0

    async def open(
        self, op: Operation, body: dict[str, Any], model: str, stream: bool, forward: Headers
    ) -> Exchange:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return Answer(self.body)


class Answer(Exchange):
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def read(self) -> bytes:
        return self.body

    async def batches(self) -> AsyncIterator[list[bytes]]:
        yield [DONE]

    async def aclose(self) -> None:
        return None


async def serve(entry: ModelEntry, call: Call) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    pick = SCHEMA.codecs(call, {}, Operation.messages, Operation.chat, [])
    body = {"model": "m", "max_tokens": 5, "messages": HELLO}
    await Proxy(ProviderPool(), Metrics()).serve(call, body, entry, pick, send)
    return sent


async def test_a_final_failure_is_not_retried_but_falls_back() -> None:
    spent = UpstreamFailure(FailureReason.status, "spent", status=429, final=True)
    first = Scripted("first", [spent])
    second = Scripted("second", [], body=orjson.dumps({"id": "chatcmpl-1", "choices": []}))
    entry = model_entry((Route(first, "a", 1),), (Route(second, "b", 1),))
    call = Call("messages", "r")
    sent = await serve(entry, call)
    assert (first.calls, second.calls, call.attempts) == (1, 1, 2)
    assert orjson.loads(sent[-1]["body"])["type"] == "message"


async def test_a_retryable_failure_is_retried_on_the_same_backend() -> None:
    busy = UpstreamFailure(FailureReason.status, "busy", status=429)
    only = Scripted("only", [busy], body=orjson.dumps({"id": "chatcmpl-1", "choices": []}))
    call = Call("messages", "r")
    await serve(model_entry((Route(only, "a", 1),)), call)
    assert (only.calls, call.attempts) == (2, 2)
