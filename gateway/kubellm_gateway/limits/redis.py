"""Counts in Redis: exact across replicas, one round trip per call.

Each call is one Lua script (EVALSHA), so checking every limit and counting
the request happen atomically on the server. The script does the same
arithmetic as rules.py and memory.py; the behavioural tests run both backends.
The callers' clocks are used (passed in), not Redis's: replicas are expected to
be NTP-synced, and tests move time without sleeping.

All keys of one call share the user's hash tag, so a call stays in one slot.
After a failure the backend answers LimiterUnavailable for `retry_interval`
without trying, so a dead Redis costs requests nothing; then it tries again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .backend import LimiterUnavailable
from .rules import Counter

PREFIX = "kubellm:limits:"

# KEYS: the counters. ARGV: now, mode ("admit", "charge" or "read"), and one string of
# four numbers per counter: rolling rate per second (0 for a calendar window), limit,
# amount (what admitting adds, or the charge), window end. One string, because packing
# a command costs the client per argument. Calendar counts outlive their window by an
# hour, for replicas whose clocks lag.
_SCRIPT = """
local function num(x) return string.format("%.17g", x) end  -- exact, unlike tostring
local now, mode = tonumber(ARGV[1]), ARGV[2]
local spec = {}
for n in string.gmatch(ARGV[3], "%S+") do spec[#spec + 1] = tonumber(n) end
local used, stamps, fits = {}, {}, true
for i, key in ipairs(KEYS) do
  local at = (i - 1) * 4 + 1
  local rate, limit, amount = spec[at], spec[at + 1], spec[at + 2]
  local u = 0
  if rate > 0 then
    local state = redis.call("HMGET", key, "u", "t")
    stamps[i] = tonumber(state[2]) or now
    u = math.max(0, (tonumber(state[1]) or 0) - math.max(0, now - stamps[i]) * rate)
  else
    u = tonumber(redis.call("GET", key)) or 0
  end
  used[i] = u
  if mode == "admit" and ((amount > 0 and u + amount > limit) or (amount == 0 and u >= limit)) then
    fits = false
  end
end
if mode ~= "read" and fits then
  for i, key in ipairs(KEYS) do
    local at = (i - 1) * 4 + 1
    local rate, amount, ends = spec[at], spec[at + 2], spec[at + 3]
    if amount > 0 then
      used[i] = used[i] + amount
      if rate > 0 then
        local stamp = math.max(stamps[i], now)
        redis.call("HSET", key, "u", num(used[i]), "t", num(stamp))
        redis.call("PEXPIRE", key, math.ceil(used[i] / rate * 1000) + 1000)
      else
        redis.call("INCRBYFLOAT", key, num(amount))
        redis.call("PEXPIREAT", key, math.ceil((ends + 3600) * 1000))
      end
    end
  end
end
local reply = {fits and "1" or "0"}
for i = 1, #used do reply[i + 1] = num(used[i]) end
return reply
"""


class RedisBackend:
    name = "redis"

    def __init__(
        self, url: str, *, timeout: float = 0.5, retry_interval: float = 1.0, pool_size: int = 64
    ) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=timeout,  # waiting for a free connection
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # No client-side retries: the error mode answers at once, and this backend
            # tries again after `retry_interval`.
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._script = self._redis.register_script(_SCRIPT)
        self._retry_interval = retry_interval
        self._down_until = 0.0

    async def admit(self, counters: Sequence[Counter], now: float) -> tuple[bool, list[float]]:
        fits, used = await self._run("admit", counters, [c.need for c in counters], now)
        return fits, used

    async def charge(
        self, counters: Sequence[Counter], amounts: Sequence[float], now: float
    ) -> list[float]:
        return (await self._run("charge", counters, amounts, now))[1]

    async def usage(self, counters: Sequence[Counter], now: float) -> list[float]:
        return (await self._run("read", counters, [0.0] * len(counters), now))[1]

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _run(
        self, mode: str, counters: Sequence[Counter], amounts: Sequence[float], now: float
    ) -> tuple[bool, list[float]]:
        if time.monotonic() < self._down_until:
            raise LimiterUnavailable("Redis failed moments ago; not retrying yet")
        spec = " ".join(
            f"{c.rate!r} {c.rule.amount!r} {float(amount)!r} {c.ends!r}"
            for c, amount in zip(counters, amounts, strict=True)
        )
        try:
            reply = await self._script(
                keys=[PREFIX + c.key for c in counters], args=[repr(now), mode, spec]
            )
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self._retry_interval
            raise LimiterUnavailable(f"Redis: {exc or type(exc).__name__}") from exc
        return reply[0] == b"1", [float(v) for v in reply[1:]]
