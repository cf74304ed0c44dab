"""/metrics after real traffic: counts, token sums and histograms match exactly."""

from __future__ import annotations

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartGateway
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import api_key, backend, dump, model, policy, provider

KEY = new_key()


def samples(gateway: GatewayProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(gateway.metrics())
        for s in family.samples
    }


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def gateway(start_gateway: StartGateway) -> GatewayProcess:
    return start_gateway(
        dump(
            provider("mock", "Mock"),
            model(
                "m",
                [backend("mock", "m-v1")],
                pricing={"inputPerMillion": 1000000, "outputPerMillion": 2000000},
            ),
            api_key("tester", KEY, groups=["t"]),
            policy("all", [("Group", "t")], models=["*"]),
        )
    )


def test_counts_tokens_and_latency_match_the_traffic(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    usage_in = usage_out = 0
    for _ in range(3):
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "a b c"}]
        )
        assert reply.usage is not None
        usage_in += reply.usage.prompt_tokens
        usage_out += reply.usage.completion_tokens
    for _ in range(2):
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "a b c"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
        assert usage is not None
        usage_in += usage.prompt_tokens
        usage_out += usage.completion_tokens
    for _ in range(4):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="secret-model-name", messages=[{"role": "user", "content": "x"}]
            )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=gateway.base_url, api_key=new_key(), max_retries=0
        ).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])

    scrape = samples(gateway)
    ok = {
        "operation": "chat",
        "model": "m",
        "provider": "default/mock",
        "status_class": "2xx",
        "status": "200",
    }
    assert value(scrape, "kubellm_requests_total", **ok) == 5
    # Unknown model names never become label values: cardinality stays bounded.
    refused = {"operation": "chat", "model": "-", "provider": "-", "status_class": "4xx"}
    assert value(scrape, "kubellm_requests_total", **refused, status="404") == 4
    assert value(scrape, "kubellm_requests_total", **refused, status="401") == 1
    assert not any("secret-model-name" in str(labels) for _, labels in scrape)
    assert (
        value(
            scrape,
            "gen_ai_server_request_duration_seconds_count",
            operation="chat",
            model="m",
            status_class="2xx",
        )
        == 5
    )
    assert (
        value(
            scrape, "gen_ai_server_time_to_first_token_seconds_count", operation="chat", model="m"
        )
        == 2
    )
    tokens = {"operation": "chat", "model": "m", "provider": "default/mock"}
    assert value(scrape, "kubellm_tokens_total", **tokens, type="input") == usage_in
    assert value(scrape, "kubellm_tokens_total", **tokens, type="output") == usage_out
    assert value(
        scrape, "kubellm_cost_usd_total", model="m", provider="default/mock"
    ) == pytest.approx(usage_in * 1 + usage_out * 2)
    assert value(scrape, "kubellm_inflight_requests") == 0
    assert value(scrape, "kubellm_config_generation") == 1
    assert value(scrape, "kubellm_config_resources", kind="LLMModel") == 1
