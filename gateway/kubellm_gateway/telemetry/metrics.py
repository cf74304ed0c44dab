"""Prometheus metrics, named after the OpenTelemetry GenAI conventions where they exist.

Labels stay bounded: model ids come from the configuration (a model a caller
cannot use is recorded as "-"), providers are namespace/name, status is a class.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .tracing import RequestTrace, Unsampled

# 5 ms to 120 s: from a cached refusal to a long reasoning completion.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    20,
    30,
    60,
    120,
)


# The gateway's own share: tens of microseconds to a few milliseconds.
OVERHEAD_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)
# GenAI semantic conventions' token-usage boundaries (powers of 4).
TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


@dataclass(slots=True)
class Call:
    """What one request did: filled in along the pipeline, recorded once at the end."""

    operation: str
    request_id: str
    stream: bool = False
    model: str = "-"
    provider: str = "-"
    status: int = 0
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    ttft: float | None = None
    cost: float = 0.0
    disconnected: bool = False
    user: str = "-"
    auth: str = "-"  # how the caller authenticated: apikey, oidc
    policy: str = "-"
    error: str | None = None  # the error code sent, if any
    bytes_out: int = 0
    bytes_in: int = 0  # the request body's size
    events: int = 0  # upstream stream events relayed
    tokens_estimated: bool = False  # a stream cut before its usage: tokens estimated
    response_model: str | None = None  # the model the upstream says answered
    overhead: float | None = None  # seconds from arrival to the first upstream request
    trace: RequestTrace | Unsampled | None = None  # when tracing is on
    started: float = 0.0  # loop time when the request arrived
    finished: bool = False  # the last response message is being sent


def _histogram(bounds: Sequence[float]) -> list[float]:
    """Bucket counts (one per bound, then +Inf) and, last, the sum."""
    return [0.0] * (len(bounds) + 2)


def _observe(row: list[float], bounds: Sequence[float], value: float) -> None:
    row[bisect_left(bounds, value)] += 1  # the first bucket with value <= le
    row[-1] += value


def _add(into: dict[tuple[str, ...], list[float]], key: tuple[str, ...], row: list[float]) -> None:
    if not any(row[:-1]):
        return  # nothing observed: no series, as a histogram never observed has none
    total = into.get(key)
    if total is None:
        into[key] = list(row)
    else:
        for i, value in enumerate(row):
            total[i] += value


class _Series:
    """What the requests of one (operation, model, provider, policy, status[, user]) did.

    Every per-request family's labels are a subset of these, so a request updates one
    object found with one lookup, and a scrape sums series into the families. Kept by
    the event loop in plain lists: prometheus_client's metrics take a lock per operation,
    and about ten lock round trips a request cost 6 to 9 % of the gateway's CPU; the
    lookups and label tuples of one family each, another 1 to 2 % (bench/README.md).
    Only the loop writes; a scrape (the metrics server's thread) copies under the GIL.
    What a histogram holds is not kept twice: requests are the duration's count, tokens
    the token usage's sums.
    """

    __slots__ = (
        "cost", "disconnects", "duration", "fallbacks", "input_usage", "output_usage",
        "overhead", "ttft",
    )  # fmt: skip

    def __init__(self) -> None:
        self.duration = _histogram(LATENCY_BUCKETS)
        self.ttft = _histogram(LATENCY_BUCKETS)
        self.overhead = _histogram(OVERHEAD_BUCKETS)
        self.input_usage = _histogram(TOKEN_BUCKETS)
        self.output_usage = _histogram(TOKEN_BUCKETS)
        self.cost = 0.0
        self.fallbacks = self.disconnects = 0


class RequestMetrics:
    """The per-request families, exported by one collector."""

    def __init__(self, per_user: bool) -> None:
        self.user = ["user"] if per_user else []
        self.series: dict[tuple[str, ...], _Series] = {}
        self.inflight = 0

    def collect(self) -> Iterator[Metric]:
        user = self.user
        requests = CounterMetricFamily(
            "kubellm_requests",
            "Requests served, by outcome.",
            labels=["operation", "model", "provider", "policy", "status_class", "status", *user],
        )
        duration: dict[tuple[str, ...], list[float]] = {}
        ttft: dict[tuple[str, ...], list[float]] = {}
        overhead: dict[tuple[str, ...], list[float]] = {}
        usage: dict[tuple[str, ...], list[float]] = {}
        tokens: dict[tuple[str, ...], float] = {}
        cost: dict[tuple[str, ...], float] = {}
        fallbacks: dict[tuple[str, ...], float] = {}
        disconnects: dict[tuple[str, ...], float] = {}

        def count(into: dict[tuple[str, ...], float], key: tuple[str, ...], n: float) -> None:
            if n:
                into[key] = into.get(key, 0) + n

        for key, s in list(self.series.items()):
            op, model, provider, policy, status, *who = key
            sc = status_class(int(status))
            served = sum(s.duration[:-1])  # every request is timed
            requests.add_metric([op, model, provider, policy, sc, status, *who], served)
            _add(duration, (op, model, sc), s.duration)
            _add(ttft, (op, model), s.ttft)
            _add(overhead, (op,), s.overhead)
            _add(usage, (op, model, "input"), s.input_usage)
            _add(usage, (op, model, "output"), s.output_usage)
            count(tokens, (op, model, provider, policy, "input", *who), s.input_usage[-1])
            count(tokens, (op, model, provider, policy, "output", *who), s.output_usage[-1])
            count(cost, (model, provider, policy, *who), s.cost)
            count(fallbacks, (model,), s.fallbacks)
            count(disconnects, (op, model), s.disconnects)
        yield requests
        yield _histogram_family(
            "gen_ai_server_request_duration_seconds",
            "Time from request received to response end.",
            ["operation", "model", "status_class"],
            LATENCY_BUCKETS,
            duration,
        )
        yield _histogram_family(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed event.",
            ["operation", "model"],
            LATENCY_BUCKETS,
            ttft,
        )
        yield _histogram_family(
            "kubellm_gateway_overhead_seconds",
            "The gateway's own time: from request received to upstream request sent.",
            ["operation"],
            OVERHEAD_BUCKETS,
            overhead,
        )
        yield _histogram_family(
            "gen_ai_client_token_usage",
            "Tokens per request, by type (input, output).",
            ["operation", "model", "type"],
            TOKEN_BUCKETS,
            usage,
        )
        yield _counter_family(
            "kubellm_tokens",
            "Tokens counted from upstream usage.",
            ["operation", "model", "provider", "policy", "type", *user],
            tokens,
        )
        yield _counter_family(
            "kubellm_cost_usd",
            "Cost in USD from each model's pricing.",
            ["model", "provider", "policy", *user],
            cost,
        )
        yield _counter_family(
            "kubellm_fallbacks",
            "Requests served by other than their first attempt.",
            ["model"],
            fallbacks,
        )
        yield _counter_family(
            "kubellm_stream_disconnects",
            "Clients that went away before the response ended.",
            ["operation", "model"],
            disconnects,
        )
        inflight = GaugeMetricFamily("kubellm_inflight_requests", "Requests in progress.")
        inflight.add_metric([], self.inflight)
        yield inflight


def _counter_family(
    name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], float]
) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(key, value)
    return family


def _histogram_family(
    name: str,
    doc: str,
    labels: list[str],
    bounds: Sequence[float],
    rows: dict[tuple[str, ...], list[float]],
) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=labels)
    le = [str(float(b)) for b in bounds] + ["+Inf"]  # as Prometheus writes floats
    for key, row in rows.items():
        cumulative = list(accumulate(row[:-1]))
        family.add_metric(key, list(zip(le, cumulative, strict=True)), row[-1])
    return family


class BudgetUsage:
    """kubellm_limit_usage_ratio: per policy and day/month limit, the largest share of
    it one user has used in the current window (labels stay bounded: no user).

    Each value belongs to its window and is not exported once that window ends, so
    the gauge drops at 00:00 UTC even when no request comes to lower it. With Redis
    each replica sees users' global counts: the max over replicas is the answer.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], tuple[float, float]] = {}  # -> (share, window end)

    def observe(self, policy: str, limit: str, share: float, window_end: float) -> None:
        old = self._values.get((policy, limit))
        if old is None or old[1] != window_end or share > old[0]:
            self._values[policy, limit] = (share, window_end)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kubellm_limit_usage_ratio",
            "Largest share of a day/month limit used by one user of the policy, this window.",
            labels=["policy", "limit"],
        )
        now = time.time()
        # Scrapes run on the metrics server's thread: iterate over a copy.
        for (policy, limit), (share, window_end) in list(self._values.items()):
            if window_end > now:
                family.add_metric([policy, limit], share)
        yield family


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        enabled: bool = True,
        per_user: bool = False,
    ) -> None:
        self.enabled = enabled  # off (no metrics port): requests record nothing
        # A user label multiplies series by users: only when the operator asks for it.
        self.per_user = per_user
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.per_request = RequestMetrics(per_user)
        r.register(self.per_request)
        self.upstream_errors = Counter(
            "kubellm_upstream_errors",
            "Failed upstream attempts, by reason: connect, timeout, protocol, credentials, "
            "429, 4xx, 5xx.",
            ["provider", "reason"],
            registry=r,
        )
        self.generation = Gauge(
            "kubellm_config_generation", "Snapshots applied since start.", registry=r
        )
        self.resources = Gauge(
            "kubellm_config_resources", "Resources in the current snapshot.", ["kind"], registry=r
        )
        self.invalid = Gauge(
            "kubellm_config_invalid_resources",
            "Resources skipped as invalid.",
            ["kind"],
            registry=r,
        )
        self.rate_limited = Counter(
            "kubellm_rate_limited",
            "Requests refused by an AccessPolicy limit, by the limit that refused.",
            ["policy", "limit"],
            registry=r,
        )
        self.limiter_errors = Counter(
            "kubellm_limiter_errors",
            "Limiter calls that failed (backend unreachable), by operation.",
            ["operation"],
            registry=r,
        )
        self.budget_usage = BudgetUsage()
        r.register(self.budget_usage)

    def started(self) -> None:
        self.per_request.inflight += 1

    def record(self, call: Call, seconds: float) -> None:
        m = self.per_request
        m.inflight -= 1
        if not self.enabled:
            return
        key: tuple[str, ...] = (
            call.operation, call.model, call.provider, call.policy, str(call.status),
        )  # fmt: skip
        if self.per_user:
            key += (call.user,)
        s = m.series.get(key)
        if s is None:
            s = m.series[key] = _Series()
        _observe(s.duration, LATENCY_BUCKETS, seconds)
        if call.ttft is not None:
            _observe(s.ttft, LATENCY_BUCKETS, call.ttft)
        if call.overhead is not None:
            _observe(s.overhead, OVERHEAD_BUCKETS, call.overhead)
        if call.input_tokens:
            _observe(s.input_usage, TOKEN_BUCKETS, call.input_tokens)
        if call.output_tokens:
            _observe(s.output_usage, TOKEN_BUCKETS, call.output_tokens)
        s.cost += call.cost
        if call.attempts > 1 and call.status < 400:
            s.fallbacks += 1
        if call.disconnected:
            s.disconnects += 1
