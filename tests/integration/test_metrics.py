"""/metrics after real traffic: counts, token sums and histograms match exactly."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartGateway
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import (
    api_key,
    backend,
    dump,
    model,
    openai_provider,
    policy,
    provider,
)

KEY = new_key()
Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(gateway: GatewayProcess) -> Scrape:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(gateway.metrics())
        for s in family.samples
    }


def value(scrape: Scrape, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def manifests(fake: FakeUpstream) -> str:
    pricing = {"inputPerMillion": 1000000, "outputPerMillion": 2000000}  # $1 / $2 per token
    return dump(
        provider("mock", "Mock"),
        provider("slow", "Mock", mock={"tokensPerSecond": 5}),
        openai_provider("openai", fake.url, fake.api_key, retry={"attempts": 0}),
        model("m", [backend("mock", "m-v1")], pricing=pricing),
        model("slow", [backend("slow", "slow-v1")]),
        model("fb", [backend("openai", "fail-500"), backend("mock", "fb-v1", priority=1)]),
        api_key("tester", KEY, user="alice", groups=["t"]),
        policy("all", [("Group", "t")], models=["*"]),
    )


@pytest.fixture
def gateway(start_gateway: StartGateway, fake_openai: FakeUpstream) -> GatewayProcess:
    return start_gateway(manifests(fake_openai))


def test_counts_tokens_and_latency_match_the_traffic(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    ask: Any = [{"role": "user", "content": "a b c"}]
    usage_in = usage_out = 0
    for _ in range(3):
        reply = client.chat.completions.create(model="m", messages=ask)
        assert reply.usage is not None
        usage_in += reply.usage.prompt_tokens
        usage_out += reply.usage.completion_tokens
    for _ in range(2):
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=ask,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
        assert usage is not None
        usage_in += usage.prompt_tokens
        usage_out += usage.completion_tokens
    # A stream whose client did not ask for usage is counted all the same.
    list(client.chat.completions.create(model="m", messages=ask, stream=True))
    assert usage is not None  # the same prompt: the same usage
    usage_in += usage.prompt_tokens
    usage_out += usage.completion_tokens
    client.chat.completions.create(model="fb", messages=ask)
    for _ in range(4):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="secret-model-name", messages=ask)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.base_url, api_key=new_key(), max_retries=0).models.list()
    with (
        httpx2.Client(base_url=gateway.url, timeout=10) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "slow", "stream": True, "messages": ask},
        ) as response,
    ):
        next(response.iter_raw())  # one event, then the client goes away

    scrape = samples(gateway)
    base = {"operation": "chat", "policy": "default/all"}
    ok = {**base, "model": "m", "provider": "default/mock", "status_class": "2xx", "status": "200"}
    assert value(scrape, "kubellm_requests_total", **ok) == 6
    assert value(scrape, "kubellm_requests_total", **{**ok, "model": "fb"}) == 1
    # Unknown model names never become label values: cardinality stays bounded.
    refused = {
        "operation": "chat",
        "model": "-",
        "provider": "-",
        "policy": "-",
        "status_class": "4xx",
    }
    assert value(scrape, "kubellm_requests_total", **refused, status="404") == 4
    assert not any("secret-model-name" in str(labels) for _, labels in scrape)
    assert (
        value(
            scrape,
            "gen_ai_server_request_duration_seconds_count",
            operation="chat",
            model="m",
            status_class="2xx",
        )
        == 6
    )
    assert (
        value(
            scrape, "gen_ai_server_time_to_first_token_seconds_count", operation="chat", model="m"
        )
        == 3
    )
    # Every request that reached an upstream: 6 on m, 1 on fb, 1 on slow.
    assert value(scrape, "kubellm_gateway_overhead_seconds_count", operation="chat") == 8
    tokens = {**base, "model": "m", "provider": "default/mock"}
    assert value(scrape, "kubellm_tokens_total", **tokens, type="input") == usage_in
    assert value(scrape, "kubellm_tokens_total", **tokens, type="output") == usage_out
    assert (
        value(scrape, "gen_ai_client_token_usage_count", operation="chat", model="m", type="input")
        == 6
    )
    assert (
        value(scrape, "gen_ai_client_token_usage_sum", operation="chat", model="m", type="output")
        == usage_out
    )
    assert value(
        scrape, "kubellm_cost_usd_total", model="m", provider="default/mock", policy="default/all"
    ) == pytest.approx(usage_in * 1 + usage_out * 2)
    assert value(scrape, "kubellm_fallbacks_total", model="fb") == 1
    assert (
        value(scrape, "kubellm_upstream_errors_total", provider="default/openai", reason="5xx") == 1
    )
    assert value(scrape, "kubellm_stream_disconnects_total", operation="chat", model="slow") == 1
    assert value(scrape, "kubellm_inflight_requests") == 0
    assert value(scrape, "kubellm_config_generation") == 1
    assert value(scrape, "kubellm_config_resources", kind="LLMModel") == 3
    assert not any(labels and "user" in dict(labels) for _, labels in scrape), (
        "per-user labels only when switched on"
    )


def test_per_user_labels_when_switched_on(
    start_gateway: StartGateway, fake_openai: FakeUpstream
) -> None:
    gateway = start_gateway(manifests(fake_openai), extra_args=("--metrics-per-user", "true"))
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    scrape = samples(gateway)
    assert (
        value(
            scrape,
            "kubellm_requests_total",
            operation="chat",
            model="m",
            provider="default/mock",
            policy="default/all",
            status_class="2xx",
            status="200",
            user="alice",
        )
        == 1
    )
