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


class _Counter:
    """A counter family kept in a plain dict by the event loop, exported at scrape time.

    prometheus_client's own metrics take a lock per operation: about ten lock round
    trips per request cost 6 to 9 % of the gateway's CPU (bench/observability.py).
    Only the loop writes; a scrape (the metrics server's thread) copies under the GIL.
    """

    def __init__(self, name: str, doc: str, labels: list[str]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {}

    def add(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in list(self.values.items()):
            family.add_metric(key, value)
        return family


class _Histogram:
    """A histogram family kept like _Counter: per label set, bucket counts and the sum."""

    def __init__(self, name: str, doc: str, labels: list[str], buckets: Sequence[float]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.bounds = tuple(float(b) for b in buckets)
        self._le = [str(b) for b in self.bounds] + ["+Inf"]  # as Prometheus writes floats
        self.values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        row = self.values.get(key)
        if row is None:
            row = self.values[key] = [0.0] * (len(self.bounds) + 2)  # buckets, +Inf, sum
        row[bisect_left(self.bounds, value)] += 1  # the first bucket with value <= le
        row[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, row in list(self.values.items()):
            counts = list(row)
            cumulative = list(accumulate(counts[:-1]))
            family.add_metric(key, list(zip(self._le, cumulative, strict=True)), counts[-1])
        return family


class RequestMetrics:
    """The per-request families, exported by one collector."""

    def __init__(self, per_user: bool) -> None:
        user = ["user"] if per_user else []
        self.requests = _Counter(
            "kubellm_requests",
            "Requests served, by outcome.",
            ["operation", "model", "provider", "policy", "status_class", "status", *user],
        )
        self.duration = _Histogram(
            "gen_ai_server_request_duration_seconds",
            "Time from request received to response end.",
            ["operation", "model", "status_class"],
            LATENCY_BUCKETS,
        )
        self.ttft = _Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed event.",
            ["operation", "model"],
            LATENCY_BUCKETS,
        )
        self.overhead = _Histogram(
            "kubellm_gateway_overhead_seconds",
            "The gateway's own time: from request received to upstream request sent.",
            ["operation"],
            OVERHEAD_BUCKETS,
        )
        self.token_usage = _Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request, by type (input, output).",
            ["operation", "model", "type"],
            TOKEN_BUCKETS,
        )
        self.tokens = _Counter(
            "kubellm_tokens",
            "Tokens counted from upstream usage.",
            ["operation", "model", "provider", "policy", "type", *user],
        )
        self.cost = _Counter(
            "kubellm_cost_usd",
            "Cost in USD from each model's pricing.",
            ["model", "provider", "policy", *user],
        )
        self.fallbacks = _Counter(
            "kubellm_fallbacks", "Requests served by other than their first attempt.", ["model"]
        )
        self.disconnects = _Counter(
            "kubellm_stream_disconnects",
            "Clients that went away before the response ended.",
            ["operation", "model"],
        )
        self.inflight = 0

    def collect(self) -> Iterator[Metric]:
        for family in (
            self.requests,
            self.duration,
            self.ttft,
            self.overhead,
            self.token_usage,
            self.tokens,
            self.cost,
            self.fallbacks,
            self.disconnects,
        ):
            yield family.family()
        inflight = GaugeMetricFamily("kubellm_inflight_requests", "Requests in progress.")
        inflight.add_metric([], self.inflight)
        yield inflight


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
        op, model, provider, policy = call.operation, call.model, call.provider, call.policy
        user = (call.user,) if self.per_user else ()
        sc = status_class(call.status)
        m.requests.add((op, model, provider, policy, sc, str(call.status), *user))
        m.duration.observe((op, model, sc), seconds)
        if call.ttft is not None:
            m.ttft.observe((op, model), call.ttft)
        if call.overhead is not None:
            m.overhead.observe((op,), call.overhead)
        for kind, count in (("input", call.input_tokens), ("output", call.output_tokens)):
            if count:
                m.tokens.add((op, model, provider, policy, kind, *user), count)
                m.token_usage.observe((op, model, kind), count)
        if call.cost:
            m.cost.add((model, provider, policy, *user), call.cost)
        if call.attempts > 1 and call.status < 400:
            m.fallbacks.add((model,))
        if call.disconnected:
            m.disconnects.add((op, model))
