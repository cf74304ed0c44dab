"""What a client sees: relayed stream batches, accounting, and the errors after failed attempts."""

from typing import Any

import orjson
import pytest

from kubellm_gateway.codecs import CompletionsFromChat, OpenAIRelay
from kubellm_gateway.errors import APIError
from kubellm_gateway.providers.base import FailureReason, Operation, UpstreamFailure
from kubellm_gateway.providers.mock import MockExchange
from kubellm_gateway.providers.sse import DONE
from kubellm_gateway.proxy import client_error, estimate, exhausted
from kubellm_gateway.resources import LLMProviderSpec, Pricing, ProviderType
from kubellm_gateway.telemetry.metrics import Call
from tests.unit.conftest import model_entry

PRICING = Pricing(inputPerMillion=1_000_000, outputPerMillion=2_000_000)  # $1 and $2 per token
ENTRY = model_entry(pricing=PRICING)
USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def chat_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return orjson.dumps({"id": "chatcmpl-1", "choices": [choice], "usage": None})


ROLE = chat_chunk({"role": "assistant", "content": ""})
HELLO = chat_chunk({"content": "Hello"})
FINISH = chat_chunk({}, "stop")
USAGE_CHUNK = orjson.dumps({"id": "chatcmpl-1", "choices": [], "usage": USAGE})


def events(
    batch: list[bytes], *, wants_usage: bool = False, convert: bool = False
) -> tuple[list[bytes], bool, Call]:
    call = Call("completions" if convert else "chat", "rid", stream=True)
    body = {"stream_options": {"include_usage": True}} if wants_usage else {}
    codec = CompletionsFromChat(call, body) if convert else OpenAIRelay(call, Operation.chat, body)
    out, done = codec.events(batch)
    assert out == b"" or out.endswith(b"\n\n")
    frames = [frame for frame in out.split(b"\n\n") if frame]
    assert all(frame.startswith(b"data: ") for frame in frames)
    return [frame.removeprefix(b"data: ") for frame in frames], done, call


def test_usage_chunk_hidden_but_accounted() -> None:
    payloads, done, call = events([HELLO, FINISH, USAGE_CHUNK, DONE])
    assert payloads == [HELLO, FINISH, DONE]
    assert done
    assert (call.input_tokens, call.output_tokens) == (3, 4)


def test_usage_chunk_relayed_when_the_client_asked() -> None:
    payloads, done, call = events([FINISH, USAGE_CHUNK, DONE], wants_usage=True)
    assert payloads == [FINISH, USAGE_CHUNK, DONE]
    assert done
    assert call.output_tokens == 4


def test_content_chunk_carrying_usage_is_relayed_and_accounted() -> None:
    # Some servers put usage on the finish chunk itself: it has content, so the client sees it.
    finish_with_usage = orjson.dumps({**orjson.loads(FINISH), "usage": USAGE})
    payloads, _, call = events([finish_with_usage])
    assert payloads == [finish_with_usage]
    assert call.output_tokens == 4


def test_batch_without_done_is_not_the_end() -> None:
    payloads, done, call = events([ROLE, HELLO])
    assert payloads == [ROLE, HELLO]
    assert not done
    assert call.input_tokens == 0


def test_done_ends_the_batch() -> None:
    payloads, done, _ = events([DONE, HELLO])
    assert payloads == [DONE]
    assert done


def test_conversion_to_completion_chunks() -> None:
    payloads, done, call = events([ROLE, HELLO, FINISH, USAGE_CHUNK, DONE], convert=True)
    assert done
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert payloads[-1] == DONE
    assert [c["object"] for c in chunks] == ["text_completion"] * 2
    assert [c["choices"][0]["text"] for c in chunks] == ["Hello", ""]
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[0]["id"] == "cmpl-1"
    assert call.input_tokens == 3


def test_conversion_keeps_the_usage_chunk_when_asked() -> None:
    payloads, _, _ = events([USAGE_CHUNK, DONE], wants_usage=True, convert=True)
    usage = orjson.loads(payloads[0])
    assert (usage["choices"], usage["usage"]) == ([], USAGE)


