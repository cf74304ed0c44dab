"""Limit rules, windows, usage arithmetic, headers, and the per-snapshot memos."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubellm_gateway.limits import Limit, Limiter, MemoryBackend, Rule, Usage
from kubellm_gateway.limits.headers import duration, header_pairs, refusal
from kubellm_gateway.limits.rules import (
    Counter,
    counters,
    has_room,
    policy_rules,
    retry_after,
    usage,
)
from kubellm_gateway.providers.pool import ProviderPool
from kubellm_gateway.resources import AccessPolicy
from kubellm_gateway.routing import GRANT_MEMO_SIZE, Principal, Snapshot, build
from kubellm_gateway.telemetry.metrics import Metrics
from tests.support.manifests import backend, model, policy, provider
from tests.unit.conftest import parse_all, with_meta

NOV_26_NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC).timestamp()


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def counter(rule: Rule, user: str, now: float) -> Counter:
    (made,) = counters((rule,), user, now)
    return made


def test_policy_rules_one_per_limit_set() -> None:
    doc = with_meta(
        policy(
            "p",
            [("Group", "g")],
            models=["*"],
            limits={"requestsPerMinute": 60, "tokensPerDay": 1000, "costPerMonth": 12.5},
        ),
        namespace="team-a",
    )
    (resource,) = parse_all(doc)
    assert isinstance(resource, AccessPolicy)
    assert policy_rules(resource) == (
        Rule("team-a/p", Limit.requests_per_minute, 60),
        Rule("team-a/p", Limit.tokens_per_day, 1000),
        Rule("team-a/p", Limit.cost_per_month, 12.5),
    )
    (unlimited,) = parse_all(policy("q", [("Group", "g")], models=["*"]))
    assert isinstance(unlimited, AccessPolicy)
    assert policy_rules(unlimited) == ()


@pytest.mark.parametrize(
    ("limit", "now", "window", "ends"),
    [
        (
            Limit.tokens_per_day,
            "2026-11-26T23:59:59+00:00",
            "2026-11-26",
            "2026-11-27T00:00:00+00:00",
        ),
        (
            Limit.cost_per_day,
            "2026-11-27T00:00:00+00:00",
            "2026-11-27",
            "2026-11-28T00:00:00+00:00",
        ),
        # The UTC date, whatever the local zone of the timestamp's writer.
        (
            Limit.cost_per_day,
            "2026-11-27T01:30:00+02:00",
            "2026-11-26",
            "2026-11-27T00:00:00+00:00",
        ),
        (Limit.cost_per_month, "2026-11-30T23:00:00+00:00", "2026-11", "2026-12-01T00:00:00+00:00"),
        (Limit.cost_per_month, "2026-12-31T23:59:59+00:00", "2026-12", "2027-01-01T00:00:00+00:00"),
        (Limit.cost_per_month, "2028-02-29T12:00:00+00:00", "2028-02", "2028-03-01T00:00:00+00:00"),
    ],
)
def test_calendar_windows_are_utc(limit: Limit, now: str, window: str, ends: str) -> None:
    c = counter(Rule("ns/p", limit, 10), "alice", at(now))
    assert c.key == f"{{alice}}:ns/p:{limit.value}:{window}"
    assert c.ends == at(ends)


def test_rolling_counters_have_no_window() -> None:
    c = counter(Rule("ns/p", Limit.requests_per_minute, 120), "alice", NOV_26_NOON)
    assert (c.key, c.ends, c.rate, c.need) == ("{alice}:ns/p:requestsPerMinute", 0.0, 2.0, 1.0)
    t = counter(Rule("ns/p", Limit.tokens_per_minute, 120), "alice", NOV_26_NOON)
    assert (t.key, t.ends, t.rate, t.need) == ("{alice}:ns/p:tokensPerMinute", 0.0, 2.0, 0.0)


def test_counters_are_made_once_a_day() -> None:
    rules = (Rule("ns/p", Limit.requests_per_minute, 1), Rule("ns/p", Limit.cost_per_day, 1))
    morning = counters(rules, "alice", at("2026-11-26T08:00:00+00:00"))
    assert counters(rules, "alice", at("2026-11-26T20:00:00+00:00")) is morning
    tomorrow = counters(rules, "alice", at("2026-11-27T00:00:00+00:00"))
    assert tomorrow[1].key.endswith(":2026-11-27")
    assert counters(rules, "bob", at("2026-11-26T08:00:00+00:00"))[0].key.startswith("{bob}")


def test_user_names_cannot_forge_each_others_keys() -> None:
    rule = Rule("ns/p", Limit.requests_per_minute, 1)
    tricky = ["a}:ns/x", "a", "a:b", "a%3Ab", "{a}", "ünï cødé"]
    keys = [counter(rule, user, NOV_26_NOON).key for user in tricky]
    assert len(set(keys)) == len(tricky)
    for key in keys:  # one hash tag, the user's, so a call stays in one Redis slot
        assert key.count("{") == 1 and key.count("}") == 1


def test_room_and_retry_for_requests_tokens_and_budgets() -> None:
    now = NOV_26_NOON
    rpm = counter(Rule("p", Limit.requests_per_minute, 6), "u", now)  # 0.1 per second
    assert has_room(rpm, 5) and not has_room(rpm, 5.5)
    refused = usage(rpm, 5.5, now)
    assert (refused.used, refused.resets_in) == (5.5, 55.0)
    assert refused.retry_in == pytest.approx(5.0)  # until a whole request fits
    tpm = counter(Rule("p", Limit.tokens_per_minute, 600), "u", now)  # 10 per second
    assert has_room(tpm, 599.9) and not has_room(tpm, 600)
    assert usage(tpm, 900, now).retry_in == pytest.approx(30.0)
    assert usage(tpm, 600, now).retry_in > 0  # exactly at the limit: not a moment's room
    day = counter(Rule("p", Limit.cost_per_day, 1.0), "u", now)
    assert usage(day, 0.5, now) == Usage(day.rule, 0.5, 43_200.0, 0.0)
    assert usage(day, 1.0, now).retry_in == 43_200.0
    assert usage(day, 1.0, now).remaining == 0.0
    assert usage(day, 3.0, now).remaining == 0.0


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    rule = Rule("p", Limit.requests_per_minute, 1)
    assert retry_after((Usage(rule, 1, 1, 0.001),)) == 1
    assert retry_after((Usage(rule, 1, 1, 2.01), Usage(rule, 1, 1, 0.5))) == 3


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.0201, "21ms"),
        (0.9999, "1s"),  # rounded up to whole milliseconds first
        (1, "1s"),
        (1.5, "1.5s"),
        (60, "1m0s"),
        (90.25, "1m30.25s"),
        (3723, "1h2m3s"),
        (86_400, "24h0m0s"),
        (-5, "0ms"),
    ],
)
def test_duration_spelling(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def u(limit: Limit, amount: float, used: float, resets_in: float = 1.0) -> Usage:
    return Usage(Rule("ns/p", limit, amount), used, resets_in, 0.0)


def test_headers_cover_only_the_limits_that_apply() -> None:
    assert header_pairs([]) == []
    assert header_pairs([u(Limit.cost_per_day, 5, 1)]) == []
    assert header_pairs([u(Limit.requests_per_minute, 60, 10.4, 10.4)]) == [
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-remaining-requests", "49"),
        ("x-ratelimit-reset-requests", "10.4s"),
    ]
    # Of several token limits, the one with the least room speaks.
    pairs = dict(
        header_pairs(
            [u(Limit.tokens_per_minute, 1000, 100), u(Limit.tokens_per_day, 5000, 4800, 3600)]
        )
    )
    assert pairs == {
        "x-ratelimit-limit-tokens": "5000",
        "x-ratelimit-remaining-tokens": "200",
        "x-ratelimit-reset-tokens": "1h0m0s",
    }


def test_refusal_names_only_the_limits_without_room() -> None:
    full = Usage(Rule("ns/a", Limit.requests_per_minute, 2), 2, 60, 30)
    fine = Usage(Rule("ns/b", Limit.tokens_per_minute, 100), 1, 1, 0)
    error = refusal((full, fine))
    assert (error.status, error.code, error.type) == (
        429,
        "rate_limit_exceeded",
        "rate_limit_error",
    )
    assert error.message == (
        "Rate limit reached: requestsPerMinute of AccessPolicy ns/a. Try again in 30s."
    )
    assert error.headers["retry-after"] == "30"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in error.headers
    budget = Usage(Rule("ns/c", Limit.cost_per_month, 5), 5, 7200, 7200)
    assert refusal((budget,)).headers["x-should-retry"] == "false"


# --- memos --------------------------------------------------------------------------------------


def snapshot_of(*policies: dict[str, object]) -> Snapshot:
    built, _ = build(
        parse_all(
            provider("mock", "Mock"),
            model("chat", [backend("mock", "c")]),
            model("other", [backend("mock", "o")]),
            *policies,
        ),
        ProviderPool(),
        1,
    )
    return built


ALICE = Principal("alice", frozenset({"g"}), auth="oidc")


def test_grants_of_principals_without_keys_are_memoized_and_bounded() -> None:
    s = snapshot_of(policy("p", [("Group", "g")], models=["chat"]))
    assert s.grant(ALICE) is s.grant(Principal("alice", frozenset({"g"}), auth="oidc"))
    assert s.allowed(ALICE) == {"chat"}
    for i in range(GRANT_MEMO_SIZE + 5):
        s.allowed(Principal(f"user-{i}", frozenset({"g"}), auth="oidc"))
    assert len(s._memo) <= GRANT_MEMO_SIZE
    assert s.allowed(ALICE) == {"chat"}  # recomputed after the memo was cleared


def test_rules_apply_per_model_and_are_memoized_per_snapshot() -> None:
    limiter = Limiter(MemoryBackend(), Metrics())
    s = snapshot_of(
        policy("chat-only", [("Group", "g")], models=["chat"], limits={"requestsPerMinute": 5}),
        policy("all", [("User", "alice")], models=["*"], limits={"tokensPerDay": 100}),
        policy("someone-else", [("User", "bob")], models=["*"], limits={"tokensPerDay": 1}),
        policy("no-limits", [("Group", "g")], models=["*"]),
    )
    chat = limiter.rules(s, ALICE, "chat")
    assert chat == (
        Rule("default/chat-only", Limit.requests_per_minute, 5),
        Rule("default/all", Limit.tokens_per_day, 100),
    )
    assert limiter.rules(s, ALICE, "chat") is chat
    assert limiter.rules(s, ALICE, "other") == (Rule("default/all", Limit.tokens_per_day, 100),)
    changed = snapshot_of(
        policy("chat-only", [("Group", "g")], models=["chat"], limits={"requestsPerMinute": 9})
    )
    assert limiter.rules(changed, ALICE, "chat") == (
        Rule("default/chat-only", Limit.requests_per_minute, 9),
    )
    assert [rules for _, rules in limiter.limiting(s, ALICE)] == [
        (Rule("default/chat-only", Limit.requests_per_minute, 5),),
        (Rule("default/all", Limit.tokens_per_day, 100),),
    ]


async def test_memory_backend_forgets_spent_counts() -> None:
    now = [NOV_26_NOON]
    limiter = Limiter(MemoryBackend(), Metrics(), now=lambda: now[0])
    s = snapshot_of(
        policy("p", [("Group", "g")], models=["chat"], limits={"requestsPerMinute": 60})
    )
    for i in range(3000):
        await limiter.admit(s, Principal(f"user-{i}", frozenset({"g"})), "chat")
    backend = limiter.backend
    assert isinstance(backend, MemoryBackend)
    assert 1024 <= len(backend._counts) <= 3000
    now[0] += 2  # every count has drained (1 request at 60 per minute takes 1 s)
    await limiter.admit(s, ALICE, "chat")
    for i in range(2100):  # enough new writes to reach the next sweep
        await limiter.admit(s, Principal(f"late-{i}", frozenset({"g"})), "chat")
    assert len(backend._counts) <= 2101


def test_budget_gauge_keeps_the_largest_share_of_the_current_window_only() -> None:
    metrics = Metrics()
    gauge = metrics.budget_usage
    later, earlier = time.time() + 3600, time.time() - 1
    gauge.observe("ns/p", "costPerDay", 0.4, later)
    gauge.observe("ns/p", "costPerDay", 0.2, later)  # another user, less: the max stays
    gauge.observe("ns/p", "tokensPerDay", 0.9, earlier)  # its window has ended
    gauge.observe("ns/q", "costPerMonth", 0.7, earlier)
    gauge.observe("ns/q", "costPerMonth", 0.1, later)  # a new window starts from its own value
    scraped = {
        (s.labels["policy"], s.labels["limit"]): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        if family.name == "kubellm_limit_usage_ratio"
        for s in family.samples
    }
    assert scraped == {("ns/p", "costPerDay"): 0.4, ("ns/q", "costPerMonth"): 0.1}
