"""Which backend is tried when: tiers, weighted order, retry rounds, backoff, cost."""

import random
from collections import Counter

import pytest

from kubellm_gateway.proxy import backoff, cost, plan, weighted_order
from kubellm_gateway.resources import Pricing, RetrySpec
from kubellm_gateway.routing import ModelEntry
from tests.unit.conftest import model_entry, route


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(1234)


def steps(entry: ModelEntry) -> list[str]:
    return [f"{r.provider.name}{k}" for r, k in plan(entry)]


def test_tiers_in_priority_order_without_retries() -> None:
    entry = model_entry((route("a", attempts=0),), (route("b", attempts=0),))
    assert steps(entry) == ["a0", "b0"]


def test_single_backend_retries_then_falls_back() -> None:
    entry = model_entry((route("a", attempts=2),), (route("b", attempts=1),))
    assert steps(entry) == ["a0", "a1", "a2", "b0", "b1"]


def test_siblings_are_tried_before_a_retry() -> None:
    entry = model_entry((route("a", attempts=1), route("b", attempts=1)))
    seen = {tuple(steps(entry)) for _ in range(50)}
    assert seen == {("a0", "b0", "a1", "b1"), ("b0", "a0", "b1", "a1")}


def test_retry_rounds_follow_each_backends_attempts() -> None:
    entry = model_entry((route("a", attempts=2), route("b", attempts=0), route("c", attempts=1)))
    for _ in range(20):
        order = steps(entry)
        first = [s[0] for s in order[:3]]
        assert sorted(first) == ["a", "b", "c"]
        # Round 1 in the same order as round 0, minus b; round 2 is a alone.
        assert order[3:] == [f"{n}1" for n in first if n != "b"] + ["a2"]


def test_weighted_order_is_a_permutation_favouring_weight() -> None:
    tier = (route("light", weight=1), route("mid", weight=3), route("heavy", weight=6))
    firsts: Counter[str] = Counter()
    draws = 6000
    for _ in range(draws):
        order = weighted_order(tier)
        assert sorted(r.provider.name for r in order) == ["heavy", "light", "mid"]
        firsts[order[0].provider.name] += 1
    for name, share in (("light", 0.1), ("mid", 0.3), ("heavy", 0.6)):
        assert firsts[name] / draws == pytest.approx(share, abs=0.03)


def test_weighted_plan_spreads_first_attempts() -> None:
    entry = model_entry((route("a", weight=1), route("b", weight=4)))
    firsts = Counter(next(plan(entry))[0].provider.name for _ in range(2000))
    assert firsts["b"] / 2000 == pytest.approx(0.8, abs=0.04)


RETRY = RetrySpec(attempts=5, initialBackoff=0.5, maxBackoff=3.0)


@pytest.mark.parametrize(("retry_round", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0)])
def test_backoff_doubles_with_jitter_up_to_the_cap(retry_round: int, ceiling: float) -> None:
    delays = []
    for _ in range(500):
        delay = backoff(RETRY, retry_round, None)
        assert delay is not None
        assert ceiling * 0.5 <= delay <= ceiling
        delays.append(delay)
    assert max(delays) - min(delays) > ceiling * 0.3  # jittered, not constant


def test_retry_after_above_the_cap_skips_the_retry() -> None:
    assert backoff(RETRY, 1, 3.01) is None
    assert backoff(RETRY, 1, 60) is None


@pytest.mark.parametrize("retry_after", [2.5, 3.0])
def test_retry_after_raises_the_delay(retry_after: float) -> None:
    assert backoff(RETRY, 1, retry_after) == retry_after


def test_short_retry_after_keeps_the_backoff() -> None:
    for _ in range(100):
        delay = backoff(RETRY, 2, 0.1)
        assert delay is not None
        assert 0.5 <= delay <= 1.0


@pytest.mark.parametrize(
    ("pricing", "tokens", "usd"),
    [
        (None, (1000, 1000), 0.0),
        (Pricing(inputPerMillion=2.5, outputPerMillion=10), (1_000_000, 0), 2.5),
        (Pricing(inputPerMillion=2.5, outputPerMillion=10), (400, 100), 0.002),
        (Pricing(), (400, 100), 0.0),
    ],
)
def test_cost(pricing: Pricing | None, tokens: tuple[int, int], usd: float) -> None:
    assert cost(pricing, *tokens) == pytest.approx(usd)
