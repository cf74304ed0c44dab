"""OpenAI clients on Claude: the openai SDK through the gateway to a fake Anthropic API.

Every request the gateway sends is validated by the fake against the anthropic package's
request types (`rejected` must stay empty), and every answer the fake sends is built from
the package's response types.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import StartGateway
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import (
    anthropic_provider,
    api_key,
    backend,
    dump,
    model,
    openai_provider,
    policy,
)

KEY = new_key()
ONCE = {"attempts": 0}
FAST_RETRY = {"attempts": 2, "initialBackoff": "10ms", "maxBackoff": "2s"}
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4"
    "DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=new_key()) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    start_module_gateway: StartGateway, fake_anthropic: FakeAnthropic, fake_openai: FakeUpstream
) -> GatewayProcess:
    url, secret = fake_anthropic.url, fake_anthropic.api_key
    return start_module_gateway(
        dump(
            anthropic_provider("claude", url, secret, retry=ONCE),
            anthropic_provider("claude-retrying", url, secret, retry=FAST_RETRY),
            anthropic_provider(
                "claude-new", url, secret, retry=ONCE, anthropic={"version": "2026-10-21"}
            ),
            anthropic_provider(
                "claude-short", url, secret, retry=ONCE, anthropic={"defaultMaxTokens": 3}
            ),
            openai_provider("openai", fake_openai.url, fake_openai.api_key, retry=ONCE),
            model("claude", [backend("claude", "claude-x")], pricing={"inputPerMillion": 3}),
            model("claude-tools", [backend("claude", "tools")]),
            model("claude-thinking", [backend("claude", "thinking")]),
            model("claude-cached", [backend("claude", "cached")]),
            model("claude-refusal", [backend("claude", "refusal")]),
            model("claude-mid-error", [backend("claude", "overloaded-mid-stream")]),
            model("claude-retried", [backend("claude-retrying", "claude-x")]),
            model("claude-new", [backend("claude-new", "claude-x")]),
            model("claude-short", [backend("claude-short", "claude-x")]),
            model(
                "claude-overloaded",
                [backend("claude", "fail-529"), backend("openai", "gpt-4o-mini", priority=1)],
            ),
            model("claude-overloaded-only", [backend("claude-retrying", "fail-529")]),
            model(
                "claude-first-event-error",
                [backend("claude", "overloaded-first"), backend("claude", "claude-y", priority=1)],
            ),
            model(
                "claude-spend",
                [
                    backend("claude-retrying", "fail-429-spend"),
                    backend("openai", "gpt-4o-mini", priority=1),
                ],
            ),
            model("claude-spend-only", [backend("claude-retrying", "fail-429-spend")]),
            model("claude-400", [backend("claude-retrying", "fail-400")]),
            model(
                "claude-embeddings",
                [backend("claude", "claude-x")],
                capabilities=["chat", "embeddings"],
            ),
            api_key("tester", KEY, groups=["testers"]),
            policy("testers", [("Group", "testers")], models=["*"]),
        )
    )


@pytest.fixture
def upstream(fake_anthropic: FakeAnthropic, fake_openai: FakeUpstream) -> Iterator[FakeAnthropic]:
    fake_anthropic.clear()
    fake_openai.clear()
    yield fake_anthropic
    assert fake_anthropic.rejected == [], "the gateway sent requests Anthropic would refuse"


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0) as c:
        yield c


def sent(fake: FakeUpstream) -> list[Any]:
    """The bodies of the messages requests the fake received, in order."""
    return [r.body for r in fake.requests if r.method == "POST"]


def last_sent(fake: FakeAnthropic) -> Any:
    return fake.wait_for(lambda r: r.method == "POST")


HELLO: Any = [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": "Answer in English."},
    {"role": "user", "content": "hi there"},
]


def test_plain_chat(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    reply = client.chat.completions.create(model="claude", messages=HELLO, user="alice")
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "Hello from claude-x: hi there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 5)
    request = last_sent(upstream)
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == upstream.api_key
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert request.body == {
        "model": "claude-x",
        "system": "Be brief.\n\nAnswer in English.",
        "messages": [{"role": "user", "content": "hi there"}],
        "max_tokens": 4096,
        "metadata": {"user_id": "alice"},
    }


def test_default_max_tokens_is_the_providers(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    reply = client.chat.completions.create(
        model="claude-short", messages=[{"role": "user", "content": "a b c"}]
    )
    assert last_sent(upstream).body["max_tokens"] == 3
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "Hello from claude-x:"


def test_stream_relays_text_and_hides_usage_not_asked_for(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    chunks = list(
        client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "one two"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Hello from claude-x: one two"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert last_sent(upstream).body["stream"] is True


def test_stream_usage_when_asked(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    chunks = list(
        client.chat.completions.create(
            model="claude-cached",
            messages=[{"role": "user", "content": "one two"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    # 2 words sent, 100 read from the cache, 20 written to it: all of them are the prompt.
    assert (usage.prompt_tokens, usage.completion_tokens) == (122, 5)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 100


def test_parallel_tool_calls_interleaved_with_text_keep_their_indices(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    chunks = list(
        client.chat.completions.create(
            model="claude-tools",
            messages=[{"role": "user", "content": "weather in Paris and Tokyo"}],
            tools=tools,
            stream=True,
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    heads = [t for d in deltas for t in d.tool_calls or () if t.id]
    # Content blocks 1 and 3 in Anthropic's numbering; tool calls 0 and 1 in OpenAI's.
    assert [(t.index, t.id, t.function and t.function.name) for t in heads] == [
        (0, "toolu_fake_0", "get_weather"),
        (1, "toolu_fake_1", "get_weather"),
    ]
    assert "".join(d.content or "" for d in deltas) == "Checking Paris. And Tokyo."
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert last_sent(upstream).body["tools"] == [
        {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}
    ]


def test_stream_helper_reassembles_the_tool_calls(client: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    with client.chat.completions.stream(
        model="claude-tools", messages=[{"role": "user", "content": "weather"}], tools=tools
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Checking Paris. And Tokyo."
    calls = message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris"},
        {"city": "Tokyo"},
    ]
    assert final.choices[0].finish_reason == "tool_calls"


def test_tool_calls_without_stream(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="claude-tools", messages=[{"role": "user", "content": "weather"}]
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [(c.id, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("toolu_fake_0", {"city": "Paris"}),
        ("toolu_fake_1", {"city": "Tokyo"}),
    ]
    assert reply.choices[0].finish_reason == "tool_calls"


def test_tool_round_trip(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    messages: Any = [
        {"role": "user", "content": "weather in Paris and Tokyo"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"toolu_{city}",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
                }
                for city in ("Paris", "Tokyo")
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_Paris", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_Tokyo", "content": "rainy"},
    ]
    tools: Any = [{"type": "function", "function": {"name": "get_weather"}}]
    reply = client.chat.completions.create(
        model="claude",
        messages=messages,
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assert reply.choices[0].message.content == "Hello from claude-x: sunny rainy"
    body = last_sent(upstream).body
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_Paris",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_Tokyo",
                    "name": "get_weather",
                    "input": {"city": "Tokyo"},
                },
            ],
        },
        {  # consecutive tool results: one user turn
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_Paris", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_Tokyo", "content": "rainy"},
            ],
        },
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_images(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    content: Any = [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": PIXEL}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
    ]
    reply = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": content}]
    )
    assert reply.choices[0].message.content == "Hello from claude-x: compare [image] [image]"
    blocks = last_sent(upstream).body["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL.split(",")[1]},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }


def test_stop_sequences(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    reply = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "one two STOP three"}],
        stop=["STOP", "never"],
    )
    assert reply.choices[0].message.content == "Hello from claude-x: one two "
    assert reply.choices[0].finish_reason == "stop"
    assert last_sent(upstream).body["stop_sequences"] == ["STOP", "never"]


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_stop(client: openai.OpenAI, upstream: FakeAnthropic, stream: bool) -> None:
    args: Any = {"model": "claude", "messages": [{"role": "user", "content": "a b c"}]}
    if stream:
        chunks = list(client.chat.completions.create(**args, max_tokens=2, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        reply = client.chat.completions.create(**args, max_completion_tokens=2, max_tokens=9)
        text, finish = reply.choices[0].message.content or "", reply.choices[0].finish_reason
    assert (text, finish) == ("Hello from", "length")
    assert last_sent(upstream).body["max_tokens"] == 2  # max_completion_tokens wins


def test_mid_stream_error_event_ends_the_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="claude-mid-error", messages=[{"role": "user", "content": "x"}], stream=True
    )
    seen = []
    with pytest.raises(openai.APIError, match="Overloaded"):
        for chunk in stream:
            seen.append(chunk)
    assert seen, "the error came after the first events"


def test_overloaded_falls_back_to_the_next_backend(
    client: openai.OpenAI, gateway: GatewayProcess, upstream: FakeAnthropic
) -> None:
    reply = client.chat.completions.create(
        model="claude-overloaded", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "Hello from gpt-4o-mini: x"
    assert [b["model"] for b in sent(upstream)] == ["fail-529"]
    assert 'kubellm_fallbacks_total{model="claude-overloaded"}' in gateway.metrics()


def test_overloaded_everywhere_is_a_503(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="claude-overloaded-only", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(sent(upstream)) == 3  # retried twice first


def test_error_as_first_event_falls_back(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    chunks = list(
        client.chat.completions.create(
            model="claude-first-event-error",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from claude-y: x"
    assert [b["model"] for b in sent(upstream)] == ["overloaded-first", "claude-y"]


def test_spend_limit_is_not_retried_but_falls_back(
    client: openai.OpenAI, upstream: FakeAnthropic, fake_openai: FakeUpstream
) -> None:
    reply = client.chat.completions.create(
        model="claude-spend", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "Hello from gpt-4o-mini: x"
    assert [b["model"] for b in sent(upstream)] == ["fail-429-spend"]  # despite 2 retries


def test_spend_limit_alone_is_a_final_429(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    with pytest.raises(openai.RateLimitError, match="usage limits") as caught:
        client.chat.completions.create(
            model="claude-spend-only", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.code == "rate_limit_exceeded"
    assert len(sent(upstream)) == 1


def test_rate_limit_retry_after_is_honoured(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    upstream.fail_next(1, 429, retry_after=0.4)
    started = time.monotonic()
    reply = client.chat.completions.create(
        model="claude-retried", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices
    assert time.monotonic() - started >= 0.4
    assert len(sent(upstream)) == 2


def test_anthropic_client_error_keeps_status_and_message(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="claude-400", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "messages: text content blocks must be non-empty",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert len(sent(upstream)) == 1  # a 4xx is not retried


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 7}, "seed"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"temperature": 1.5}, "temperature"),
        ({"stop": [" "]}, "stop"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
    ],
)
def test_what_anthropic_cannot_honour_is_a_clear_400(
    client: openai.OpenAI, upstream: FakeAnthropic, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "x"}], extra_body=extra
        )
    assert caught.value.param == param
    assert param in caught.value.message
    assert sent(upstream) == []


def test_neutral_values_of_unsupported_fields_pass(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    reply = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "x"}],
        n=1,
        presence_penalty=0,
        logprobs=False,
        store=False,
        temperature=0.5,
        top_p=0.9,
    )
    assert reply.choices
    body = last_sent(upstream).body
    assert (body["temperature"], body["top_p"]) == (0.5, 0.9)
    assert not {"n", "presence_penalty", "logprobs", "store"} & body.keys()


def test_json_schema_response_format(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}}}
    client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    format_ = last_sent(upstream).body["output_config"]["format"]
    assert format_ == {"type": "json_schema", "schema": schema}


def test_thinking_and_refusal(client: openai.OpenAI) -> None:
    thought = client.chat.completions.create(
        model="claude-thinking", messages=[{"role": "user", "content": "q"}]
    )
    assert thought.choices[0].message.content == "Hello from thinking: q"
    refused = client.chat.completions.create(
        model="claude-refusal", messages=[{"role": "user", "content": "q"}]
    )
    assert refused.choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize("stream", [False, True])
def test_completions_on_claude_go_through_chat(
    client: openai.OpenAI, upstream: FakeAnthropic, stream: bool
) -> None:
    if stream:
        chunks = list(client.completions.create(model="claude", prompt="once upon", stream=True))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    else:
        text = client.completions.create(model="claude", prompt="once upon").choices[0].text
    assert text == "Hello from claude-x: once upon"
    assert last_sent(upstream).body["messages"] == [{"role": "user", "content": "once upon"}]


def test_embeddings_on_claude_are_a_clear_400(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    with pytest.raises(openai.BadRequestError, match="Anthropic has no embeddings API"):
        client.embeddings.create(model="claude-embeddings", input="x")
    with pytest.raises(openai.BadRequestError, match="does not support embeddings"):
        client.embeddings.create(model="claude", input="x")
    assert sent(upstream) == []


def test_anthropic_version_is_pinned_per_provider(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    assert client.chat.completions.create(
        model="claude-new", messages=[{"role": "user", "content": "x"}]
    ).choices
    assert last_sent(upstream).headers["anthropic-version"] == "2026-10-21"
    # That version refuses sampling parameters: Anthropic's 400 comes back as it is.
    upstream.clear()
    with pytest.raises(openai.BadRequestError, match="temperature: not supported"):
        client.chat.completions.create(
            model="claude-new", messages=[{"role": "user", "content": "x"}], temperature=0.2
        )
    upstream.rejected.clear()  # refused on purpose


def test_tokens_and_cost_are_counted(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "a b"}])
    metrics = gateway.metrics()
    assert (
        'kubellm_tokens_total{model="claude",operation="chat",policy="default/testers",'
        'provider="default/claude",type="input"}'
    ) in metrics
    assert (
        'kubellm_cost_usd_total{model="claude",policy="default/testers",provider="default/claude"}'
    ) in metrics
