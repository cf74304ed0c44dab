"""Where counts live: the interface both backends (memory.py, redis.py) implement.

A backend stores numbers; the rules (rules.py) say what they mean. Every call
is atomic over all the counters it is given, so a request is either counted
against every limit that applies or against none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .rules import Counter


class LimiterUnavailable(Exception):
    """The backend cannot be reached; the limiter's error mode decides what happens."""


class Backend(Protocol):
    name: str

    async def admit(self, counters: Sequence[Counter], now: float) -> tuple[bool, list[float]]:
        """Count a request if every counter has room (rules.has_room).

        Returns whether it was admitted and each counter's usage: after counting if
        admitted, as found if not.
        """
        ...

    async def usage(self, counters: Sequence[Counter], now: float) -> list[float]:
        """Each counter's usage, changing nothing."""
        ...

    async def charge(
        self, counters: Sequence[Counter], amounts: Sequence[float], now: float
    ) -> list[float]:
        """Add each amount to its counter unconditionally; returns the usage after."""
        ...

    async def aclose(self) -> None: ...
