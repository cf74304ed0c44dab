"""Adapter-level rewrites: the body sent upstream, Azure's stream quirks, the Mock backend."""

from typing import Any

import orjson
import pytest

from kubellm_gateway.providers.base import Operation
from kubellm_gateway.providers.mock import MockExchange, count_words
from kubellm_gateway.providers.openai_azure import AzureStreamNormalizer
from kubellm_gateway.providers.openai_openai import with_usage_requested
from kubellm_gateway.providers.sse import DONE
from kubellm_gateway.resources import LLMProviderSpec, ProviderType

# --- with_usage_requested -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "stream", "expected"),
    [
        ({"model": "alias", "x": 1}, False, {"model": "gpt", "x": 1}),
        (
            {"model": "alias", "stream_options": {"include_usage": False}},
            False,
            {"model": "gpt", "stream_options": {"include_usage": False}},
        ),
        ({"model": "alias"}, True, {"model": "gpt", "stream_options": {"include_usage": True}}),
        (
            {"model": "alias", "stream_options": None},
            True,
            {"model": "gpt", "stream_options": {"include_usage": True}},
        ),
        (
            {"model": "alias", "stream_options": {"include_obfuscation": False}},
            True,
            {
                "model": "gpt",
                "stream_options": {"include_obfuscation": False, "include_usage": True},
            },
        ),
        (
            {"model": "alias", "stream_options": {"include_usage": False}},
            True,
            {"model": "gpt", "stream_options": {"include_usage": True}},
        ),
    ],
)
def test_with_usage_requested(body: dict[str, Any], stream: bool, expected: dict[str, Any]) -> None:
    before = orjson.dumps(body)
    assert with_usage_requested(body, "gpt", stream) == expected
    assert orjson.dumps(body) == before  # the client's body is not mutated


# --- AzureStreamNormalizer ------------------------------------------------------------------

FILTERS = [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False}}}]
OPENING = orjson.dumps({"id": "", "choices": [], "prompt_filter_results": FILTERS})
USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def choice_chunk(text: str) -> bytes:
    return orjson.dumps(
        {"id": "c1", "object": "chat.completion.chunk", "choices": [{"delta": {"content": text}}]}
    )


def test_opening_chunk_dropped_and_its_filters_moved() -> None:
    first, second = choice_chunk("Hel"), choice_chunk("lo")
    usage = orjson.dumps({"id": "c1", "choices": [], "usage": USAGE})
    out = AzureStreamNormalizer()([OPENING, first, second, usage, DONE])
    assert len(out) == 4
    assert orjson.loads(out[0]) == {**orjson.loads(first), "prompt_filter_results": FILTERS}
    assert out[1:] == [second, usage, DONE]  # untouched bytes


def test_filters_carry_over_to_the_next_batch() -> None:
    normalize = AzureStreamNormalizer()
    assert normalize([OPENING]) == []
    out = normalize([choice_chunk("a")])
    assert orjson.loads(out[0])["prompt_filter_results"] == FILTERS
    assert normalize([choice_chunk("b")]) == [choice_chunk("b")]


def test_later_choiceless_chunks_dropped_and_filters_accumulate() -> None:
    more = [{"prompt_index": 1}]
    spaced = b'{"id":"c1","choices": [ ],"prompt_filter_results":[{"prompt_index":1}]}'
    bare = b'{"id":"c1","choices":[],"usage":null}'
    out = AzureStreamNormalizer()([OPENING, spaced, bare, choice_chunk("x")])
    assert len(out) == 1
    assert orjson.loads(out[0])["prompt_filter_results"] == FILTERS + more


def test_done_is_untouched_even_with_filters_pending() -> None:
    assert AzureStreamNormalizer()([OPENING, DONE]) == [DONE]


def test_each_stream_has_its_own_normalizer_state() -> None:
    AzureStreamNormalizer()([OPENING])
    assert AzureStreamNormalizer()([choice_chunk("x")]) == [choice_chunk("x")]


# --- Mock -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("one two  three\n", 3),
        ("", 0),
        (["a b", "c"], 3),
        ([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}], 4),
        (
            [{"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "image_url"}]}],
            2,
        ),
        (None, 0),
        (42, 0),
        ([[1, 2, 3]], 0),
    ],
)
def test_count_words(value: Any, words: int) -> None:
    assert count_words(value) == words


MOCK = LLMProviderSpec(type=ProviderType.Mock)
MESSAGES = [{"role": "user", "content": "hello there"}]


async def test_mock_stream_shape() -> None:
    exchange = MockExchange(Operation.chat, {"messages": MESSAGES}, "m1", MOCK)
    payloads = [p async for batch in exchange.batches() for p in batch]
    assert payloads[-1] == DONE
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-1])
    assert text == "Mock reply from m1: hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8}
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert chunks[0]["id"].startswith("chatcmpl-")


async def test_mock_max_tokens_truncates_with_finish_length() -> None:
    body = {"messages": MESSAGES, "max_tokens": 2}
    reply = orjson.loads(await MockExchange(Operation.chat, body, "m1", MOCK).read())
    assert reply["choices"][0]["message"]["content"] == "Mock reply"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 2


async def test_mock_completions_and_embeddings() -> None:
    completion = await MockExchange(Operation.completions, {"prompt": "a b c"}, "m", MOCK).read()
    assert orjson.loads(completion)["choices"][0]["text"] == "Mock completion from m."
    assert orjson.loads(completion)["usage"]["prompt_tokens"] == 3
    body = {"input": ["x", "y"]}
    vectors = orjson.loads(await MockExchange(Operation.embeddings, body, "m", MOCK).read())
    assert [d["index"] for d in vectors["data"]] == [0, 1]
    assert vectors["data"][0]["embedding"] != vectors["data"][1]["embedding"]
