"""The OpenAI API through the gateway, spoken by the official openai SDK over real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import StartGateway
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import api_key, backend, dump, model, openai_provider, policy


@pytest.fixture(scope="module")
def key() -> str:
    return new_key()


@pytest.fixture(scope="module")
def gateway(
    start_module_gateway: StartGateway, fake_openai: FakeUpstream, key: str
) -> GatewayProcess:
    return start_module_gateway(
        dump(
            openai_provider("openai", fake_openai.url, fake_openai.api_key),
            model(
                "gpt",
                [backend("openai", "gpt-4o-mini")],
                model="gpt-4o",
                aliases=["gpt-latest"],
                capabilities=["chat", "completions", "embeddings"],
            ),
            model("chat-only", [backend("openai", "gpt-4o-mini")], model="org/chat-only:v1"),
            model("tools", [backend("openai", "tools")]),
            api_key("tester", key, groups=["testers"]),
            policy("testers", [("Group", "testers")], models=["*"]),
        )
    )


@pytest.fixture
def client(gateway: GatewayProcess, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as c:
        yield c


@pytest.fixture
def upstream(fake_openai: FakeUpstream) -> FakeUpstream:
    fake_openai.clear()
    return fake_openai


def last_request(fake: FakeUpstream) -> Any:
    return fake.wait_for(lambda r: r.method == "POST")


def test_chat_non_stream(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "say hi"}]
    )
    assert reply.choices[0].message.content == "Hello from gpt-4o-mini: say hi"
    assert reply.usage is not None and reply.usage.prompt_tokens == 2
    sent = last_request(upstream)
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-4o-mini"  # the backend's model, not the client's
    assert sent.headers["authorization"] == f"Bearer {upstream.api_key}"


def test_unknown_fields_pass_through_untouched(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    extra = {
        "reasoning_effort": "low",
        "verbosity": "low",
        "metadata": {"team": "a"},
        "some_future_field": {"nested": [1, 2, 3]},
    }
    client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "x"}],
        extra_body=extra,
        temperature=0.25,
        max_completion_tokens=7,
    )
    body = last_request(upstream).body
    for field, value in {**extra, "temperature": 0.25, "max_completion_tokens": 7}.items():
        assert body[field] == value
    assert "stream_options" not in body  # only streams are asked for usage


def test_alias_resolves_to_the_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gpt-latest", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content.startswith("Hello from gpt-4o-mini")  # type: ignore[union-attr]


def test_stream_relays_every_chunk_and_hides_usage_not_asked_for(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "one two three"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from gpt-4o-mini: one two three"
    assert all(c.choices for c in chunks), "the usage chunk leaked to a client that did not ask"
    # ...while the gateway asked upstream for it, to count tokens.
    assert last_request(upstream).body["stream_options"] == {"include_usage": True}


def test_stream_usage_when_asked(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "a b"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 2


def test_stream_headers(gateway: GatewayProcess, key: str) -> None:
    with gateway.http.stream(
        "POST",
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as response:
        body = response.read()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-length" not in response.headers
    assert response.headers["x-request-id"]
    assert body.endswith(b"data: [DONE]\n\n")


def test_tool_call_deltas_pass_through_intact(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "weather in Paris and Rome"}]
    with client.chat.completions.stream(model="tools", messages=messages) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 2
    assert final.choices[0].finish_reason == "tool_calls"
    for call in calls:
        assert call.type == "function"
        assert call.id and call.function.name
        assert call.function.arguments.startswith("{")


async def test_async_client_stream(gateway: GatewayProcess, key: str) -> None:
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "async"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello from gpt-4o-mini: async"


def test_embeddings(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    result = client.embeddings.create(model="gpt-4o", input=["a", "b c"])
    assert [d.index for d in result.data] == [0, 1]
    assert last_request(upstream).path == "/v1/embeddings"


def test_embeddings_on_a_chat_only_model_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="does not support embeddings"):
        client.embeddings.create(model="org/chat-only:v1", input="x")


def test_completions_native(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    result = client.completions.create(model="gpt-4o", prompt="once upon")
    assert result.object == "text_completion"
    assert last_request(upstream).path == "/v1/completions"


def test_completions_on_chat_only_model_are_converted(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    result = client.completions.create(model="org/chat-only:v1", prompt="once upon", max_tokens=9)
    assert result.object == "text_completion"
    assert result.choices[0].text == "Hello from gpt-4o-mini: once upon"
    assert result.usage is not None and result.usage.prompt_tokens == 2
    sent = last_request(upstream)
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [{"role": "user", "content": "once upon"}]
    assert sent.body["max_tokens"] == 9


def test_completions_stream_on_chat_only_model(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="org/chat-only:v1",
            prompt="a b",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from gpt-4o-mini: a b"
    assert all(c.object == "text_completion" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completions_conversion_refuses_what_chat_cannot_do(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model="org/chat-only:v1", prompt="x", echo=True)
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client.completions.create(model="org/chat-only:v1", prompt=["a", "b"])


def test_models_list_and_get(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == sorted(["gpt-4o", "org/chat-only:v1", "tools"])
    # Ids with "/" and ":" work in the path.
    assert client.models.retrieve("org/chat-only:v1").id == "org/chat-only:v1"
    assert client.models.retrieve("gpt-latest").id == "gpt-4o"


def test_request_id_is_echoed_or_made(gateway: GatewayProcess, key: str) -> None:
    given = gateway.http.get(
        "/v1/models", headers={"authorization": f"Bearer {key}", "x-request-id": "trace-me-123"}
    )
    assert given.headers["x-request-id"] == "trace-me-123"
    made = gateway.http.get("/healthz")
    assert len(made.headers["x-request-id"]) >= 16
    assert gateway.http.get("/nope").headers["x-request-id"]
