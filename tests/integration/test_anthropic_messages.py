"""Anthropic clients on any model: the anthropic SDK through `POST /v1/messages`.

Routed to an Anthropic backend the body passes through; routed to OpenAI, Azure or Mock
backends it is translated there and back, event stream included.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import Message, MessageParam, ToolParam
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartGateway
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.upstream import FakeUpstream
from tests.integration.test_readme import EXAMPLES, as_written, snippet
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import (
    anthropic_provider,
    api_key,
    backend,
    dump,
    model,
    openai_provider,
    policy,
    provider,
    secret,
)

KEY = new_key()
ONCE = {"attempts": 0}
WEATHER: list[ToolParam] = [
    {
        "name": "get_weather",
        "description": "Weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=new_key()) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    start_module_gateway: StartGateway,
    fake_anthropic: FakeAnthropic,
    fake_openai: FakeUpstream,
    fake_azure: FakeUpstream,
) -> GatewayProcess:
    return start_module_gateway(
        dump(
            openai_provider("openai", fake_openai.url, fake_openai.api_key, retry=ONCE),
            anthropic_provider("claude", fake_anthropic.url, fake_anthropic.api_key, retry=ONCE),
            secret("azure-key", apiKey=fake_azure.api_key),
            provider(
                "azure",
                "AzureOpenAI",
                baseURL=fake_azure.url,
                apiKeySecretRef={"name": "azure-key", "key": "apiKey"},
                retry=ONCE,
            ),
            provider("mock", "Mock"),
            model("gpt", [backend("openai", "gpt-4o-mini")], pricing={"outputPerMillion": 1}),
            model("gpt-tools", [backend("openai", "tools")]),
            model("gpt-400", [backend("openai", "fail-400")]),
            model("gpt-drops", [backend("openai", "drop-mid-stream")]),
            model("azure-gpt", [backend("azure", "gpt-4o-prod")]),
            model("mock", [backend("mock", "mock-1")]),
            model("claude", [backend("claude", "claude-x")]),
            model("claude-tools", [backend("claude", "tools")]),
            model("claude-mid-error", [backend("claude", "overloaded-mid-stream")]),
            model(
                "claude-first-error",
                [backend("claude", "overloaded-first"), backend("claude", "claude-y", priority=1)],
            ),
            model(
                "embedder",
                [backend("openai", "text-embedding-3-small")],
                capabilities=["embeddings"],
            ),
            api_key("tester", KEY, groups=["testers"]),
            policy("testers", [("Group", "testers")], models=["*"]),
        )
    )


@pytest.fixture
def fakes(
    fake_anthropic: FakeAnthropic, fake_openai: FakeUpstream, fake_azure: FakeUpstream
) -> Iterator[tuple[FakeAnthropic, FakeUpstream]]:
    for fake in (fake_anthropic, fake_openai, fake_azure):
        fake.clear()
    yield fake_anthropic, fake_openai
    assert fake_anthropic.rejected == [], "the gateway sent requests Anthropic would refuse"


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0) as c:
        yield c


def last_body(fake: FakeUpstream) -> Any:
    fake.wait_for(lambda r: r.method == "POST")
    return [r for r in fake.requests if r.method == "POST"][-1].body


def ask(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


# --- OpenAI-shaped backends: translated ---------------------------------------------------------


def test_text_on_an_openai_backend(
    client: anthropic.Anthropic, fakes: tuple[FakeAnthropic, FakeUpstream]
) -> None:
    message = client.messages.create(
        model="gpt",
        max_tokens=64,
        system="Be brief.",
        messages=ask("hi there"),
        stop_sequences=["END"],
        metadata={"user_id": "alice"},
        extra_body={"temperature": 0.3},  # API version 2023-06-01's, not in the SDK's types
    )
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello from gpt-4o-mini: hi there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 5)
    assert message.id.startswith("msg_")
    assert last_body(fakes[1]) == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi there"},
        ],
        "max_completion_tokens": 64,
        "stop": ["END"],
        "temperature": 0.3,
        "user": "alice",
    }


def test_stream_on_an_openai_backend(
    client: anthropic.Anthropic, fakes: tuple[FakeAnthropic, FakeUpstream]
) -> None:
    with client.messages.stream(model="gpt", max_tokens=64, messages=ask("one two")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from gpt-4o-mini: one two"
    assert final.stop_reason == "end_turn"
    # OpenAI counts the prompt at the end: message_delta carries it to the client.
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 5)
    assert last_body(fakes[1])["stream_options"] == {"include_usage": True}


def sse_events(gateway: GatewayProcess, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(event name, parsed data) of a raw /v1/messages stream."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    with gateway.http.stream("POST", "/v1/messages", json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        raw = response.read().decode()
    events = []
    for block in raw.strip().split("\n\n"):
        name, data = block.split("\n")
        events.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return events


@pytest.mark.parametrize("model_id", ["gpt-tools", "claude-tools"])
def test_the_event_sequence(
    gateway: GatewayProcess, fakes: tuple[FakeAnthropic, FakeUpstream], model_id: str
) -> None:
    events = sse_events(
        gateway,
        {
            "model": model_id,
            "max_tokens": 100,
            "stream": True,
            "tools": WEATHER,
            "messages": ask("weather"),
        },
    )
    names = [name for name, _ in events if name != "ping"]
    assert all(name == data["type"] for name, data in events)  # `event:` matches the payload
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts if b["type"] == "tool_use"] == ["tool_use", "tool_use"]
    assert all(b["input"] == {} for b in starts if b["type"] == "tool_use")
    # Blocks open, get their deltas and close in order, each index once.
    opened = [d["index"] for n, d in events if n == "content_block_start"]
    closed = [d["index"] for n, d in events if n == "content_block_stop"]
    assert opened == closed == list(range(len(opened)))
    delta = next(d for n, d in events if n == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] > 0


def test_tool_use_round_trip_on_an_openai_backend(
    client: anthropic.Anthropic, fakes: tuple[FakeAnthropic, FakeUpstream]
) -> None:
    first = client.messages.create(
        model="gpt-tools", max_tokens=100, tools=WEATHER, messages=ask("weather in two cities")
    )
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [
        ("call_fake_0", "get_weather", {"city": "Paris"}),
        ("call_fake_1", "get_weather", {"city": "Tokyo"}),
    ]
    results: Any = [
        {"type": "tool_result", "tool_use_id": u.id, "content": f"sunny in {u.input['city']}"}
        for u in uses
    ]
    history: list[MessageParam] = [
        *ask("weather in two cities"),
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [*results, {"type": "text", "text": "Thanks!"}]},
    ]
    second = client.messages.create(
        model="gpt", max_tokens=100, tools=WEATHER, tool_choice={"type": "auto"}, messages=history
    )
    assert second.stop_reason == "end_turn"
    sent = last_body(fakes[1])
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fake_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_fake_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake_0", "content": "sunny in Paris"},
        {"role": "tool", "tool_call_id": "call_fake_1", "content": "sunny in Tokyo"},
        {"role": "user", "content": "Thanks!"},
    ]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city.",
                "parameters": WEATHER[0]["input_schema"],
            },
        }
    ]
    assert sent["tool_choice"] == "auto"


def test_streamed_tool_use_on_an_openai_backend(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="gpt-tools", max_tokens=100, tools=WEATHER, messages=ask("weather")
    ) as stream:
        final = stream.get_final_message()
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("tool_use", {"city": "Paris"}),
        ("tool_use", {"city": "Tokyo"}),
    ]
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize("model_id", ["azure-gpt", "mock"])
def test_azure_and_mock_backends(client: anthropic.Anthropic, model_id: str) -> None:
    with client.messages.stream(model=model_id, max_tokens=64, messages=ask("a b")) as stream:
        text = "".join(stream.text_stream)
    plain = client.messages.create(model=model_id, max_tokens=64, messages=ask("a b"))
    assert text == plain.content[0].text  # type: ignore[union-attr]
    assert text.endswith("a b")


def test_what_openai_cannot_honour_is_a_400_in_anthropic_shape(
    client: anthropic.Anthropic, fakes: tuple[FakeAnthropic, FakeUpstream]
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="gpt", max_tokens=9, messages=ask("x"), extra_body={"top_k": 5}
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "top_k" in caught.value.message
    document: Any = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "x"},
    }
    with pytest.raises(anthropic.BadRequestError, match="document"):
        client.messages.create(
            model="gpt", max_tokens=9, messages=[{"role": "user", "content": [document]}]
        )
    assert fakes[1].requests == []


def test_upstream_errors_come_back_in_anthropic_shape(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="gpt-400", max_tokens=9, messages=ask("x"))
    assert caught.value.status_code == 400
    body: Any = caught.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_completion_tokens" in body["error"]["message"]
    assert body["request_id"] == caught.value.response.headers["x-request-id"]


def test_a_broken_stream_ends_with_an_error_event(client: anthropic.Anthropic) -> None:
    stream = client.messages.create(
        model="gpt-drops", max_tokens=64, messages=ask("x"), stream=True
    )
    with pytest.raises(anthropic.APIStatusError) as caught:
        list(stream)
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]


# --- Anthropic backends: passed through ---------------------------------------------------------


def test_text_on_an_anthropic_backend_passes_through(
    client: anthropic.Anthropic, fakes: tuple[FakeAnthropic, FakeUpstream]
) -> None:
    system: Any = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    message = client.messages.create(
        model="claude",
        max_tokens=64,
        system=system,
        messages=ask("hi there"),
        thinking={"type": "disabled"},
        extra_body={"top_k": 5},  # refused on OpenAI backends, Anthropic's own parameter here
    )
    assert message.content[0].text == "Hello from claude-x: hi there"  # type: ignore[union-attr]
    sent = fakes[0].wait_for(lambda r: r.method == "POST")
    assert sent.body == {  # only the model replaced
        "model": "claude-x",
        "max_tokens": 64,
        "system": system,
        "messages": ask("hi there"),
        "thinking": {"type": "disabled"},
        "top_k": 5,
    }
    assert sent.headers["x-api-key"] == fakes[0].api_key
    assert sent.headers["anthropic-version"] == "2023-06-01"  # the provider's, not the SDK's
    assert "authorization" not in sent.headers


def test_stream_on_an_anthropic_backend_passes_through(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-tools", max_tokens=100, tools=WEATHER, messages=ask("weather")
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "text", "tool_use"]
    assert [b.input for b in final.content if b.type == "tool_use"] == [
        {"city": "Paris"},
        {"city": "Tokyo"},
    ]
    direct = Message.model_validate(final.model_dump())
    assert direct.stop_reason == "tool_use"


def test_tool_use_round_trip_on_an_anthropic_backend(
    client: anthropic.Anthropic, fakes: tuple[FakeAnthropic, FakeUpstream]
) -> None:
    first = client.messages.create(
        model="claude-tools", max_tokens=100, tools=WEATHER, messages=ask("weather")
    )
    results: Any = [
        {"type": "tool_result", "tool_use_id": b.id, "content": "sunny"}
        for b in first.content
        if b.type == "tool_use"
    ]
    second = client.messages.create(
        model="claude",
        max_tokens=100,
        tools=WEATHER,
        messages=[
            *ask("weather"),
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": results},
        ],
    )
    assert second.content[0].text == "Hello from claude-x: sunny sunny"  # type: ignore[union-attr]


def test_an_anthropic_error_event_is_relayed(client: anthropic.Anthropic) -> None:
    stream = client.messages.create(
        model="claude-mid-error", max_tokens=64, messages=ask("x"), stream=True
    )
    with pytest.raises(anthropic.APIStatusError) as caught:
        list(stream)
    assert caught.value.body == {  # as Anthropic sent it
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_an_error_as_first_event_falls_back(
    client: anthropic.Anthropic, fakes: tuple[FakeAnthropic, FakeUpstream]
) -> None:
    with client.messages.stream(
        model="claude-first-error", max_tokens=64, messages=ask("x")
    ) as stream:
        assert "".join(stream.text_stream) == "Hello from claude-y: x"
    assert [r.body["model"] for r in fakes[0].requests] == ["overloaded-first", "claude-y"]


# --- the endpoint -------------------------------------------------------------------------------


def test_x_api_key_and_bearer_both_authenticate(gateway: GatewayProcess) -> None:
    body = {"model": "mock", "max_tokens": 8, "messages": ask("x")}
    for headers in ({"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}):
        assert gateway.http.post("/v1/messages", json=body, headers=headers).status_code == 200


def test_errors_have_anthropics_shape(gateway: GatewayProcess) -> None:
    def post(body: object, key: str = KEY) -> httpx2.Response:
        return gateway.http.post("/v1/messages", json=body, headers={"x-api-key": key})

    cases = [
        (
            post({"model": "gpt", "max_tokens": 8, "messages": ask("x")}, "sk-kl-wrong"),
            401,
            "authentication_error",
        ),
        (post({"model": "nope", "max_tokens": 8, "messages": ask("x")}), 404, "not_found_error"),
        (post({"model": "gpt", "messages": ask("x")}), 400, "invalid_request_error"),
        (
            post({"model": "gpt", "max_tokens": "8", "messages": ask("x")}),
            400,
            "invalid_request_error",
        ),
        (post({"model": "gpt", "max_tokens": 8, "messages": []}), 400, "invalid_request_error"),
        (
            post({"model": "embedder", "max_tokens": 8, "messages": ask("x")}),
            400,
            "invalid_request_error",
        ),
        (post([1, 2]), 400, "invalid_request_error"),
    ]
    for response, status, error_type in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert body.keys() == {"type", "error", "request_id"}
        assert body["type"] == "error"
        assert body["error"]["type"] == error_type
        assert body["error"]["message"]
        assert body["request_id"] == response.headers["x-request-id"]
    assert cases[2][0].json()["error"]["message"] == "`max_tokens` is required."
    assert "does not support messages" in cases[5][0].json()["error"]["message"]


def test_models_in_anthropic_shape(client: anthropic.Anthropic, gateway: GatewayProcess) -> None:
    ids = [m.id for m in client.models.list()]
    assert "claude" in ids and "gpt" in ids
    info = client.models.retrieve("claude")
    assert (info.id, info.type, info.display_name) == ("claude", "model", "claude")
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.models.retrieve("nope")
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    # Without anthropic-version, the same paths answer OpenAI's way.
    listed = gateway.http.get("/v1/models", headers={"x-api-key": KEY}).json()
    assert listed["object"] == "list"


def output_tokens(gateway: GatewayProcess, model_id: str, provider_name: str) -> float:
    labels = {
        "model": model_id,
        "operation": "messages",
        "provider": provider_name,
        "policy": "default/testers",
    }
    return sum(
        sample.value
        for family in text_string_to_metric_families(gateway.metrics())
        for sample in family.samples
        if sample.name == "kubellm_tokens_total" and sample.labels == {**labels, "type": "output"}
    )


@pytest.mark.parametrize(("model_id", "provider_name"), [("gpt", "openai"), ("claude", "claude")])
def test_metrics_say_messages(
    client: anthropic.Anthropic, gateway: GatewayProcess, model_id: str, provider_name: str
) -> None:
    before = output_tokens(gateway, model_id, f"default/{provider_name}")
    client.messages.create(model=model_id, max_tokens=64, messages=ask("a b"))
    with client.messages.stream(model=model_id, max_tokens=64, messages=ask("a b")) as stream:
        stream.until_done()
    assert output_tokens(gateway, model_id, f"default/{provider_name}") - before == 10
    assert (
        f'kubellm_requests_total{{model="{model_id}",operation="messages",'
        f'policy="default/testers",provider="default/{provider_name}",status="200",'
        f'status_class="2xx"}}'
    ) in gateway.metrics()


def test_readme_snippet(start_gateway: StartGateway) -> None:
    gateway = start_gateway("\n---\n".join(p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))))
    result = subprocess.run(
        [sys.executable, "-c", as_written(snippet("anthropic"), gateway)],
        capture_output=True,
        check=True,
        timeout=60,
        text=True,
    )
    assert result.stdout == "Mock reply from mock-small-v1: Hello!\n"


def test_beta_headers_reach_the_anthropic_backend(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.clear()
    client.messages.create(
        model="claude",
        max_tokens=16,
        messages=ask("hi"),
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    sent = fake_anthropic.wait_for(lambda r: r.method == "POST")
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent.headers["anthropic-version"] == "2023-06-01"  # still the provider's pin
