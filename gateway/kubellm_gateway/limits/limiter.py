"""The limiter the request pipeline talks to: admit, then charge when the response ends.

A request is admitted while every limit that applies has room; admitting counts
it against requestsPerMinute. Tokens and cost are only known when the response
ends, so they are charged then: the request that crosses a token or cost limit
finishes, and the next one is refused.

When the backend cannot be reached the error mode decides: "allow" serves the
request unlimited, "deny" refuses it with 503. Either way the failure is counted
in kubellm_limiter_errors_total and logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from ..errors import APIError
from ..routing import Principal, Snapshot
from ..telemetry.metrics import Metrics
from .backend import Backend, LimiterUnavailable
from .headers import refusal
from .rules import Rule, Usage, counters, policy_rules, usage

log = logging.getLogger(__name__)

OnError = Literal["allow", "deny"]
LOG_INTERVAL: Final = 60.0  # seconds between two log lines about an unreachable backend
_MEMO_SIZE: Final = 10_000


@dataclass(frozen=True, slots=True)
class Admission:
    """What admitting one request found; `charge` and the headers need it."""

    user: str
    rules: tuple[Rule, ...]  # every limit that applies
    usages: tuple[Usage, ...]  # their state after admission; empty when unknown


def unavailable() -> APIError:
    return APIError(
        503,
        "Rate limits cannot be checked right now; try again shortly.",
        type="server_error",
        code="rate_limiter_unavailable",
        headers={"retry-after": "1"},
    )


class Limiter:
    def __init__(
        self,
        backend: Backend,
        metrics: Metrics,
        *,
        on_error: OnError = "allow",
        now: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.on_error = on_error
        self.now = now  # wall clock: day and month windows are UTC calendar dates
        self._memo: dict[tuple[Principal, str], tuple[Rule, ...]] = {}
        self._memo_of: Snapshot | None = None
        self._failing = False
        self._logged_at = -LOG_INTERVAL
        self._charges: set[asyncio.Task[None]] = set()

    def rules(self, snapshot: Snapshot, principal: Principal, model_id: str) -> tuple[Rule, ...]:
        """The limits on the principal's use of the model: those of every policy that
        names the principal and grants the model. Memoized per snapshot."""
        if snapshot is not self._memo_of or len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
            self._memo_of = snapshot
        key = (principal, model_id)
        rules = self._memo.get(key)
        if rules is None:
            rules = self._memo[key] = tuple(
                rule
                for policy in snapshot.grant(principal).granting(model_id)
                for rule in policy_rules(policy)
            )
        return rules

    async def admit(self, snapshot: Snapshot, principal: Principal, model_id: str) -> Admission:
        """Count a request, or raise the APIError that refuses it (429, or 503 in deny mode)."""
        rules = self.rules(snapshot, principal, model_id)
        if not rules:
            return Admission(principal.user, (), ())
        now = self.now()
        made = counters(rules, principal.user, now)
        try:
            admitted, used = await self.backend.admit(made, now)
        except LimiterUnavailable as exc:
            self._failed("admit", exc)
            if self.on_error == "deny":
                raise unavailable() from None
            return Admission(principal.user, rules, ())
        self._recovered()
        usages = tuple([usage(c, u, now) for c, u in zip(made, used, strict=True)])
        if not admitted:
            for u in usages:
                if u.retry_in > 0:
                    self.metrics.rate_limited.labels(u.rule.policy, u.rule.limit.value).inc()
            raise refusal(usages)
        return Admission(principal.user, rules, usages)

    async def charge(self, admission: Admission, tokens: int, cost: float) -> None:
        """Charge a finished response's tokens and cost to every limit that counts them.

        Runs to completion even if the calling request is being cancelled.
        """
        if not admission.rules or (tokens <= 0 and cost <= 0):
            return
        task = asyncio.ensure_future(self._charge(admission, tokens, cost))
        self._charges.add(task)
        task.add_done_callback(self._charges.discard)
        await asyncio.shield(task)

    async def usage(self, user: str, rules: Sequence[Rule]) -> tuple[Usage, ...] | None:
        """The current state of each rule for the user; None if the backend is unreachable."""
        if not rules:
            return ()
        now = self.now()
        made = counters(tuple(rules), user, now)
        try:
            used = await self.backend.usage(made, now)
        except LimiterUnavailable as exc:
            self._failed("usage", exc)
            return None
        self._recovered()
        return tuple(usage(c, u, now) for c, u in zip(made, used, strict=True))

    def limiting(
        self, snapshot: Snapshot, principal: Principal
    ) -> list[tuple[frozenset[str], tuple[Rule, ...]]]:
        """For each policy naming the principal that sets limits: its models and its rules."""
        return [
            (models, rules)
            for policy, models in snapshot.grant(principal).policies
            if (rules := policy_rules(policy))
        ]

    async def aclose(self) -> None:
        if self._charges:
            await asyncio.wait(self._charges, timeout=5)
        await self.backend.aclose()

    async def _charge(self, admission: Admission, tokens: int, cost: float) -> None:
        now = self.now()
        charged, amounts = [], []
        for c in counters(admission.rules, admission.user, now):
            if c.need:  # requests were counted when admitted
                continue
            amount = cost if c.rule.limit.counts_cost else float(tokens)
            if amount > 0:
                charged.append(c)
                amounts.append(amount)
        if not charged:
            return
        try:
            used = await self.backend.charge(charged, amounts, now)
        except LimiterUnavailable as exc:
            self._failed("charge", exc)
            return
        self._recovered()
        for c, u in zip(charged, used, strict=True):
            if not c.rate:
                self.metrics.budget_usage.observe(
                    c.rule.policy, c.rule.limit.value, u / c.rule.amount, c.ends
                )

    def _failed(self, operation: str, exc: LimiterUnavailable) -> None:
        self.metrics.limiter_errors.labels(operation).inc()
        self._failing = True
        clock = time.monotonic()
        if clock - self._logged_at >= LOG_INTERVAL:
            self._logged_at = clock
            log.warning(
                "rate limits: the %s backend is unreachable (%s); requests are %s until it is "
                "back (further errors in the next minute are only counted)",
                self.backend.name,
                exc,
                "served without limits" if self.on_error == "allow" else "refused with 503",
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("rate limits: the %s backend is reachable again", self.backend.name)
