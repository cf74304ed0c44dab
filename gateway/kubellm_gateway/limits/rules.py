"""What is limited, over which window, and where its usage is counted.

An AccessPolicy's `spec.limits` become one Rule per limit set. Usage is counted
per (policy, user): every principal a policy names gets the whole limit, and a
user reaching the gateway through several keys or tokens shares one count.

Windows. Minute limits are rolling: usage drains continuously at `limit / 60`
per second (a token bucket), so there is no burst of twice the limit across a
minute boundary and a caller who waits gets room back gradually. Day and month
limits are UTC calendar windows (a budget is a bill): usage starts again from
zero at 00:00 UTC and on the first of the month.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import NamedTuple
from urllib.parse import quote

from ..resources import AccessPolicy

MINUTE = 60.0


class Limit(StrEnum):
    """A limit's name, as spelled in `AccessPolicy.spec.limits`."""

    requests_per_minute = "requestsPerMinute"
    tokens_per_minute = "tokensPerMinute"
    tokens_per_day = "tokensPerDay"
    cost_per_day = "costPerDay"
    cost_per_month = "costPerMonth"

    @property
    def rolling(self) -> bool:
        return self in (Limit.requests_per_minute, Limit.tokens_per_minute)

    @property
    def counts_cost(self) -> bool:
        return self in (Limit.cost_per_day, Limit.cost_per_month)


@dataclass(frozen=True, slots=True)
class Rule:
    policy: str  # "namespace/name" of the AccessPolicy
    limit: Limit
    amount: float  # the most allowed per window: requests, tokens or USD


def policy_rules(policy: AccessPolicy) -> tuple[Rule, ...]:
    limits = policy.spec.limits
    if limits is None:
        return ()
    name = f"{policy.metadata.namespace}/{policy.metadata.name}"
    return tuple(
        Rule(name, limit, float(amount))
        for limit in Limit
        if (amount := getattr(limits, limit.value)) is not None
    )


@dataclass(frozen=True, slots=True)
class Counter:
    """One rule's count for one user, in the window that holds the moment it was made for."""

    key: str  # unique per (user, policy, limit, window); the user's part is a Redis hash tag
    rule: Rule
    ends: float  # calendar windows: when the window ends (epoch seconds); rolling: 0
    rate: float  # rolling: how fast the count drains, per second; calendar: 0
    need: float  # what admitting a request adds: one request, or nothing (yet)


DAY = 86_400


@functools.lru_cache(maxsize=4)
def _windows(day: int) -> tuple[tuple[str, float], tuple[str, float]]:
    """The UTC day and month holding day number `day` (days since the epoch): ids and ends."""
    t = datetime.fromtimestamp(day * DAY, UTC)
    next_month = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
    return (t.strftime("%Y-%m-%d"), (day + 1) * DAY), (t.strftime("%Y-%m"), next_month.timestamp())


@functools.lru_cache(maxsize=4096)
def _counters(rules: tuple[Rule, ...], user: str, day: int) -> tuple[Counter, ...]:
    # Quoting keeps ":", "{" and "}" in user names from forging another user's key.
    tag = f"{{{quote(user, safe='')}}}"
    (day_id, day_end), (month_id, month_end) = _windows(day)
    made = []
    for rule in rules:
        key = f"{tag}:{rule.policy}:{rule.limit.value}"
        need = 1.0 if rule.limit is Limit.requests_per_minute else 0.0
        if rule.limit.rolling:
            made.append(Counter(key, rule, 0.0, rule.amount / MINUTE, need))
        elif rule.limit is Limit.cost_per_month:
            made.append(Counter(f"{key}:{month_id}", rule, month_end, 0.0, need))
        else:
            made.append(Counter(f"{key}:{day_id}", rule, day_end, 0.0, need))
    return tuple(made)


def counters(rules: tuple[Rule, ...], user: str, now: float) -> tuple[Counter, ...]:
    """The counters of `rules` for `user` at `now` (the same objects all day: cached)."""
    return _counters(rules, user, int(now // DAY))


def has_room(c: Counter, used: float) -> bool:
    """Whether a request may start: a whole request fits, or tokens and cost are below."""
    return used + c.need <= c.rule.amount if c.need else used < c.rule.amount


def drained(c: Counter, used: float, elapsed: float) -> float:
    """A rolling count `elapsed` seconds later."""
    return max(0.0, used - max(0.0, elapsed) * c.rate)


class Usage(NamedTuple):
    """One rule's state for one user at one moment (a tuple: made for every response)."""

    rule: Rule
    used: float
    resets_in: float  # seconds until usage is back at zero (rolling) or the window ends
    retry_in: float  # seconds until a request fits again; 0 if one fits now

    @property
    def remaining(self) -> float:
        return max(0.0, self.rule.amount - self.used)


def usage(c: Counter, used: float, now: float) -> Usage:
    room = has_room(c, used)
    if c.rate:
        # Rolling: wait until the excess has drained (a whole request, or below the limit).
        resets_in = used / c.rate
        retry_in = 0.0 if room else max((used + c.need - c.rule.amount) / c.rate, 0.001)
    else:
        resets_in = c.ends - now
        retry_in = 0.0 if room else resets_in
    return Usage(c.rule, used, max(0.0, resets_in), retry_in)


def retry_after(usages: tuple[Usage, ...]) -> int:
    """Whole seconds (at least 1) until every refusing limit has room again."""
    return max(1, math.ceil(max(u.retry_in for u in usages)))
