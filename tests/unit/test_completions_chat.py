"""Legacy completions on chat-only models: the request there, the response and chunks back."""

from typing import Any

import pytest

from kubellm_gateway.errors import APIError
from kubellm_gateway.providers.completions_chat import (
    chat_request,
    completion_chunk,
    completion_response,
)

SHARED = {
    "max_tokens": 5,
    "temperature": 0.5,
    "top_p": 0.9,
    "n": 2,
    "stop": ["\n"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "user": "u",
    "seed": 7,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.2,
    "logit_bias": {"50256": -100},
    "metadata": {"k": "v"},
    "service_tier": "auto",
}


def test_chat_request_copies_shared_fields_only() -> None:
    body = {"model": "m", "prompt": "Say hi", "unknown_field": 1, **SHARED}
    assert chat_request(body) == {
        "model": "m",
        "messages": [{"role": "user", "content": "Say hi"}],
        **SHARED,
    }


def test_chat_request_minimal() -> None:
    assert chat_request({"model": "m", "prompt": ["only one"]}) == {
        "model": "m",
        "messages": [{"role": "user", "content": "only one"}],
    }


@pytest.mark.parametrize(
    "harmless",
    [
        {"echo": False},
        {"suffix": ""},
        {"suffix": None},
        {"logprobs": None},
        {"best_of": 1},
        {"best_of": None},
    ],
)
def test_chat_request_accepts_neutral_values(harmless: dict[str, Any]) -> None:
    assert chat_request({"model": "m", "prompt": "p", **harmless})["messages"][0]["content"] == "p"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"echo": True}, "echo"),
        ({"suffix": "end"}, "suffix"),
        ({"logprobs": 0}, "logprobs"),
        ({"logprobs": 5}, "logprobs"),
        ({"best_of": 2}, "best_of"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [[1, 2, 3]]}, "prompt"),
        ({"prompt": [1]}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": None}, "prompt"),
    ],
)
def test_chat_request_refusals_name_the_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as caught:
        chat_request({"model": "m", "prompt": "p", **fields})
    error = caught.value
    assert (error.status, error.param, error.code) == (400, param, "invalid_request")
    assert f"`{param}`" in error.message


def test_chat_request_without_prompt() -> None:
    with pytest.raises(APIError) as caught:
        chat_request({"model": "m"})
    assert caught.value.param == "prompt"


def test_chat_request_does_not_mutate_the_body() -> None:
    body = {"model": "m", "prompt": ["p"], "temperature": 1}
    chat_request(body)
    assert body == {"model": "m", "prompt": ["p"], "temperature": 1}


HEAD = {"id": "chatcmpl-abc", "created": 1700000000, "model": "gpt-4o-mini"}
COMPLETION_HEAD = {
    "id": "cmpl-abc",
    "object": "text_completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
}
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_completion_response() -> None:
    chat = {
        **HEAD,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi!"},
                "finish_reason": "stop",
            },
            {"index": 1, "message": {"role": "assistant", "content": None}, "finish_reason": "len"},
        ],
        "usage": USAGE,
    }
    assert completion_response(chat) == {
        **COMPLETION_HEAD,
        "choices": [
            {"index": 0, "text": "Hi!", "logprobs": None, "finish_reason": "stop"},
            {"index": 1, "text": "", "logprobs": None, "finish_reason": "len"},
        ],
        "usage": USAGE,
    }


def test_completion_response_without_usage_or_choices() -> None:
    assert completion_response({"id": "x"}) == {
        "id": "cmpl-x",
        "object": "text_completion",
        "created": 0,
        "model": "",
        "choices": [],
    }


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**HEAD, "object": "chat.completion.chunk", "choices": [choice], **extra}


@pytest.mark.parametrize(
    "chat_chunk",
    [
        chunk({"role": "assistant", "content": ""}),
        chunk({"role": "assistant"}, usage=None),
        chunk({}),
        {**HEAD, "choices": []},
        {**HEAD, "choices": [], "usage": None},
    ],
)
def test_completion_chunk_carrying_nothing_is_dropped(chat_chunk: dict[str, Any]) -> None:
    assert completion_chunk(chat_chunk) is None


def test_completion_chunk_text() -> None:
    assert completion_chunk(chunk({"content": " world"}, usage=None)) == {
        **COMPLETION_HEAD,
        "choices": [{"index": 0, "text": " world", "logprobs": None, "finish_reason": None}],
    }


def test_completion_chunk_finish_is_kept() -> None:
    assert completion_chunk(chunk({}, "stop")) == {
        **COMPLETION_HEAD,
        "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}],
    }


def test_completion_chunk_usage_is_kept_without_choices() -> None:
    assert completion_chunk({**HEAD, "choices": [], "usage": USAGE}) == {
        **COMPLETION_HEAD,
        "choices": [],
        "usage": USAGE,
    }
