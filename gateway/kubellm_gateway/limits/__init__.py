"""AccessPolicy limits: rate limits, token quotas and USD budgets per (policy, user).

One interface (limiter.Limiter) over two backends: in-process (memory.py, exact
for one replica) and Redis (redis.py, exact across replicas).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..asgi import RawHeaders, encode_headers
from ..telemetry.metrics import Metrics
from .backend import Backend, LimiterUnavailable
from .headers import header_pairs
from .limiter import Admission, Limiter, OnError
from .memory import MemoryBackend
from .rules import Limit, Rule, Usage

__all__ = [
    "Admission",
    "Backend",
    "Limit",
    "Limiter",
    "LimiterUnavailable",
    "MemoryBackend",
    "OnError",
    "Rule",
    "Usage",
    "create_limiter",
    "rate_limit_headers",
]


def create_limiter(
    metrics: Metrics,
    redis_url: str | None = None,
    on_error: OnError = "allow",
    now: Callable[[], float] = time.time,
) -> Limiter:
    """Redis when a URL is given, else in-process."""
    backend: Backend = MemoryBackend()
    if redis_url:
        # Imported only when used: the redis client weighs 7 MiB of RSS.
        from .redis import RedisBackend  # noqa: PLC0415

        backend = RedisBackend(redis_url)
    return Limiter(backend, metrics, on_error=on_error, now=now)


def rate_limit_headers(admission: Admission) -> RawHeaders:
    """The x-ratelimit-* headers for a response the admission covers (none if unlimited)."""
    return encode_headers(header_pairs(admission.usages)) if admission.usages else []
