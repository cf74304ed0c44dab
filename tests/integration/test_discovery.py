"""Azure deployment listing through a fake Resource Manager: pages, tokens, failures."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from kubellm_gateway.providers.entra import (
    COGNITIVE_SERVICES_SCOPE,
    RESOURCE_MANAGER_SCOPE,
    ClientCredentials,
    EntraTokenSource,
)
from kubellm_gateway.resources import AzureDiscovery, LLMProvider, parse_resource
from kubellm_operator.discovery import (
    Deployment,
    DiscoveryError,
    list_deployments,
    model_manifest,
    model_name,
)
from tests.fakes.azure_control import FakeAzureControl, deployment
from tests.support.gateway import new_key

SECRET = new_key()
ACCOUNT = ("sub-1", "rg-ai", "contoso-openai")


@pytest.fixture
def arm() -> Iterator[FakeAzureControl]:
    with FakeAzureControl("tenant", {"client": SECRET}) as fake:
        fake.deployments[ACCOUNT] = [deployment(f"dep-{i}", f"gpt-{i}") for i in range(5)]
        yield fake


def discovery(arm: FakeAzureControl) -> AzureDiscovery:
    sub, rg, account = ACCOUNT
    return AzureDiscovery(
        subscriptionID=sub, resourceGroup=rg, accountName=account, armEndpoint=arm.url
    )


async def token(arm: FakeAzureControl, session: aiohttp.ClientSession) -> str:
    credentials = ClientCredentials("tenant", "client", SECRET, arm.url)
    return await EntraTokenSource(credentials, RESOURCE_MANAGER_SCOPE, lambda: session).token()


async def test_follows_next_link_across_pages(arm: FakeAzureControl) -> None:
    arm.page_size = 2  # 5 deployments: 3 pages
    async with aiohttp.ClientSession() as session:
        found = await list_deployments(session, await token(arm, session), discovery(arm))
    assert [d.name for d in found] == [f"dep-{i}" for i in range(5)]
    assert found[0].status_entry() == {
        "name": "dep-0",
        "model": "gpt-0",
        "version": "2024-08-06",
        "provisioningState": "Succeeded",
    }


async def test_a_removed_deployment_is_gone_at_the_next_poll(arm: FakeAzureControl) -> None:
    async with aiohttp.ClientSession() as session:
        bearer = await token(arm, session)
        assert len(await list_deployments(session, bearer, discovery(arm))) == 5
        del arm.deployments[ACCOUNT][1]
        names = [d.name for d in await list_deployments(session, bearer, discovery(arm))]
    assert names == ["dep-0", "dep-2", "dep-3", "dep-4"]


async def test_a_token_for_another_scope_is_refused(arm: FakeAzureControl) -> None:
    credentials = ClientCredentials("tenant", "client", SECRET, arm.url)
    async with aiohttp.ClientSession() as session:
        source = EntraTokenSource(credentials, COGNITIVE_SERVICES_SCOPE, lambda: session)
        inference = await source.token()
        with pytest.raises(DiscoveryError, match="401: bad token"):
            await list_deployments(session, inference, discovery(arm))


async def test_unreachable_resource_manager(arm: FakeAzureControl) -> None:
    async with aiohttp.ClientSession() as session:
        bearer = await token(arm, session)
        arm.down = True
        with pytest.raises(DiscoveryError, match="503"):
            await list_deployments(session, bearer, discovery(arm))


def test_model_manifests_are_owned_valid_llmmodels() -> None:
    provider = parse_resource(
        {
            "apiVersion": "kubellm.io/v1alpha1",
            "kind": "LLMProvider",
            "metadata": {"name": "azure-eu", "namespace": "ai", "uid": "u-1"},
            "spec": {"type": "Mock"},
        }
    )
    assert isinstance(provider, LLMProvider)
    manifest = model_manifest(provider, Deployment("GPT_4o.Prod", "gpt-4o", "1", "Succeeded"))
    parsed = parse_resource(manifest)
    assert parsed is not None and parsed.kind == "LLMModel"
    assert parsed.metadata.namespace == "ai"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert manifest["spec"]["backends"] == [{"provider": "azure-eu", "model": "GPT_4o.Prod"}]
    assert manifest["metadata"]["name"] == "azure-eu-gpt-4o-prod"


@pytest.mark.parametrize(
    ("provider", "deployment_name", "expected"),
    [("p", "Dep_1", "p-dep-1"), ("p", "a..b", "p-a-b"), ("p", "-x-", "p-x")],
)
def test_model_names_are_dns_labels(provider: str, deployment_name: str, expected: str) -> None:
    assert model_name(provider, deployment_name) == expected
