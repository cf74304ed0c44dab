"""Identity and limits end to end: real gateway processes, real OIDC providers, real Redis.

The modules are tested directly in test_oidc.py and test_limits.py; here the same
behaviour is checked where users meet it: the official openai SDK against
`kubellm-gateway` subprocesses started with the `--oidc-*`, `--redis-url` and
`--limits-on-redis-error` flags.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartGateway
from tests.support.gateway import SECRETS, GatewayProcess, new_key
from tests.support.manifests import api_key, backend, dump, model, policy, provider
from tests.support.oidc import CLIENT_ID, KeycloakRealm, ProviderMock, forge
from tests.support.redis import RedisServer

GROUPS_CLAIMS = f"groups,realm_access.roles,resource_access.{CLIENT_ID}.roles"
RESET_REQUESTS = "x-ratelimit-reset-requests"
TEN_WORDS = "one two three four five six seven eight nine ten"


def secret(token: str) -> str:
    """A bearer token is a credential too: the gateway logs are checked for it at stop."""
    SECRETS.add(token)
    return token


def client(gateway: GatewayProcess, credential: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=credential, max_retries=0)


def chat(gateway: GatewayProcess, credential: str, model_id: str) -> str:
    reply = client(gateway, credential).chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content or ""


def whoami(gateway: GatewayProcess, credential: str) -> httpx2.Response:
    return gateway.http.get("/kubellm/v1/whoami", headers={"authorization": f"Bearer {credential}"})


def counter(gateway: GatewayProcess, name: str, **labels: str) -> float:
    """A counter's value in the gateway's /metrics (0 when the series does not exist yet)."""
    for family in text_string_to_metric_families(gateway.metrics()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


# --- OIDC through the gateway ------------------------------------------------------------------

KEY = new_key()


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeycloakRealm]:
    server = KeycloakRealm(tmp_path_factory.mktemp("realm"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def provider_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderMock]:
    server = ProviderMock(tmp_path_factory.mktemp("provider-mock"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oidc_gateway(
    start_module_gateway: StartGateway, realm: KeycloakRealm, provider_mock: ProviderMock
) -> GatewayProcess:
    names = ("nlp", "research", "ds", "gpt", "short", "bob-only", "keys", "view")
    return start_module_gateway(
        dump(
            provider("mock", "Mock"),
            *(model(name, [backend("mock", name)]) for name in names),
            policy("nlp", [("Group", "/acme/research/nlp")], models=["nlp"]),
            policy(
                "research",
                [("Group", "/acme/research")],
                models=["research"],
                limits={"requestsPerMinute": 50, "tokensPerDay": 100000},
            ),
            policy("realm-role", [("Group", "data-science")], models=["ds"]),
            policy("client-role", [("Group", "gpt-users")], models=["gpt"]),
            # Full group paths are on: a group's short name is not the group.
            policy("short", [("Group", "nlp")], models=["short"]),
            # Another client's role is not in the configured claims.
            policy("other-client", [("Group", "view-profile")], models=["view"]),
            policy("bob", [("User", "bob")], models=["bob-only"]),
            api_key("ci", KEY, user="ci-bot", groups=["ci"]),
            policy("keys", [("Group", "ci")], models=["keys"], limits={"requestsPerMinute": 7}),
        ),
        extra_args=(
            *("--oidc-issuer", f"{realm.url},{provider_mock.url}"),
            *("--oidc-audience", CLIENT_ID),
            *("--oidc-groups-claim", GROUPS_CLAIMS),
        ),
    )


def test_keycloak_token_is_routed_by_groups_and_roles(
    oidc_gateway: GatewayProcess, realm: KeycloakRealm
) -> None:
    token = secret(realm.token())
    listed = {m.id for m in client(oidc_gateway, token).models.list()}
    assert listed == {"nlp", "research", "ds", "gpt"}
    for model_id in sorted(listed):
        assert chat(oidc_gateway, token, model_id) == f"Mock reply from {model_id}: hi"
    for model_id in ("short", "view", "bob-only", "keys"):
        with pytest.raises(openai.NotFoundError) as caught:
            chat(oidc_gateway, token, model_id)
        assert caught.value.code == "model_not_found"


def test_user_subject_and_another_issuer(
    oidc_gateway: GatewayProcess, realm: KeycloakRealm, provider_mock: ProviderMock
) -> None:
    bob = secret(
        realm.token(preferred_username="bob", groups=None, realm_access=None, resource_access=None)
    )
    assert {m.id for m in client(oidc_gateway, bob).models.list()} == {"bob-only"}
    assert chat(oidc_gateway, bob, "bob-only") == "Mock reply from bob-only: hi"
    # The second configured issuer, a real provider's authorization-code flow.
    mocked = secret(
        provider_mock.token("u-1", {"preferred_username": "bob", "groups": ["/acme/research"]})
    )
    assert {m.id for m in client(oidc_gateway, mocked).models.list()} == {"bob-only", "research"}
    assert chat(oidc_gateway, mocked, "research") == "Mock reply from research: hi"


def forged_tokens(realm: KeycloakRealm) -> dict[str, str]:
    now = int(time.time())
    unsigned, _ = forge({"alg": "none", "typ": "JWT"}, realm.claims())
    header = {"alg": "HS256", "typ": "JWT", "kid": realm.key.kid}
    _, signing_input = forge(header, realm.claims())
    mac = hmac.new(realm.key.public_pem(), signing_input, hashlib.sha256).digest()
    hs256, _ = forge(header, realm.claims(), mac)
    return {
        "alg none": unsigned,
        "HS256 with the public key": hs256,
        "wrong aud": realm.token(aud="another-app"),
        "expired": realm.token(exp=now - 120, iat=now - 600),
        "tampered": realm.token().replace(".", ".x", 1),
    }


def test_forged_tokens_get_401_through_the_sdk(
    oidc_gateway: GatewayProcess, realm: KeycloakRealm
) -> None:
    for attack, token in forged_tokens(realm).items():
        with pytest.raises(openai.AuthenticationError) as caught:
            chat(oidc_gateway, secret(token), "nlp")
        assert caught.value.status_code == 401, attack
        assert caught.value.code == "invalid_api_key", attack
        assert "Invalid access token: " in caught.value.message, attack
        assert caught.value.response.headers["www-authenticate"].startswith("Bearer "), attack
        assert whoami(oidc_gateway, token).status_code == 401, attack


def test_api_key_still_works_beside_oidc(oidc_gateway: GatewayProcess) -> None:
    assert chat(oidc_gateway, KEY, "keys") == "Mock reply from keys: hi"
    with pytest.raises(openai.NotFoundError):
        chat(oidc_gateway, KEY, "nlp")
    with pytest.raises(openai.AuthenticationError):
        chat(oidc_gateway, new_key(), "keys")  # shaped like a key, but not one


def test_whoami_shows_the_principal_models_and_limits(
    oidc_gateway: GatewayProcess, realm: KeycloakRealm
) -> None:
    token = secret(realm.token(preferred_username="dana"))
    chat(oidc_gateway, token, "research")
    response = whoami(oidc_gateway, token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert token not in response.text
    assert body["user"] == "dana"
    assert body["auth"] == "oidc"
    assert body["api_key"] is None
    assert body["groups"] == sorted(
        ["/acme/research", "/acme/research/nlp", "offline_access", "data-science", "gpt-users"]
    )
    assert sorted(body["models"]) == ["ds", "gpt", "nlp", "research"]
    limits = {entry["limit"]: entry for entry in body["limits"]}
    assert set(limits) == {"requestsPerMinute", "tokensPerDay"}
    rpm = limits["requestsPerMinute"]
    assert rpm["policy"] == "default/research" and rpm["models"] == ["research"]
    assert (rpm["value"], rpm["used"], rpm["remaining"]) == (50, 1, 49)
    tokens = limits["tokensPerDay"]
    assert tokens["used"] == 1 + 5  # "hi", then "Mock reply from research: hi"
    assert tokens["resets_at"].endswith("T00:00:00Z")  # the next UTC midnight

    chat(oidc_gateway, KEY, "keys")
    keyed = whoami(oidc_gateway, KEY)
    assert keyed.status_code == 200, keyed.text
    assert KEY not in keyed.text
    body = keyed.json()
    assert (body["user"], body["groups"], body["auth"]) == ("ci-bot", ["ci"], "apikey")
    assert body["api_key"] == "default/ci"
    assert body["models"] == ["keys"]
    [limit] = body["limits"]
    assert (limit["limit"], limit["value"]) == ("requestsPerMinute", 7)
    assert limit["used"] >= 1 and limit["resets_at"].endswith("Z")
    assert oidc_gateway.http.get("/kubellm/v1/whoami").status_code == 401


# --- limits across two gateways on one redis-server --------------------------------------------

RPM = 5  # one request's room comes back after 12 s: 200 requests take far less
TPM = 30  # a ten-word prompt streams 24 tokens: two streams exceed it for ~30 s
ALLOW_KEYS = {name: new_key() for name in ("rpm", "tokens", "outage")}
DENY_KEY = new_key()


def limits_manifests() -> str:
    return dump(
        provider("mock", "Mock"),
        model("chat", [backend("mock", "chat")]),
        *api_key("rpm", ALLOW_KEYS["rpm"], groups=["rpm"]),
        *api_key("tokens", ALLOW_KEYS["tokens"], groups=["tokens"]),
        # Two keys of one user: they share the user's count.
        *api_key("outage", ALLOW_KEYS["outage"], user="olga", groups=["outage"]),
        *api_key("deny", DENY_KEY, user="olga", groups=["outage"]),
        policy("rpm", [("Group", "rpm")], models=["chat"], limits={"requestsPerMinute": RPM}),
        policy("tokens", [("Group", "tokens")], models=["chat"], limits={"tokensPerMinute": TPM}),
        policy("outage", [("Group", "outage")], models=["chat"], limits={"requestsPerMinute": 2}),
    )


@pytest.fixture
def replicas(
    start_gateway: StartGateway, redis_server: RedisServer
) -> tuple[GatewayProcess, GatewayProcess]:
    args = ("--redis-url", redis_server.url)
    return start_gateway(limits_manifests(), extra_args=args), start_gateway(
        limits_manifests(), extra_args=args
    )


async def _storm(
    gateways: tuple[GatewayProcess, GatewayProcess], key: str, total: int
) -> tuple[list[dict[str, str]], list[openai.RateLimitError], float]:
    """`total` concurrent chats alternating over both gateways: (admitted headers, refusals)."""
    clients = [
        openai.AsyncOpenAI(base_url=g.base_url, api_key=key, max_retries=0, timeout=30)
        for g in gateways
    ]
    gate = asyncio.Semaphore(40)

    async def one(i: int) -> dict[str, str] | openai.RateLimitError:
        async with gate:
            try:
                raw = await clients[i % 2].chat.completions.with_raw_response.create(
                    model="chat", messages=[{"role": "user", "content": "hi"}]
                )
            except openai.RateLimitError as exc:
                return exc
            return dict(raw.headers)

    started = time.monotonic()
    try:
        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(total))), 50)
    finally:
        for c in clients:
            await c.close()
    elapsed = time.monotonic() - started
    admitted = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    return admitted, refused, elapsed


def test_exactly_n_of_200_concurrent_requests_across_two_gateways(
    replicas: tuple[GatewayProcess, GatewayProcess],
) -> None:
    admitted, refused, elapsed = asyncio.run(_storm(replicas, ALLOW_KEYS["rpm"], 200))
    # The bucket drains RPM/60 a second: exactness needs the storm to end before one drains.
    assert elapsed < 60 / RPM, f"the storm took {elapsed:.1f}s: too slow to count exactly"
    assert (len(admitted), len(refused)) == (RPM, 200 - RPM)
    remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for h in admitted)
    assert remaining == list(range(RPM))
    for headers in admitted:
        assert headers["x-ratelimit-limit-requests"] == str(RPM)
        assert headers[RESET_REQUESTS].endswith("s")
    for error in refused:
        assert error.status_code == 429 and error.code == "rate_limit_exceeded"
        refusal = error.response.headers
        assert 1 <= int(refusal["retry-after"]) <= 60 / RPM
        assert refusal["x-ratelimit-limit-requests"] == str(RPM)
        assert refusal["x-ratelimit-remaining-requests"] == "0"
        assert RESET_REQUESTS in refusal
        assert "requestsPerMinute of AccessPolicy default/rpm" in error.message
    # Every refusal is counted once, by the gateway that made it.
    labels = {"policy": "default/rpm", "limit": "requestsPerMinute"}
    counted = sum(counter(g, "kubellm_rate_limited_total", **labels) for g in replicas)
    assert counted == 200 - RPM


def stream_tokens(gateway: GatewayProcess, key: str) -> tuple[str, dict[str, str]]:
    with client(gateway, key).chat.completions.with_streaming_response.create(
        model="chat", messages=[{"role": "user", "content": TEN_WORDS}], stream=True
    ) as response:
        headers = dict(response.headers)
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
        )
    return text, headers


def test_token_limit_charges_streams_across_gateways(
    replicas: tuple[GatewayProcess, GatewayProcess],
) -> None:
    a, b = replicas
    key = ALLOW_KEYS["tokens"]
    text, headers = stream_tokens(a, key)
    assert text == f"Mock reply from chat: {TEN_WORDS}"
    assert headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert headers["x-ratelimit-remaining-tokens"] == str(TPM)  # charged at the end
    _, headers = stream_tokens(b, key)  # 24 of 30 used (less what drained): admitted
    assert int(headers["x-ratelimit-remaining-tokens"]) <= TPM - 24 + 2
    for gateway in (a, b):  # 48 used: the crossing stream finished, the next is refused
        with pytest.raises(openai.RateLimitError) as caught:
            chat(gateway, key, "chat")
        assert "tokensPerMinute of AccessPolicy default/tokens" in caught.value.message
        assert caught.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
        assert int(caught.value.response.headers["retry-after"]) >= 1
    labels = {"policy": "default/tokens", "limit": "tokensPerMinute"}
    assert sum(counter(g, "kubellm_rate_limited_total", **labels) for g in replicas) == 2


def _until(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_redis_outage_follows_the_error_mode_and_recovers(
    replicas: tuple[GatewayProcess, GatewayProcess],
    start_gateway: StartGateway,
    redis_server: RedisServer,
) -> None:
    a, b = replicas
    denying = start_gateway(
        limits_manifests(),
        extra_args=("--redis-url", redis_server.url, "--limits-on-redis-error", "deny"),
    )
    key = ALLOW_KEYS["outage"]
    for gateway in (a, b):
        chat(gateway, key, "chat")
    with pytest.raises(openai.RateLimitError):  # the "outage" user's 2 per minute are spent
        chat(denying, DENY_KEY, "chat")

    redis_server.kill()
    for _ in range(3):  # allow: served, without limits
        for gateway in (a, b):
            assert chat(gateway, key, "chat") == "Mock reply from chat: hi"
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as caught:
            chat(denying, DENY_KEY, "chat")
        assert caught.value.status_code == 503
        assert caught.value.code == "rate_limiter_unavailable"
        assert caught.value.response.headers["retry-after"] == "1"
    assert counter(denying, "kubellm_limiter_errors_total", operation="admit") >= 1
    assert sum(counter(g, "kubellm_limiter_errors_total", operation="admit") for g in (a, b)) >= 1

    redis_server.start()  # same port, empty: the counts start again

    def denying_serves() -> bool:
        try:
            chat(denying, DENY_KEY, "chat")
        except openai.InternalServerError:
            return False
        return True

    _until(denying_serves)  # the limiter pauses 1 s after a failure, then reconnects
    _until(lambda: whoami(a, key).json()["limits"][0]["used"] is not None)
    chat(a, key, "chat")  # the second of the minute's 2
    for gateway in (a, b, denying):
        with pytest.raises(openai.RateLimitError):
            chat(gateway, key if gateway is not denying else DENY_KEY, "chat")


def test_a_stream_cut_before_its_usage_is_charged_an_estimate(
    start_gateway: StartGateway,
) -> None:
    """Leaving a stream before its usage chunk must not be a way around token limits."""
    key = new_key()
    gateway = start_gateway(
        dump(
            provider("slow", "Mock", mock={"latency": "0ms", "tokensPerSecond": 20}),
            model("chat", [backend("slow", "chat")]),
            *api_key("cutter", key, groups=["cut"]),
            # A calendar window: nothing drains back while the test runs.
            policy("cut", [("Group", "cut")], models=["chat"], limits={"tokensPerDay": 100_000}),
        ),
        extra_args=("--log-format", "json"),
    )
    body = orjson.dumps(
        {"model": "chat", "stream": True, "messages": [{"role": "user", "content": TEN_WORDS}]}
    )
    auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    with gateway.http.stream("POST", "/v1/chat/completions", headers=auth, content=body) as cut:
        request_id = cut.headers["x-request-id"]
        events = [line for line in itertools.islice(cut.iter_lines(), 6) if line]
    assert len(events) == 3  # three events read, then the client goes away mid-stream

    def access_line() -> dict[str, Any] | None:
        for line in gateway.log().splitlines():
            if line.startswith("{") and request_id in line and '"kubellm.access"' in line:
                found: dict[str, Any] = orjson.loads(line)
                return found
        return None

    _until(lambda: access_line() is not None)
    logged = access_line()
    assert logged is not None
    assert logged["disconnected"] and logged["tokens_estimated"]
    assert logged["input_tokens"] == len(body) // 4
    assert logged["output_tokens"] >= 3  # at least the events relayed before the cut
    charged = logged["input_tokens"] + logged["output_tokens"]
    after = gateway.http.post(
        "/v1/chat/completions",
        headers=auth,
        content=body.replace(b'"stream":true', b'"stream":false'),
    )
    assert after.status_code == 200
    # Admitted against what the cut stream was charged (this one is charged after).
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == 100_000 - charged
