"""Limits against both backends: in-process, and two limiters sharing a real redis-server.

Each behavioural test runs twice: "memory" (one limiter, one replica) and "redis"
(two limiters, as two gateway replicas would, on one redis-server of the test's
own). The clock is injected: windows roll over without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubellm_gateway.errors import APIError
from kubellm_gateway.limits import (
    Admission,
    Limiter,
    MemoryBackend,
    rate_limit_headers,
)
from kubellm_gateway.limits.redis import RedisBackend
from kubellm_gateway.providers.pool import ProviderPool
from kubellm_gateway.routing import Principal, Snapshot, build
from kubellm_gateway.telemetry.metrics import Metrics
from tests.support.manifests import backend, model, policy, provider
from tests.support.redis import RedisServer
from tests.unit.conftest import parse_all

ALICE = Principal("alice", frozenset({"team"}), auth="oidc")
BOB = Principal("bob", frozenset({"team"}), auth="oidc")


class Clock:
    def __init__(self, at: str = "2026-11-26T12:00:00+00:00") -> None:
        self.t = datetime.fromisoformat(at).timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Replicas:
    """Two limiters as two gateway replicas see them; one and the same for "memory"."""

    a: Limiter
    b: Limiter
    redis: RedisServer | None

    @property
    def both(self) -> tuple[Limiter, Limiter]:
        return self.a, self.b


def snapshot(*policies: dict[str, Any]) -> Snapshot:
    built, _ = build(
        parse_all(
            provider("mock", "Mock"),
            model("chat", [backend("mock", "c")], pricing={"inputPerMillion": 1_000_000}),
            model("other", [backend("mock", "o")]),
            *policies,
        ),
        ProviderPool(),
        1,
    )
    return built


def team(
    name: str = "team", models: tuple[str, ...] = ("chat",), **limits: float
) -> dict[str, Any]:
    return policy(name, [("Group", "team")], models=list(models), limits=limits)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def replicas(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Replicas]:
    if request.param == "memory":
        one = Limiter(MemoryBackend(), Metrics(), now=clock)
        yield Replicas(one, one, None)
        await one.aclose()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    a = Limiter(RedisBackend(server.url), Metrics(), now=clock)
    b = Limiter(RedisBackend(server.url), Metrics(), now=clock)
    yield Replicas(a, b, server)
    await a.aclose()
    await b.aclose()


async def admitted(limiter: Limiter, snap: Snapshot, who: Principal = ALICE) -> bool:
    try:
        await limiter.admit(snap, who, "chat")
    except APIError as exc:
        assert exc.status == 429, exc.message
        return False
    return True


async def refusal(limiter: Limiter, snap: Snapshot, who: Principal = ALICE) -> APIError:
    with pytest.raises(APIError) as caught:
        await limiter.admit(snap, who, "chat")
    assert caught.value.status == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "rate_limit_error"
    return caught.value


def refused_total(limiter: Limiter, policy_name: str, limit: str) -> float:
    value = limiter.metrics.rate_limited.labels(f"default/{policy_name}", limit)._value.get()
    return float(value)


# --- requests per minute ----------------------------------------------------------------------


async def test_exactly_n_of_200_concurrent_requests_across_two_replicas(replicas: Replicas) -> None:
    snap = snapshot(team(requestsPerMinute=37))
    limiters = [replicas.a if i % 2 else replicas.b for i in range(200)]
    results = await asyncio.gather(*(admitted(limiter, snap) for limiter in limiters))
    assert sum(results) == 37
    refused = sum(refused_total(x, "team", "requestsPerMinute") for x in set(replicas.both))
    assert refused == 163


async def test_minute_limit_drains_continuously(replicas: Replicas, clock: Clock) -> None:
    snap = snapshot(team(requestsPerMinute=6))  # one request back every 10 s
    for limiter in (replicas.a, replicas.b, replicas.a, replicas.b, replicas.a, replicas.b):
        assert await admitted(limiter, snap)
    error = await refusal(replicas.a, snap)
    assert error.headers["retry-after"] == "10"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["x-ratelimit-limit-requests"] == "6"
    assert "x-should-retry" not in error.headers  # a minute limit is worth retrying
    assert error.message == (
        "Rate limit reached: requestsPerMinute of AccessPolicy default/team. Try again in 10s."
    )
    clock.advance(9)
    assert not await admitted(replicas.b, snap)
    clock.advance(1)
    assert await admitted(replicas.b, snap)
    assert not await admitted(replicas.a, snap)
    clock.advance(60)
    assert sum([await admitted(replicas.a, snap) for _ in range(8)]) == 6


async def test_users_and_policies_count_separately(replicas: Replicas) -> None:
    snap = snapshot(
        team(requestsPerMinute=5),
        team("strict", requestsPerMinute=3),  # both name the team and grant chat: both apply
        team("elsewhere", models=("other",), requestsPerMinute=1),  # not for chat
    )
    assert [await admitted(replicas.a, snap) for _ in range(4)] == [True, True, True, False]
    assert [await admitted(replicas.b, snap, BOB) for _ in range(4)] == [True, True, True, False]
    error = await refusal(replicas.a, snap)
    assert "requestsPerMinute of AccessPolicy default/strict" in error.message
    assert "default/team" not in error.message  # it still had room
    assert await replicas.b.admit(snap, ALICE, "other")  # its own policy, its own count
    await refusal_for(replicas.a, snap, "other")


async def refusal_for(limiter: Limiter, snap: Snapshot, model_id: str) -> None:
    with pytest.raises(APIError):
        await limiter.admit(snap, ALICE, model_id)


async def test_success_headers_show_the_tightest_limit(replicas: Replicas) -> None:
    snap = snapshot(
        team(requestsPerMinute=10, tokensPerMinute=6000), team("b", requestsPerMinute=4)
    )
    admission = await replicas.a.admit(snap, ALICE, "chat")
    headers = dict((k.decode(), v.decode()) for k, v in rate_limit_headers(admission))
    assert headers == {
        "x-ratelimit-limit-requests": "4",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "15s",  # 1 request drains in 60 / 4 s
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "6000",
        "x-ratelimit-reset-tokens": "0ms",
    }


async def test_unlimited_callers_cost_nothing(replicas: Replicas) -> None:
    snap = snapshot(policy("open", [("Group", "team")], models=["chat"]))
    if replicas.redis is not None:
        replicas.redis.kill()  # not even asked
    admission = await replicas.a.admit(snap, ALICE, "chat")
    assert admission == Admission("alice", (), ())
    assert rate_limit_headers(admission) == []
    await replicas.a.charge(admission, 10_000, 5.0)
    assert replicas.a.metrics.limiter_errors.labels("admit")._value.get() == 0


# --- tokens and cost, charged at the end --------------------------------------------------------


async def test_token_limit_lets_the_crossing_request_finish_and_refuses_the_next(
    replicas: Replicas, clock: Clock
) -> None:
    snap = snapshot(team(tokensPerMinute=1000))
    first = await replicas.a.admit(snap, ALICE, "chat")
    second = await replicas.b.admit(snap, ALICE, "chat")  # admitted before the first is charged
    await replicas.a.charge(first, 900, 0.0)
    await replicas.b.charge(second, 600, 0.0)  # crosses the limit: it has finished anyway
    error = await refusal(replicas.a, snap)
    # 500 tokens over, draining at 1000 / 60 per second.
    assert error.headers["retry-after"] == "30"
    assert error.headers["x-ratelimit-remaining-tokens"] == "0"
    assert error.headers["x-ratelimit-limit-tokens"] == "1000"
    clock.advance(29)
    assert not await admitted(replicas.b, snap)
    clock.advance(1.5)
    assert await admitted(replicas.b, snap)


async def test_tokens_per_day_roll_over_at_utc_midnight(replicas: Replicas, clock: Clock) -> None:
    clock.t = datetime(2026, 11, 26, 23, 59, 0, tzinfo=UTC).timestamp()
    snap = snapshot(team(tokensPerDay=100))
    await replicas.a.charge(await replicas.a.admit(snap, ALICE, "chat"), 100, 0.0)
    error = await refusal(replicas.b, snap)
    assert error.headers["retry-after"] == "60"
    assert error.headers["x-should-retry"] == "false"  # SDK retries cannot help until midnight
    assert error.headers["x-ratelimit-reset-tokens"] == "1m0s"
    assert not await admitted(replicas.a, snap, ALICE)
    assert await admitted(replicas.a, snap, BOB)  # per user
    clock.advance(60)
    assert await admitted(replicas.b, snap)
    assert refused_total(replicas.b, "team", "tokensPerDay") >= 1


async def test_cost_per_day_and_month_from_pricing(replicas: Replicas, clock: Clock) -> None:
    clock.t = datetime(2026, 12, 31, 12, 0, 0, tzinfo=UTC).timestamp()
    snap = snapshot(team(costPerDay=1.0, costPerMonth=1.5))
    ok = await replicas.a.admit(snap, ALICE, "chat")
    await replicas.a.charge(ok, 600_000, 0.6)
    await replicas.b.charge(await replicas.b.admit(snap, ALICE, "chat"), 600_000, 0.6)
    error = await refusal(replicas.a, snap)
    assert "costPerDay" in error.message and "costPerMonth" not in error.message
    assert error.headers["retry-after"] == str(12 * 3600)
    clock.advance(12 * 3600)  # 2027-01-01: a new day and a new month
    for limiter in replicas.both:
        await limiter.charge(await limiter.admit(snap, ALICE, "chat"), 0, 0.8)
    error = await refusal(replicas.b, snap)  # 1.6 today: both budgets spent
    assert "costPerDay" in error.message and "costPerMonth" in error.message
    clock.advance(86_400)  # 2027-01-02: the day has room, the month has not
    error = await refusal(replicas.a, snap)
    assert "costPerMonth" in error.message and "costPerDay" not in error.message
    assert error.headers["retry-after"] == str(30 * 86_400)


async def test_usage_query_and_budget_gauge(replicas: Replicas, clock: Clock) -> None:
    clock.t = time.time()  # the gauge expires values by the wall clock
    snap = snapshot(team(requestsPerMinute=10, tokensPerDay=1000, costPerMonth=2.0))
    rules = replicas.a.rules(snap, ALICE, "chat")
    admission = await replicas.a.admit(snap, ALICE, "chat")
    await replicas.b.charge(admission, 250, 0.5)
    await replicas.b.charge(await replicas.b.admit(snap, BOB, "chat"), 100, 0.1)
    usages = await replicas.b.usage("alice", rules)
    assert usages is not None
    by_limit = {u.rule.limit.value: u for u in usages}
    assert by_limit["requestsPerMinute"].used == pytest.approx(1)
    assert by_limit["tokensPerDay"].used == 250
    assert by_limit["tokensPerDay"].remaining == 750
    assert by_limit["costPerMonth"].used == pytest.approx(0.5)
    assert 0 < by_limit["tokensPerDay"].resets_in <= 86_400
    gauge = {
        (s.labels["policy"], s.labels["limit"]): s.value
        for family in text_string_to_metric_families(
            generate_latest(replicas.b.metrics.registry).decode()
        )
        if family.name == "kubellm_limit_usage_ratio"
        for s in family.samples
    }
    assert gauge == {("default/team", "tokensPerDay"): 0.25, ("default/team", "costPerMonth"): 0.25}


# --- Redis going away -------------------------------------------------------------------------


async def wait_admitted(limiter: Limiter, snap: Snapshot) -> Admission:
    deadline = time.monotonic() + 10
    while True:
        admission = await limiter.admit(snap, ALICE, "chat")
        if admission.usages or time.monotonic() > deadline:
            return admission
        await asyncio.sleep(0.1)


async def test_redis_down_allow_mode_serves_then_recovers(
    redis_server: RedisServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = Limiter(RedisBackend(redis_server.url), Metrics(), now=clock)
    snap = snapshot(team(requestsPerMinute=2))
    try:
        assert (await limiter.admit(snap, ALICE, "chat")).usages
        redis_server.kill()
        with caplog.at_level(logging.WARNING, "kubellm_gateway.limits"):
            for _ in range(5):  # more than the limit: served, unlimited
                admission = await limiter.admit(snap, ALICE, "chat")
                assert admission.usages == ()
                assert rate_limit_headers(admission) == []
                await limiter.charge(admission, 100, 0.0)
        outage = [r.message for r in caplog.records if "unreachable" in r.message]
        assert len(outage) == 1, outage  # once a minute, however many requests fail
        assert limiter.metrics.limiter_errors.labels("admit")._value.get() >= 1
        redis_server.start()
        assert (await wait_admitted(limiter, snap)).usages  # reconnected by itself
        assert any("reachable again" in r.message for r in caplog.records)
    finally:
        await limiter.aclose()


async def test_redis_down_deny_mode_refuses_with_503_then_recovers(
    redis_server: RedisServer, clock: Clock
) -> None:
    limiter = Limiter(RedisBackend(redis_server.url), Metrics(), on_error="deny", now=clock)
    snap = snapshot(team(requestsPerMinute=100))
    try:
        await limiter.admit(snap, ALICE, "chat")
        redis_server.kill()
        for _ in range(3):
            with pytest.raises(APIError) as caught:
                await limiter.admit(snap, ALICE, "chat")
            assert (caught.value.status, caught.value.code) == (503, "rate_limiter_unavailable")
            assert caught.value.headers["retry-after"] == "1"
        assert await limiter.usage("alice", limiter.rules(snap, ALICE, "chat")) is None
        redis_server.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                admission = await limiter.admit(snap, ALICE, "chat")
                break
            except APIError:
                assert time.monotonic() < deadline, "the limiter did not reconnect"
                await asyncio.sleep(0.1)
        assert admission.usages
    finally:
        await limiter.aclose()


async def test_unresponsive_redis_is_bounded_by_the_timeout(clock: Clock) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(100)
        port = silent.getsockname()[1]
        limiter = Limiter(
            RedisBackend(f"redis://127.0.0.1:{port}/0", timeout=0.2), Metrics(), now=clock
        )
        snap = snapshot(team(requestsPerMinute=5))
        try:
            started = time.monotonic()
            assert (await limiter.admit(snap, ALICE, "chat")).usages == ()
            assert time.monotonic() - started < 2
            started = time.monotonic()
            assert (await limiter.admit(snap, ALICE, "chat")).usages == ()  # no retry yet: instant
            assert time.monotonic() - started < 0.15  # below the 0.2 s timeout, with room for noise
        finally:
            await limiter.aclose()
