"""Entra ID client credentials: the token source, and Azure inference with bearer tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import aiohttp
import openai
import pytest

from kubellm_gateway.providers.entra import (
    COGNITIVE_SERVICES_SCOPE,
    ClientCredentials,
    EntraError,
    EntraTokenSource,
)
from tests.conftest import StartGateway
from tests.fakes.azure_control import FakeAzureControl
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import api_key, backend, dump, model, policy, provider, secret

TENANT = "contoso-tenant"
CLIENT = "kubellm-client"
SECRET = new_key()  # registered: no gateway log may contain it


@pytest.fixture
def control(fake_azure: FakeUpstream) -> Iterator[FakeAzureControl]:
    with FakeAzureControl(TENANT, {CLIENT: SECRET}) as c:
        c.on_issue = lambda scope, token: fake_azure.bearer_tokens.add(token)
        yield c


def token_source(
    control: FakeAzureControl,
    session: aiohttp.ClientSession,
    clock: Callable[[], float] = time.monotonic,
    *,
    tenant: str = TENANT,
    client: str = CLIENT,
    secret: str = SECRET,
) -> EntraTokenSource:
    credentials = ClientCredentials(tenant, client, secret, control.url)
    return EntraTokenSource(credentials, COGNITIVE_SERVICES_SCOPE, lambda: session, clock)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_token_is_cached_shared_and_refreshed_before_expiry(
    control: FakeAzureControl,
) -> None:
    clock = Clock()
    control.expires_in = 3600
    async with aiohttp.ClientSession() as session:
        source = token_source(control, session, clock)
        tokens = await asyncio.gather(*(source.token() for _ in range(20)))
        assert len(set(tokens)) == 1 and control.token_requests == 1
        clock.now += 3600 - 299  # inside the 300 s refresh margin
        assert await source.token() != tokens[0]
        assert control.token_requests == 2


async def test_failed_refresh_keeps_a_still_valid_token(control: FakeAzureControl) -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        source = token_source(control, session, clock)
        first = await source.token()
        control.down = True
        clock.now += 3500  # due for refresh, not yet expired
        assert await source.token() == first
        clock.now += 200  # expired now
        with pytest.raises(EntraError, match="temporarily_unavailable"):
            await source.token()


@pytest.mark.parametrize(
    ("tenant", "client", "secret", "reason"),
    [
        (TENANT, CLIENT, "wrong", "AADSTS7000215"),
        (TENANT, "nobody", SECRET, "AADSTS700016"),
        ("elsewhere", CLIENT, SECRET, "AADSTS90002"),
    ],
)
async def test_refused_credentials_say_why_without_the_secret(
    control: FakeAzureControl, tenant: str, client: str, secret: str, reason: str
) -> None:
    async with aiohttp.ClientSession() as session:
        source = token_source(control, session, tenant=tenant, client=client, secret=secret)
        with pytest.raises(EntraError, match=reason) as caught:
            await source.token()
    assert secret not in str(caught.value)
    assert secret not in repr(source._credentials)


def entra_gateway(
    start: StartGateway, control: FakeAzureControl, azure: FakeUpstream, client_secret: str
) -> tuple[GatewayProcess, str]:
    key = new_key()
    gateway = start(
        dump(
            secret("entra", clientSecret=client_secret),
            provider(
                "azure",
                "AzureOpenAI",
                baseURL=azure.url,
                azure={
                    "entraID": {
                        "tenantID": TENANT,
                        "clientID": CLIENT,
                        "authorityHost": control.url,
                        "clientSecretRef": {"name": "entra", "key": "clientSecret"},
                    }
                },
            ),
            model("gpt", [backend("azure", "gpt-4o-prod")]),
            api_key("tester", key, groups=["t"]),
            policy("all", [("Group", "t")], models=["*"]),
        )
    )
    return gateway, key


def test_azure_inference_with_entra_bearer_tokens(
    start_gateway: StartGateway, control: FakeAzureControl, fake_azure: FakeUpstream
) -> None:
    fake_azure.clear()
    gateway, key = entra_gateway(start_gateway, control, fake_azure, SECRET)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    for _ in range(3):
        reply = client.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello from gpt-4o-prod: hi"
    assert control.token_requests == 1, "the token is cached across requests"
    assert control.issued[0][0] == COGNITIVE_SERVICES_SCOPE
    sent = fake_azure.wait_for(lambda r: r.method == "POST")
    assert sent.headers["authorization"] == f"Bearer {control.issued[0][1]}"
    assert "api-key" not in sent.headers


def test_refused_entra_credentials_give_a_502_that_names_no_internals(
    start_gateway: StartGateway, control: FakeAzureControl, fake_azure: FakeUpstream
) -> None:
    gateway, key = entra_gateway(start_gateway, control, fake_azure, new_key())
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert "AADSTS" not in caught.value.message  # the operator's problem: it is in the log
    assert "AADSTS7000215: Invalid client secret provided." in gateway.log()
    assert 'reason="credentials"' in gateway.metrics()
