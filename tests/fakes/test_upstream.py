"""Self-tests of the fake upstream, driven by the official openai SDK and raw HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai.types.chat import (
    ChatCompletionContentPartTextParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)

from tests.fakes.upstream import FakeUpstream

KEY = "upstream-secret-key"
AUTH = {"authorization": f"Bearer {KEY}"}
HELLO: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi there"},
]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def azure_server() -> Iterator[FakeUpstream]:
    with FakeUpstream("azure") as server:
        yield server


@pytest.fixture
def fake(openai_server: FakeUpstream) -> FakeUpstream:
    openai_server.clear()
    return openai_server


@pytest.fixture
def azure(azure_server: FakeUpstream) -> FakeUpstream:
    azure_server.clear()
    return azure_server


@pytest.fixture
def client(fake: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url, api_key=KEY, max_retries=0)


def raw_stream(url: str, body: dict[str, Any], headers: dict[str, str]) -> list[Any]:
    """The stream's events as parsed JSON objects, "[DONE]" kept as a string."""
    with httpx2.stream("POST", url, json=body, headers=headers) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["x-request-id"].startswith("req_")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)  # no "event:" lines
    datas = [line.removeprefix("data: ") for line in lines]
    return [d if d == "[DONE]" else orjson.loads(d) for d in datas]


def test_chat_non_stream(fake: FakeUpstream, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-x", messages=HELLO)
    completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-x"
    choice = completion.choices[0]
    assert choice.message.content == "Hello from gpt-x: hi there"
    assert choice.message.refusal is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 5)
    assert completion.usage.total_tokens == 9
    [record] = fake.requests
    assert (record.method, record.path, record.body["model"]) == (
        "POST",
        "/v1/chat/completions",
        "gpt-x",
    )
    assert record.headers["authorization"] == f"Bearer {KEY}"
    assert record.finished and not record.disconnected


def test_list_content_parts_count_as_prompt_words(client: openai.OpenAI) -> None:
    parts: list[ChatCompletionContentPartTextParam] = [
        {"type": "text", "text": "one two"},
        {"type": "text", "text": "three"},
    ]
    completion = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": parts}]
    )
    assert completion.choices[0].message.content == "Hello from m: one two three"
    assert completion.usage is not None and completion.usage.prompt_tokens == 3


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_wire_shape(fake: FakeUpstream, include_usage: bool) -> None:
    body = {"model": "m", "messages": HELLO, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    events = raw_stream(f"{fake.url}/chat/completions", body, AUTH)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == "Hello from m: hi there"
    assert all(c["object"] == "chat.completion.chunk" and "obfuscation" in c for c in chunks)
    if include_usage:
        *rest, last = chunks
        assert last["choices"] == []
        assert last["usage"]["completion_tokens"] == 5
        assert rest[-1]["choices"][0]["finish_reason"] == "stop"
        assert all("usage" in c and c["usage"] is None for c in rest)
    else:
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert all("usage" not in c for c in chunks)
    assert fake.requests[0].finished


def test_chat_stream_with_sdk_include_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 9
    assert all(c.usage is None for c in chunks[:-1])


def test_tools_stream_reassembles(client: openai.OpenAI) -> None:
    tool: ChatCompletionFunctionToolParam = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object"}},
    }
    with client.chat.completions.stream(model="tools", messages=HELLO, tools=[tool]) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name) for c in calls] == [
        ("call_fake_0", "lookup"),
        ("call_fake_1", "lookup"),
    ]
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris"},
        {"city": "Tokyo"},
    ]

    plain = client.chat.completions.create(model="tools", messages=HELLO, tools=[tool])
    message = plain.choices[0].message
    assert message.content is None
    assert [c.model_dump() for c in message.tool_calls or []] == [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": "lookup", "arguments": c.function.arguments},
        }
        for c in calls
    ]


