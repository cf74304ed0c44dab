"""In-process counts: exact for one replica, lost on restart.

Every call runs without an await, so on the event loop it is atomic.
"""

from __future__ import annotations

from collections.abc import Sequence

from .rules import Counter, drained, has_room

_FIRST_SWEEP = 1024


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        # key -> (usage, when, rate): rolling counts (rate > 0) remember when they were
        # last drained, calendar counts (rate 0) when their window ends.
        self._counts: dict[str, tuple[float, float, float]] = {}
        self._sweep_at = _FIRST_SWEEP

    async def admit(self, counters: Sequence[Counter], now: float) -> tuple[bool, list[float]]:
        used = [self._read(c, now) for c in counters]
        for c, u in zip(counters, used, strict=True):
            if not has_room(c, u):
                return False, used
        for i, c in enumerate(counters):
            if c.need:
                used[i] += c.need
                self._write(c, used[i], now)
        return True, used

    async def charge(
        self, counters: Sequence[Counter], amounts: Sequence[float], now: float
    ) -> list[float]:
        used = []
        for c, amount in zip(counters, amounts, strict=True):
            u = self._read(c, now) + amount
            self._write(c, u, now)
            used.append(u)
        return used

    async def usage(self, counters: Sequence[Counter], now: float) -> list[float]:
        return [self._read(c, now) for c in counters]

    async def aclose(self) -> None:
        self._counts.clear()

    def _read(self, c: Counter, now: float) -> float:
        state = self._counts.get(c.key)
        if state is None:
            return 0.0
        used, when, _ = state
        return drained(c, used, now - when) if c.rate else used

    def _write(self, c: Counter, used: float, now: float) -> None:
        if c.rate:
            state = self._counts.get(c.key)
            # A clock that stepped back must not make the count drain twice.
            self._counts[c.key] = (used, max(now, state[1]) if state else now, c.rate)
        else:
            self._counts[c.key] = (used, c.ends, 0.0)
        if len(self._counts) >= self._sweep_at:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Forget counts that are back at zero: drained, or of a window that has ended."""
        spent = [
            key
            for key, (used, when, rate) in self._counts.items()
            if (used - (now - when) * rate <= 0 if rate else when <= now)
        ]
        for key in spent:
            del self._counts[key]
        self._sweep_at = max(_FIRST_SWEEP, 2 * len(self._counts))
