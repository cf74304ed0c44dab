"""ProviderPool: live providers survive rebuilds while their spec and key stay the same."""

import asyncio
from typing import Any

from kubellm_gateway.providers.mock import MockProvider
from kubellm_gateway.providers.pool import ProviderPool
from kubellm_gateway.resources import LLMProvider
from kubellm_gateway.routing import build
from tests.support.manifests import backend, model, provider, secret
from tests.unit.conftest import parse_all

NAME = "default/oai"
REF = {"name": "oai-key", "key": "apiKey"}


def openai(**spec: Any) -> LLMProvider:
    doc = provider("oai", "OpenAI", baseURL="http://127.0.0.1:9/v1", apiKeySecretRef=REF, **spec)
    (resource,) = parse_all(doc)
    assert isinstance(resource, LLMProvider)
    return resource


def test_unchanged_spec_and_key_reuse_the_provider() -> None:
    pool = ProviderPool()
    live, left = pool.sync({NAME: (openai(), "k1")})
    again, left_again = pool.sync({NAME: (openai(), "k1")})  # a new but equal resource
    assert again[NAME] is live[NAME]
    assert left == left_again == []


def test_changed_key_replaces_the_provider() -> None:
    pool = ProviderPool()
    old = pool.sync({NAME: (openai(), "k1")})[0][NAME]
    live, left = pool.sync({NAME: (openai(), "k2")})
    assert live[NAME] is not old
    assert left == [old]


def test_changed_spec_replaces_the_provider() -> None:
    pool = ProviderPool()
    old = pool.sync({NAME: (openai(), "k1")})[0][NAME]
    live, left = pool.sync({NAME: (openai(timeouts={"connect": "1s"}), "k1")})
    assert live[NAME] is not old
    assert left == [old]
    assert live[NAME].spec.timeouts.connect == 1.0


def test_removed_providers_are_returned() -> None:
    pool = ProviderPool()
    old = pool.sync({NAME: (openai(), "k1")})[0][NAME]
    assert pool.sync({}) == ({}, [old])
    assert pool.sync({}) == ({}, [])


def test_build_keeps_providers_across_generations() -> None:
    pool = ProviderPool()
    docs = [provider("oai", "OpenAI", baseURL="http://127.0.0.1:9/v1", apiKeySecretRef=REF)]
    docs.append(model("chat", [backend("oai", "gpt")]))
    first, _ = build(parse_all(secret("oai-key", apiKey="k1"), *docs), pool, 1)
    second, left = build(parse_all(secret("oai-key", apiKey="k1"), *docs), pool, 2)
    old = first.models["chat"].tiers[0][0].provider
    assert second.models["chat"].tiers[0][0].provider is old
    assert left == []
    third, left = build(parse_all(secret("oai-key", apiKey="k2"), *docs), pool, 3)
    assert third.models["chat"].tiers[0][0].provider is not old
    assert left == [old]


class Tracked(MockProvider):
    closed = 0

    async def aclose(self) -> None:
        self.closed += 1


async def test_retired_provider_closes_after_its_last_request() -> None:
    pool = ProviderPool()
    (mock,) = parse_all(provider("m", "Mock"))
    assert isinstance(mock, LLMProvider)
    busy, idle = Tracked("default/busy", mock.spec), Tracked("default/idle", mock.spec)
    busy.inflight = 1
    pool.retire([busy, idle])
    await asyncio.sleep(0)
    assert (busy.retired, idle.retired) == (True, True)
    assert (busy.closed, idle.closed) == (0, 1)
    busy.inflight = 0
    pool.release_if_idle(busy)
    await asyncio.sleep(0)
    assert busy.closed == 1
