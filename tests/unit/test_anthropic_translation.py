"""Edges of the Anthropic translators the golden pairs do not show: bad input, odd streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from kubellm_gateway.errors import APIError
from kubellm_gateway.providers import anthropic_openai, anthropic_wire, openai_anthropic
from kubellm_gateway.providers.anthropic_request import messages_request
from kubellm_gateway.providers.base import Exchange, FailureReason, UpstreamFailure
from kubellm_gateway.providers.sse import DONE

HELLO = [{"role": "user", "content": "Hello!"}]

# --- anthropic_wire -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "own_type", "expected"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "invalid_request_error", "authentication_error"),  # the status decides
        (403, "permission_error", "permission_error"),
        (404, "invalid_request_error", "not_found_error"),
        (413, "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", "rate_limit_error"),
        (502, "server_error", "api_error"),
        (503, "server_error", "overloaded_error"),
        (504, "server_error", "timeout_error"),
        (529, "overloaded_error", "overloaded_error"),
        (409, "conflict_error", "invalid_request_error"),  # not Anthropic's: from the status
        (422, "billing_error", "billing_error"),  # Anthropic's own, for a status not listed
        (507, "server_error", "api_error"),
    ],
)
def test_error_type_follows_the_status(status: int, own_type: str, expected: str) -> None:
    assert anthropic_wire.error_type(APIError(status, "m", type=own_type)) == expected


def test_error_body_and_event() -> None:
    error = APIError(404, "no such model", code="model_not_found")
    assert orjson.loads(anthropic_wire.error_body(error, "rid")) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
        "request_id": "rid",
    }
    event = anthropic_wire.error_event(error)
    name, data = event.removesuffix(b"\n\n").split(b"\n")
    assert name == b"event: error"
    assert orjson.loads(data.removeprefix(b"data: "))["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"type":"message_start","message":{}}', b"message_start"),
        (b'{ "type" : "ping"}', b"ping"),
        (b'{"index":0,"type":"content_block_stop"}', b"content_block_stop"),  # not first: parsed
        (b'{"index":0}', None),
        (b"[1]", None),
        (b"not json", None),
        (b'{"type": 7}', None),
    ],
)
def test_event_type(payload: bytes, expected: bytes | None) -> None:
    assert anthropic_wire.event_type(payload) == expected


def test_prompt_tokens_count_cache_reads_and_writes() -> None:
    usage = {"input_tokens": 3, "cache_read_input_tokens": 10, "cache_creation_input_tokens": None}
    assert anthropic_wire.prompt_tokens(usage) == 13
    assert anthropic_wire.prompt_tokens({}) == 0


# --- OpenAI requests to Anthropic: refusals the golden files do not list ------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": True}, "max_completion_tokens"),
        ({"max_tokens": "9"}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"stop": [1]}, "stop"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        ({"messages": ["hello"]}, "messages[0]"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"type": "custom", "custom": {}}]}]},
            "messages[0].tool_calls[0]",
        ),
    ],
)
def test_bad_chat_requests_are_400s_naming_the_field(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as caught:
        messages_request({"model": "m", "messages": HELLO, **extra}, "claude-x", False, 4096)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_empty_stop_list_and_text_only_defaults() -> None:
    body = messages_request(
        {"model": "m", "messages": HELLO, "stop": [], "response_format": {"type": "text"}},
        "claude-x",
        False,
        4096,
    )
    assert body == {"model": "claude-x", "messages": HELLO, "max_tokens": 4096}


def test_parallel_tool_calls_alone_without_tools_asks_nothing() -> None:
    body = messages_request(
        {"model": "m", "messages": HELLO, "parallel_tool_calls": False}, "claude-x", False, 9
    )
    assert "tool_choice" not in body


def test_tool_call_with_empty_arguments_is_an_empty_input() -> None:
    call = {"id": "t", "type": "function", "function": {"name": "now", "arguments": ""}}
    body = messages_request(
        {"model": "m", "messages": [*HELLO, {"role": "assistant", "tool_calls": [call]}]},
        "claude-x",
        False,
        9,
    )
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "t", "name": "now", "input": {}}
    ]


# --- Anthropic answers to OpenAI ----------------------------------------------------------------


def events(*payloads: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(p) for p in payloads]


START = {"type": "message_start", "message": {"id": "msg_1", "model": "c", "usage": {}}}


def test_chunk_stream_skips_what_is_not_an_object_and_stops_at_message_stop() -> None:
    translate = openai_anthropic.ChunkStream(0)
    out = translate(
        [b"[1, 2]", *events(START, {"type": "message_stop"}, {"type": "content_block_start"})]
    )
    assert [orjson.loads(p)["choices"] if p != DONE else p for p in out] == [
        [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        [],
        DONE,
    ]


def test_chunk_stream_ignores_input_for_blocks_that_are_not_tools() -> None:
    translate = openai_anthropic.ChunkStream(0)
    delta = {"type": "input_json_delta", "partial_json": "{}"}
    assert translate(events({"type": "content_block_delta", "index": 5, "delta": delta})) == []


def test_chunk_stream_error_event_is_a_failure_with_its_status() -> None:
    translate = openai_anthropic.ChunkStream(0)
    with pytest.raises(UpstreamFailure) as caught:
        translate(
            events({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
        )
    failure = caught.value
    assert (failure.status, failure.message, failure.retryable) == (429, "slow", True)
    assert failure.error == {
        "message": "slow",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(UpstreamFailure) as caught:
        translate(events({"type": "error"}))
    assert (caught.value.status, caught.value.error["type"]) == (500, "api_error")  # type: ignore[index]


class Canned(Exchange):
    """An upstream exchange that hands out fixed bytes."""

    def __init__(self, body: bytes = b"", batches: list[list[bytes]] | None = None) -> None:
        self.body = body
        self.stream = batches or []
        self.closed = False

    async def read(self) -> bytes:
        return self.body

    async def batches(self) -> AsyncIterator[list[bytes]]:
        for batch in self.stream:
            yield batch

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"content": 5}', b'{"content": [], "usage": {"input_tokens": "many"}}'],
)
async def test_unreadable_message_is_a_protocol_failure(body: bytes) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        await openai_anthropic.ChatExchange(Canned(body)).read()
    assert caught.value.reason is FailureReason.protocol


async def test_unreadable_event_is_a_protocol_failure() -> None:
    bad = events(
        START, {"type": "content_block_start", "index": "x", "content_block": {"type": "tool_use"}}
    )
    exchange = openai_anthropic.ChatExchange(Canned(batches=[bad[:1], bad[1:]]))
    batches = exchange.batches()
    assert await anext(batches)
    with pytest.raises(UpstreamFailure) as caught:
        await anext(batches)
    assert caught.value.reason is FailureReason.protocol
    await exchange.aclose()


async def test_messages_exchange_fails_only_on_a_first_error_event() -> None:
    error = events({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    first = openai_anthropic.MessagesExchange(Canned(batches=[error]))
    with pytest.raises(UpstreamFailure) as caught:
        await anext(first.batches())
    assert caught.value.status == 529
    later = openai_anthropic.MessagesExchange(Canned(batches=[events(START), error]))
    assert [b async for b in later.batches()] == [events(START), error]
    # A stream with no events ends as it is: the proxy calls that a failed attempt.
    assert [b async for b in openai_anthropic.MessagesExchange(Canned()).batches()] == []
    garbled = openai_anthropic.MessagesExchange(Canned(batches=[[b'{"type":"error",']]))
    with pytest.raises(UpstreamFailure) as caught:
        await anext(garbled.batches())
    assert caught.value.status == 500


@pytest.mark.parametrize(
    ("details", "status", "final", "code"),
    [
        ({"error_code": "enforced_spend_limit_reached"}, 429, True, "enforced_spend_limit_reached"),
        ({"error_code": "contract_spend_limit_reached"}, 429, True, "contract_spend_limit_reached"),
        ({"error_code": "ramp_limit_exceeded"}, 429, False, "ramp_limit_exceeded"),
        (
            {"error_code": "enforced_spend_limit_reached"},
            400,
            False,
            "enforced_spend_limit_reached",
        ),
        (None, 429, False, None),
        ("not an object", 429, False, None),
    ],
)
def test_openai_failure(details: Any, status: int, final: bool, code: str | None) -> None:
    error = {"type": "rate_limit_error", "message": "m", "details": details}
    failure = UpstreamFailure(FailureReason.status, "m", status=status, retry_after=2, error=error)
    shaped = openai_anthropic.openai_failure(failure)
    assert (shaped.final, shaped.status, shaped.retry_after) == (final, status, 2)
    assert shaped.error == {"message": "m", "type": "rate_limit_error", "param": None, "code": code}


def test_openai_failure_without_a_body() -> None:
    failure = UpstreamFailure(FailureReason.status, "HTTP 502", status=502)
    assert openai_anthropic.openai_failure(failure).error is None


# --- Anthropic requests to OpenAI, and OpenAI answers back --------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "assistant", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "server_tool_use"}]}]},
            "messages[0].content[0]",
        ),
        ({"system": 5}, "system"),
        ({"system": [{"type": "image"}]}, "system[0]"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"mcp_servers": [{}]}, "mcp_servers"),
    ],
)
def test_bad_messages_requests_are_400s(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(APIError) as caught:
        anthropic_openai.chat_request({"model": "m", "max_tokens": 5, "messages": HELLO, **extra})
    assert (caught.value.status, caught.value.param) == (400, field)


def test_tool_result_without_content_and_assistant_strings() -> None:
    messages = [
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
    ]
    body = anthropic_openai.chat_request({"model": "m", "max_tokens": 5, "messages": messages})
    assert body["messages"] == [
        {"role": "assistant", "content": "Sure."},
        {"role": "tool", "tool_call_id": "t", "content": ""},
    ]


def test_tool_arguments_that_are_not_an_object_are_a_502() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
    chat = {"choices": [{"message": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]}
    with pytest.raises(APIError) as caught:
        anthropic_openai.message_response(chat)
    assert caught.value.status == 502


def test_message_from_an_empty_completion() -> None:
    message = anthropic_openai.message_response({"id": "chatcmpl-x", "choices": []})
    assert (message["id"], message["content"], message["stop_reason"]) == ("msg_x", [], "end_turn")


def sse(out: bytes) -> list[tuple[str, dict[str, Any]]]:
    frames = [f.split(b"\n") for f in out.split(b"\n\n") if f]
    return [
        (n.removeprefix(b"event: ").decode(), orjson.loads(d.removeprefix(b"data: ")))
        for n, d in frames
    ]


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "model": "g",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def test_event_stream_ending_at_once_is_still_a_whole_message() -> None:
    out, done = anthropic_openai.EventStream()([DONE])
    assert done
    assert [name for name, _ in sse(out)] == ["message_start", "message_delta", "message_stop"]
    assert sse(out)[1][1]["usage"]["output_tokens"] == 0


def test_event_stream_text_after_a_tool_opens_a_new_block_and_late_fragments_keep_their_block() -> (
    None
):
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{"}}
    stream = anthropic_openai.EventStream()
    out, done = stream(
        [
            chunk({"tool_calls": [call]}),
            chunk({"content": "and"}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
            chunk({"content": "more"}),
            chunk({"choices": []}, "stop"),
        ]
    )
    assert not done
    seen = [(name, data.get("index"), data.get("delta", {}).get("type")) for name, data in sse(out)]
    assert seen == [
        ("message_start", None, None),
        ("content_block_start", 0, None),
        ("content_block_delta", 0, "input_json_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, None),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_delta", 0, "input_json_delta"),  # the SDK adds it to block 0's input
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
    ]


def test_event_stream_reads_only_the_first_choice_and_skips_non_objects() -> None:
    other = orjson.dumps({"id": "x", "choices": [{"index": 1, "delta": {"content": "no"}}]})
    out, _ = anthropic_openai.EventStream()([b'"text"', other])
    assert [name for name, _ in sse(out)] == ["message_start"]
