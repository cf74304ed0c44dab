"""OpenAI's rate-limit headers and the 429 that refuses a request."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..errors import APIError
from .rules import Limit, Usage, retry_after

_TOKEN_LIMITS = (Limit.tokens_per_minute, Limit.tokens_per_day)


def duration(seconds: float) -> str:
    """OpenAI's spelling of a reset time: "20ms", "1s", "6m0s", "1h2m3.5s"."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    text = f"{hours}h" if hours else ""
    if hours or minutes:
        text += f"{minutes}m"
    return text + f"{ms / 1000:g}s"


def _tightest(usages: Iterable[Usage], limits: tuple[Limit, ...]) -> Usage | None:
    # Several policies may limit the same thing: the caller is bound by the least room.
    candidates = [u for u in usages if u.rule.limit in limits]
    return min(candidates, key=lambda u: (u.remaining, -u.resets_in), default=None)


def header_pairs(usages: Iterable[Usage]) -> list[tuple[str, str]]:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the limits that apply."""
    usages = tuple(usages)
    pairs: list[tuple[str, str]] = []
    for suffix, limits in (("requests", (Limit.requests_per_minute,)), ("tokens", _TOKEN_LIMITS)):
        u = _tightest(usages, limits)
        if u is not None:
            pairs += [
                (f"x-ratelimit-limit-{suffix}", str(int(u.rule.amount))),
                (f"x-ratelimit-remaining-{suffix}", str(math.floor(u.remaining))),
                (f"x-ratelimit-reset-{suffix}", duration(u.resets_in)),
            ]
    return pairs


def refusal(usages: tuple[Usage, ...]) -> APIError:
    """The 429 for a request some limit has no room for."""
    refused = tuple(u for u in usages if u.retry_in > 0)
    names = ", ".join(f"{u.rule.limit.value} of AccessPolicy {u.rule.policy}" for u in refused)
    wait = retry_after(refused)
    headers = dict(header_pairs(usages))
    headers["retry-after"] = str(wait)
    if any(not u.rule.limit.rolling for u in refused):
        # A spent budget comes back at the end of the day or month: SDK retries are waste.
        headers["x-should-retry"] = "false"
    return APIError(
        429,
        f"Rate limit reached: {names}. Try again in {duration(wait)}.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers=headers,
    )
