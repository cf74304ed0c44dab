"""Self-tests of the fake Anthropic API, driven by the official anthropic SDK and raw HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import MessageParam

from tests.fakes.anthropic_upstream import FakeAnthropic

KEY = "upstream-secret-key"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def ask(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(KEY) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAnthropic) -> FakeAnthropic:
    server.clear()
    return server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0) as c:
        yield c


def post(fake: FakeAnthropic, body: Any, headers: dict[str, str] = HEADERS) -> httpx2.Response:
    return httpx2.post(f"{fake.url}/v1/messages", json=body, headers=headers)


def raw_events(fake: FakeAnthropic, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    with httpx2.stream("POST", f"{fake.url}/v1/messages", json=body, headers=HEADERS) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    out = []
    for block in text.strip().split("\n\n"):
        name, data = block.split("\n")
        assert data.startswith('data: {"type":')  # `type` first, as Anthropic writes it
        out.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


def test_text(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    message = client.messages.create(
        model="claude-x", max_tokens=50, system="Be brief.", messages=ask("hi there")
    )
    assert message.content[0].text == "Hello from claude-x: hi there"  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 5)
    assert message.id.startswith("msg_")
    # The SDK 2.x sends a bearer token and its own version: both accepted.
    request = fake.wait_for(lambda r: r.method == "POST")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["anthropic-version"] == "2026-10-21"


def test_stream_events(fake: FakeAnthropic) -> None:
    events = raw_events(
        fake, {"model": "m", "max_tokens": 50, "stream": True, "messages": ask("a")}
    )
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    assert events[-2][1]["usage"] == {"output_tokens": 4}


def test_tools_interleaved_with_text(client: anthropic.Anthropic) -> None:
    tools: Any = [{"name": "lookup", "input_schema": {"type": "object"}}]
    with client.messages.stream(
        model="tools", max_tokens=99, tools=tools, messages=ask("x")
    ) as stream:
        final = stream.get_final_message()
    assert [(b.type, getattr(b, "name", None)) for b in final.content] == [
        ("text", None),
        ("tool_use", "lookup"),
        ("text", None),
        ("tool_use", "lookup"),
    ]
    assert [b.input for b in final.content if b.type == "tool_use"] == [
        {"city": "Paris"},
        {"city": "Tokyo"},
    ]
    assert final.stop_reason == "tool_use"


def test_stop_sequence_and_max_tokens(client: anthropic.Anthropic) -> None:
    cut = client.messages.create(
        model="m", max_tokens=50, messages=ask("one STOP two"), stop_sequences=["STOP", "one"]
    )
    assert cut.content[0].text == "Hello from m: "  # type: ignore[union-attr]
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", "one")
    short = client.messages.create(model="m", max_tokens=2, messages=ask("one two"))
    assert (short.content[0].text, short.stop_reason) == ("Hello from", "max_tokens")  # type: ignore[union-attr]


def test_named_behaviours(client: anthropic.Anthropic) -> None:
    def create(model: str) -> Any:
        return client.messages.create(model=model, max_tokens=50, messages=ask("q"))

    assert [b.type for b in create("thinking").content] == ["thinking", "text"]
    assert create("refusal").stop_reason == "refusal"
    assert create("pause").stop_reason == "pause_turn"
    usage = create("cached").usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (100, 20)


def test_tool_results_and_images_are_the_users_words(client: anthropic.Anthropic) -> None:
    content: Any = [
        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
    ]
    message = client.messages.create(
        model="m", max_tokens=50, messages=[{"role": "user", "content": content}]
    )
    assert message.content[0].text == "Hello from m: sunny [image]"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("model", "status", "error_type"),
    [
        ("fail-400", 400, "invalid_request_error"),
        ("fail-401", 401, "authentication_error"),
        ("fail-404", 404, "not_found_error"),
        ("fail-429", 429, "rate_limit_error"),
        ("fail-500", 500, "api_error"),
        ("fail-529", 529, "overloaded_error"),
    ],
)
def test_error_models(fake: FakeAnthropic, model: str, status: int, error_type: str) -> None:
    response = post(fake, {"model": model, "max_tokens": 5, "messages": ask("x")})
    assert response.status_code == status
    body = response.json()
    assert (body["type"], body["error"]["type"]) == ("error", error_type)
    assert body["request_id"].startswith("req_")
    assert response.headers.get("retry-after") == ("1" if model == "fail-429" else None)


def test_spend_limit_says_so_in_its_details(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="fail-429-spend", max_tokens=5, messages=ask("x"))
    assert caught.value.error_code == "enforced_spend_limit_reached"
    assert "retry-after" not in caught.value.response.headers


@pytest.mark.parametrize(
    ("model", "before"), [("overloaded-mid-stream", 3), ("overloaded-first", 0)]
)
def test_error_events(fake: FakeAnthropic, model: str, before: int) -> None:
    events = raw_events(
        fake, {"model": model, "max_tokens": 9, "stream": True, "messages": ask("x")}
    )
    assert len(events) == before + 1
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "invalid x-api-key"),
        ({"x-api-key": "wrong", "anthropic-version": "2023-06-01"}, 401, "invalid x-api-key"),
        ({"x-api-key": KEY}, 400, "anthropic-version: header is required"),
        ({"x-api-key": KEY, "anthropic-version": "2024-99-99"}, 400, "not a valid version"),
    ],
)
def test_headers_are_checked(
    fake: FakeAnthropic, headers: dict[str, str], status: int, message: str
) -> None:
    response = post(fake, {"model": "m", "max_tokens": 5, "messages": ask("x")}, headers)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"bogus": 1}, "bogus is not a known field"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "txt", "text": "x"}]}]}, "messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "x", "index": 0}]}
                ]
            },
            "messages[0].content[0].index is not a known field",
        ),
        ({"temperature": 1.5}, "temperature: must be within"),
        ({"top_k": "5"}, "top_k: must be a number"),
    ],
)
def test_requests_are_validated_against_the_sdk_types(
    fake: FakeAnthropic, extra: dict[str, Any], problem: str
) -> None:
    response = post(fake, {"model": "m", "max_tokens": 5, "messages": ask("x"), **extra})
    assert response.status_code == 400
    assert problem in response.json()["error"]["message"]
    assert len(fake.rejected) == 1 and problem in fake.rejected[0]


def test_sampling_parameters_depend_on_the_version(fake: FakeAnthropic) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": ask("x"), "temperature": 0.5, "top_k": 3}
    assert post(fake, body).status_code == 200
    newer = post(fake, body, {**HEADERS, "anthropic-version": "2026-10-21"})
    assert newer.status_code == 400
    assert "temperature: not supported with anthropic-version 2026-10-21" in newer.text


def test_fail_next_answers_in_anthropics_shape(fake: FakeAnthropic) -> None:
    fake.fail_next(1, 529, retry_after=2)
    response = post(fake, {"model": "m", "max_tokens": 5, "messages": ask("x")})
    assert (response.status_code, response.headers["retry-after"]) == (529, "2")
    assert response.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert post(fake, {"model": "m", "max_tokens": 5, "messages": ask("x")}).status_code == 200


def test_other_paths_are_not_found(fake: FakeAnthropic) -> None:
    response = httpx2.post(f"{fake.url}/v1/complete", json={}, headers=HEADERS)
    assert (response.status_code, response.json()["error"]["type"]) == (404, "not_found_error")


def test_drop_mid_stream_resets_the_connection(fake: FakeAnthropic) -> None:
    body = {"model": "drop-mid-stream", "max_tokens": 9, "stream": True, "messages": ask("x")}
    with pytest.raises(httpx2.RemoteProtocolError):
        raw_events(fake, body)