def test_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="m", prompt="say it")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "Hello from m: say it"
    chunks = list(client.completions.create(model="m", prompt="say it", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "Hello from m: say it"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_embeddings(client: openai.OpenAI) -> None:
    # The SDK asks for base64 by default and decodes it; both forms must agree.
    default = client.embeddings.create(model="emb", input=["a b", "c"])
    floats = client.embeddings.create(model="emb", input=["a b", "c"], encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert [len(d.embedding) for d in floats.data] == [8, 8]
    assert floats.data[0].embedding != floats.data[1].embedding
    assert (floats.model, floats.usage.prompt_tokens, floats.usage.total_tokens) == ("emb", 3, 3)
    single = client.embeddings.create(model="emb", input="a b", encoding_format="float")
    assert single.data[0].embedding == floats.data[0].embedding


def test_models(client: openai.OpenAI) -> None:
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]


def test_bad_key_is_401(fake: FakeUpstream) -> None:
    bad = openai.OpenAI(base_url=fake.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model="m", messages=HELLO)
    assert caught.value.body == {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_unknown_path_is_404_envelope(fake: FakeUpstream) -> None:
    response = httpx2.post(f"{fake.url}/nope", headers=AUTH)
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"]


def test_fail_429_is_rate_limit_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fail-429", messages=HELLO)
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"


def test_fail_400_carries_param_and_code(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fail-400", messages=HELLO)
    assert (caught.value.param, caught.value.code) == ("max_tokens", "unsupported_parameter")


def test_fail_next_overrides_then_recovers(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.fail_next(2, 503, retry_after=0.5)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="m", messages=HELLO)
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after-ms"] == "500"
    assert client.chat.completions.create(model="m", messages=HELLO).choices[0].message.content


def test_fail_next_custom_body(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.fail_next(1, 418, body={"error": {"message": "teapot"}})
    with pytest.raises(openai.APIStatusError) as caught:
        client.embeddings.create(model="emb", input="x")
    assert (caught.value.status_code, caught.value.body) == (418, {"message": "teapot"})


def test_chunks_knob(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m", messages=HELLO, stream=True, extra_body={"fake": {"chunks": 7}}
    )
    words = [c.choices[0].delta.content for c in stream if c.choices[0].delta.content]
    assert words == ["Hello", " from", " m:", " hi", " there", " Hello", " from"]


def test_drop_mid_stream_resets_after_three_events(fake: FakeUpstream) -> None:
    body = {"model": "drop-mid-stream", "messages": HELLO, "stream": True}
    received: list[str] = []
    url = f"{fake.url}/chat/completions"
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        httpx2.stream("POST", url, json=body, headers=AUTH) as response,
    ):
        received.extend(line for line in response.iter_lines() if line)
    assert len(received) == 3
    record = fake.wait_for(lambda r: True)
    assert not record.finished and not record.disconnected


def test_fail_after_surfaces_as_connection_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        list(
            client.chat.completions.create(
                model="m", messages=HELLO, stream=True, extra_body={"fake": {"fail_after": 2}}
            )
        )
    with pytest.raises(openai.APIConnectionError):  # non-stream: no response at all
        client.chat.completions.create(model="drop-mid-stream", messages=HELLO)


def test_slow_first_byte_times_out_and_is_seen_as_disconnect(
    fake: FakeUpstream, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="slow-first-byte", messages=HELLO, timeout=0.3)
    assert fake.wait_for(lambda r: r.disconnected, timeout=1)


def test_first_byte_delay_knob(client: openai.OpenAI) -> None:
    started = time.monotonic()
    client.chat.completions.create(
        model="m", messages=HELLO, extra_body={"fake": {"first_byte_delay": 0.2}}
    )
    assert time.monotonic() - started >= 0.2


def test_hang_until_client_gives_up(fake: FakeUpstream, client: openai.OpenAI) -> None:
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="hang", messages=HELLO, timeout=0.2)
    record = fake.wait_for(lambda r: r.disconnected, timeout=1)
    assert not record.finished


def test_stream_disconnect_detected_promptly(fake: FakeUpstream) -> None:
    body = {"model": "m", "messages": HELLO, "stream": True}
    body["fake"] = {"chunks": 50, "delay": 0.05}
    with httpx2.stream("POST", f"{fake.url}/chat/completions", json=body, headers=AUTH) as r:
        next(r.iter_bytes())
    closed = time.monotonic()
    record = fake.wait_for(lambda r: r.disconnected, timeout=1)
    assert time.monotonic() - closed < 0.5  # the stream would run 2.5 s more
    assert not record.finished


def test_unknown_knob_is_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="Unknown fake knobs"):
        client.chat.completions.create(model="m", messages=HELLO, extra_body={"fake": {"x": 1}})


def test_wait_for_times_out_with_assertion(fake: FakeUpstream) -> None:
    with pytest.raises(AssertionError, match="no matching request"):
        fake.wait_for(lambda r: False, timeout=0.05)


def test_azure_stream(azure: FakeUpstream) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=azure.url, api_key=KEY, api_version="2024-10-21", max_retries=0
    )
    chunks = list(client.chat.completions.create(model="dep-1", messages=HELLO, stream=True))
    assert chunks[0].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from dep-1: hi there"
    [record] = azure.requests
    assert record.path == "/openai/deployments/dep-1/chat/completions"
    assert record.query == {"api-version": "2024-10-21"}
    assert record.headers["api-key"] == KEY

    url = f"{azure.url}/openai/deployments/dep-1/chat/completions?api-version=2024-10-21"
    events = raw_stream(url, {"messages": HELLO, "stream": True}, {"api-key": KEY})
    first = events[0]
    assert (first["id"], first["object"], first["created"], first["choices"]) == ("", "", 0, [])
    assert first["prompt_filter_results"][0]["prompt_index"] == 0
    assert all("content_filter_results" in c["choices"][0] for c in events[1:-1])
    assert not any("obfuscation" in c for c in events[1:-1])


def test_azure_non_stream_and_errors(azure: FakeUpstream) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=azure.url, api_key=KEY, api_version="2024-10-21", max_retries=0
    )
    raw = client.chat.completions.with_raw_response.create(model="dep-1", messages=HELLO)
    body = orjson.loads(raw.content)
    assert body["prompt_filter_results"] and body["choices"][0]["content_filter_results"]
    assert body["model"] == "dep-1"

    url = f"{azure.url}/openai/deployments/dep-1/chat/completions"
    missing_version = httpx2.post(url, json={"messages": HELLO}, headers={"api-key": KEY})
    assert missing_version.status_code == 404
    assert missing_version.json()["error"]["code"] == "404"
    bad_key = httpx2.post(url, params={"api-version": "2024-10-21"}, headers={"api-key": "no"})
    assert bad_key.status_code == 401
