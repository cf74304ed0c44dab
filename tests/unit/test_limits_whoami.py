"""GET /kubellm/v1/whoami: the caller, its models, its limits and usage; nobody else's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from kubellm_gateway.api import kubellm
from kubellm_gateway.auth import authenticate
from kubellm_gateway.errors import APIError
from kubellm_gateway.limits import Limiter, MemoryBackend
from kubellm_gateway.limits.redis import RedisBackend
from kubellm_gateway.providers.pool import ProviderPool
from kubellm_gateway.routing import Principal, Snapshot, build, key_digest
from kubellm_gateway.runtime import Runtime
from kubellm_gateway.settings import Settings
from kubellm_gateway.telemetry.metrics import Metrics
from tests.support.gateway import free_port, new_key
from tests.support.manifests import api_key, backend, model, policy, provider
from tests.unit.conftest import parse_all

KEY = new_key()
OTHER_KEY = new_key()
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC).timestamp()


def snapshot() -> Snapshot:
    built, _ = build(
        parse_all(
            provider("mock", "Mock"),
            model("chat", [backend("mock", "c")]),
            model("embed", [backend("mock", "e")], capabilities=["embeddings"]),
            model("secret", [backend("mock", "s")]),
            api_key("ci", KEY, user="ci-bot", groups=["ci", "builders"]),
            api_key("other", OTHER_KEY, user="other"),
            policy("ci", [("Group", "ci")], models=["chat"], limits={"requestsPerMinute": 10}),
            policy(
                "budget",
                [("User", "ci-bot"), ("User", "other")],
                models=["chat", "embed"],
                limits={"tokensPerDay": 1000, "costPerMonth": 2.5},
            ),
            policy("others", [("User", "other")], models=["secret"], limits={"tokensPerDay": 5}),
        ),
        ProviderPool(),
        1,
    )
    return built


def limiter() -> Limiter:
    return Limiter(MemoryBackend(), Metrics(), now=lambda: NOW)


async def test_whoami_shows_principal_models_limits_and_usage() -> None:
    s, lim = snapshot(), limiter()
    ci = s.keys[key_digest(KEY)].principal
    other = s.keys[key_digest(OTHER_KEY)].principal
    await lim.charge(await lim.admit(s, ci, "chat"), 120, 0.25)
    await lim.charge(await lim.admit(s, other, "chat"), 999, 2.0)  # someone else's usage
    document = await kubellm.whoami(s, ci, lim)
    assert document == {
        "object": "kubellm.whoami",
        "user": "ci-bot",
        "groups": ["builders", "ci"],
        "auth": "apikey",
        "api_key": "default/ci",
        "models": ["chat", "embed"],
        "limits": [
            {
                "policy": "default/ci",
                "models": ["chat"],
                "limit": "requestsPerMinute",
                "value": 10,
                "used": 1,
                "remaining": 9,
                "resets_at": "2026-11-26T12:00:06Z",
            },
            {
                "policy": "default/budget",
                "models": ["chat", "embed"],
                "limit": "tokensPerDay",
                "value": 1000,
                "used": 120,
                "remaining": 880,
                "resets_at": "2026-11-27T00:00:00Z",
            },
            {
                "policy": "default/budget",
                "models": ["chat", "embed"],
                "limit": "costPerMonth",
                "value": 2.5,
                "used": 0.25,
                "remaining": 2.25,
                "resets_at": "2026-12-01T00:00:00Z",
            },
        ],
    }
    text = orjson.dumps(document).decode()
    assert KEY not in text and KEY[:10] not in text
    assert "default/others" not in text  # a policy that does not name the caller


async def test_whoami_of_an_oidc_user_without_limits() -> None:
    s = snapshot()
    nobody = Principal("zed", frozenset({"builders"}), auth="oidc")
    document = await kubellm.whoami(s, nobody, limiter())
    assert document["auth"] == "oidc"
    assert document["api_key"] is None
    assert document["models"] == []
    assert document["limits"] == []


async def test_whoami_while_the_limiter_backend_is_unreachable() -> None:
    s = snapshot()
    ci = s.keys[key_digest(KEY)].principal
    port = free_port()  # nothing listens there
    unreachable = Limiter(RedisBackend(f"redis://127.0.0.1:{port}/0"), Metrics(), now=lambda: NOW)
    try:
        document = await kubellm.whoami(s, ci, unreachable)
    finally:
        await unreachable.aclose()
    assert [
        (e["limit"], e["used"], e["remaining"], e["resets_at"]) for e in document["limits"]
    ] == [
        ("requestsPerMinute", None, None, None),
        ("tokensPerDay", None, None, None),
        ("costPerMonth", None, None, None),
    ]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[str]:
    """The router in a FastAPI app under uvicorn on 127.0.0.1, as the gateway will mount it."""
    runtime = Runtime(Settings(manifests=tmp_path, metrics_port=0))
    runtime.snapshot = snapshot()
    app = FastAPI()
    app.include_router(kubellm.router(runtime, None, limiter()))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(1000):  # up to 10 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_whoami_over_http(served: str) -> None:
    async with httpx2.AsyncClient(base_url=served, timeout=10) as http:
        response = await http.get("/kubellm/v1/whoami", headers={"authorization": f"Bearer {KEY}"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["user"] == "ci-bot"
        azure_style = await http.get("/kubellm/v1/whoami", headers={"api-key": OTHER_KEY})
        assert azure_style.json()["user"] == "other"


async def test_whoami_refuses_unknown_callers() -> None:
    s = snapshot()
    for headers in ([], [(b"authorization", b"Bearer sk-kl-unknown")]):
        with pytest.raises(APIError) as caught:
            await authenticate({"type": "http", "headers": headers}, s, None)
        assert caught.value.status == 401