async def test_mock_stream_converted_end_to_end() -> None:
    spec = LLMProviderSpec(type=ProviderType.Mock)
    exchange = MockExchange(
        Operation.chat, {"messages": [{"role": "user", "content": "a b"}]}, "m", spec
    )
    text, finished = "", False
    async for batch in exchange.batches():
        payloads, done, _ = events(batch, convert=True)
        for payload in payloads:
            if payload != DONE:
                text += orjson.loads(payload)["choices"][0]["text"]
        finished = done
    assert finished
    assert text == "Mock reply from m: a b"


# --- errors after the attempts ---------------------------------------------------------------


def failed_call(attempts: int) -> Call:
    return Call("chat", "rid", model="chat", attempts=attempts)


def test_no_failure_means_no_backend() -> None:
    error = exhausted(None, failed_call(0))
    assert (error.status, error.code, error.headers) == (503, "no_healthy_backend", {})
    assert "`chat`" in error.message


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (UpstreamFailure(FailureReason.status, "busy", status=429), 429, "rate_limit_exceeded"),
        (UpstreamFailure(FailureReason.timeout, "slow"), 504, "upstream_timeout"),
        (UpstreamFailure(FailureReason.status, "boom", status=500), 502, "upstream_error"),
        (UpstreamFailure(FailureReason.status, "gone", status=408), 502, "upstream_error"),
        (UpstreamFailure(FailureReason.connect, "refused"), 502, "upstream_error"),
        (UpstreamFailure(FailureReason.protocol, "garbled"), 502, "upstream_error"),
    ],
)
@pytest.mark.parametrize("attempts", [1, 3])
def test_exhausted(failure: UpstreamFailure, status: int, code: str, attempts: int) -> None:
    error = exhausted(failure, failed_call(attempts))
    assert (error.status, error.code) == (status, code)
    assert error.type == ("rate_limit_error" if status == 429 else "server_error")
    should_retry = {"x-should-retry": "false"} if attempts > 1 else {}
    assert error.headers == should_retry
    if status == 502:
        assert failure.message in error.message


@pytest.mark.parametrize(
    ("retry_after", "header"), [(0.0, "0"), (0.2, "1"), (2.0, "2"), (2.01, "3")]
)
def test_rate_limit_passes_retry_after_rounded_up(retry_after: float, header: str) -> None:
    failure = UpstreamFailure(FailureReason.status, "busy", status=429, retry_after=retry_after)
    error = exhausted(failure, failed_call(2))
    assert error.headers == {"retry-after": header, "x-should-retry": "false"}


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        (
            {
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
                "param": "messages",
            },
            ("invalid_request_error", "context_length_exceeded", "messages"),
        ),
        ({"type": "not_found_error", "code": 404}, ("not_found_error", "404", None)),
        ({"message": "bare"}, ("invalid_request_error", None, None)),
        (None, ("invalid_request_error", None, None)),
    ],
)
def test_client_error_keeps_the_upstreams_fields(
    upstream: dict[str, Any] | None, expected: tuple[str, str | None, str | None]
) -> None:
    failure = UpstreamFailure(FailureReason.status, "too long", status=400, error=upstream)
    error = client_error(failure)
    assert isinstance(error, APIError)
    assert (error.status, error.message) == (400, "too long")
    assert (error.type, error.code, error.param) == expected
    assert orjson.loads(error.body())["error"]["param"] == expected[2]


def test_client_error_without_status_is_502() -> None:
    assert client_error(UpstreamFailure(FailureReason.protocol, "x")).status == 502


@pytest.mark.parametrize(
    ("reported", "events", "expected", "estimated"),
    [
        ((0, 0), 7, (25, 7), True),  # cut before any usage
        ((12, 0), 7, (12, 7), True),  # Anthropic-style: input known, output not yet
        ((12, 30), 7, (12, 30), False),  # usage arrived: never second-guessed
        ((0, 0), 0, (0, 0), False),  # nothing relayed (or not a stream): nothing to estimate
    ],
)
def test_missing_token_counts_are_estimated(
    reported: tuple[int, int], events: int, expected: tuple[int, int], estimated: bool
) -> None:
    call = Call("chat", "r1", stream=True, bytes_in=100, events=events)
    call.input_tokens, call.output_tokens = reported
    estimate(call)
    assert (call.input_tokens, call.output_tokens, call.tokens_estimated) == (*expected, estimated)
