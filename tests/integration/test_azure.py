"""Azure OpenAI backends: deployment URLs, `api-key`, and streams clients can read."""

from __future__ import annotations

import openai
import orjson
import pytest

from tests.conftest import StartGateway
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import api_key, backend, dump, model, policy, provider, secret

KEY = new_key()


@pytest.fixture(scope="module")
def gateway(start_module_gateway: StartGateway, fake_azure: FakeUpstream) -> GatewayProcess:
    return start_module_gateway(
        dump(
            secret("azure-key", apiKey=fake_azure.api_key),
            provider(
                "azure",
                "AzureOpenAI",
                baseURL=fake_azure.url,
                apiKeySecretRef={"name": "azure-key", "key": "apiKey"},
                azure={"apiVersion": "2024-10-21"},
            ),
            model(
                "gpt",
                [backend("azure", "gpt-4o-prod")],
                model="gpt-4o",
                capabilities=["chat", "embeddings"],
            ),
            api_key("tester", KEY, groups=["testers"]),
            policy("all", [("Group", "testers")], models=["*"]),
        )
    )


@pytest.fixture
def upstream(fake_azure: FakeUpstream) -> FakeUpstream:
    fake_azure.clear()
    return fake_azure


def test_chat_goes_to_the_deployment_with_api_key(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from gpt-4o-prod: hi"
    sent = upstream.wait_for(lambda r: r.method == "POST")
    assert sent.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == upstream.api_key
    assert "authorization" not in sent.headers


def test_stream_has_no_choiceless_chunks_and_keeps_filter_results(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    with gateway.http.stream(
        "POST",
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "a b"}]},
    ) as response:
        raw = response.read()
    events = [e.removeprefix(b"data: ") for e in raw.strip().split(b"\n\n")]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["choices"] for c in chunks), "a client reading choices[0] would crash"
    assert chunks[0]["prompt_filter_results"][0]["prompt_index"] == 0
    assert all("content_filter_results" in c["choices"][0] for c in chunks)
    # The official SDK reads the same stream end to end.
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "a b"}], stream=True
        )
    )
    assert text == "Hello from gpt-4o-prod: a b"


def test_usage_chunk_survives_when_asked(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "a b"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 2


def test_embeddings(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    assert len(client.embeddings.create(model="gpt-4o", input="x").data) == 1
    assert upstream.wait_for(lambda r: r.method == "POST").path.endswith("/embeddings")
