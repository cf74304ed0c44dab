"""The pipeline after authorization: pick a backend, retry, fall back, relay, account.

Retries and fallbacks happen only before the first byte reaches the client: a
stream's response starts once its first upstream event is in hand, so an
upstream that fails before that is still retried elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson

from .asgi import JSON_HEADERS, SSE_HEADERS, Send, send_bytes
from .errors import APIError, no_backend
from .providers.base import Exchange, FailureReason, Operation, UpstreamFailure
from .providers.completions_chat import chat_request, completion_chunk, completion_response
from .providers.pool import ProviderPool
from .providers.sse import DONE
from .resources import Pricing, RetrySpec
from .routing import ModelEntry, Route
from .telemetry.metrics import Call, Metrics

log = logging.getLogger(__name__)

# Cheap pre-check before parsing a chunk: only usage-bearing chunks need parsing.
_USAGE = re.compile(rb'"usage":\s*\{')
_STREAM_END = b"data: [DONE]\n\n"


def weighted_order(tier: tuple[Route, ...]) -> list[Route]:
    """A random order in which heavier backends tend to come first (Efraimidis-Spirakis)."""
    return sorted(tier, key=lambda r: random.random() ** (1 / r.weight), reverse=True)


def plan(entry: ModelEntry) -> Iterator[tuple[Route, int]]:
    """(backend, retry round) pairs: each tier in weighted order, then its retry rounds.

    A failed backend's siblings are tried before it is retried, so one bad
    backend costs a failover, not a backoff.
    """
    for tier in entry.tiers:
        order = list(tier) if len(tier) == 1 else weighted_order(tier)
        for route in order:
            yield route, 0
        rounds = max(r.provider.spec.retry.attempts for r in order)
        for k in range(1, rounds + 1):
            for route in order:
                if route.provider.spec.retry.attempts >= k:
                    yield route, k


def backoff(retry: RetrySpec, retry_round: int, retry_after: float | None) -> float | None:
    """Seconds to wait before a retry, or None to skip it (the upstream asked for longer)."""
    delay: float = min(retry.initialBackoff * 2 ** (retry_round - 1), retry.maxBackoff)
    delay *= random.uniform(0.5, 1.0)  # jitter spreads synchronized retries apart
    if retry_after is not None:
        if retry_after > retry.maxBackoff:
            return None
        delay = max(delay, retry_after)
    return delay


def cost(pricing: Pricing | None, input_tokens: int, output_tokens: int) -> float:
    if pricing is None:
        return 0.0
    return (input_tokens * pricing.inputPerMillion + output_tokens * pricing.outputPerMillion) / 1e6


def client_error(failure: UpstreamFailure) -> APIError:
    """An upstream's own 4xx, re-shaped: its status and message, our envelope."""
    error = failure.error or {}
    return APIError(
        failure.status or 502,
        failure.message,
        type=str(error.get("type") or "invalid_request_error"),
        code=str(error["code"]) if error.get("code") is not None else None,
        param=str(error["param"]) if error.get("param") is not None else None,
    )


def exhausted(failure: UpstreamFailure | None, call: Call) -> APIError:
    """The error for a request whose every attempt failed."""
    if failure is None:
        return no_backend(call.model)
    # The gateway already retried: SDKs that retry on their own should not multiply it.
    headers = {"x-should-retry": "false"} if call.attempts > 1 else {}
    if failure.status == 429:
        if failure.retry_after is not None:
            headers["retry-after"] = str(math.ceil(failure.retry_after))
        return APIError(
            429,
            f"Upstream rate limit: {failure.message}",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if failure.reason is FailureReason.credentials:
        # The gateway's own credentials: details are for the operator's log, not the caller.
        return APIError(
            502,
            "The gateway could not authenticate to the upstream.",
            type="server_error",
            code="upstream_error",
            headers=headers,
        )
    if failure.reason is FailureReason.timeout:
        return APIError(
            504,
            "The upstream did not answer in time.",
            type="server_error",
            code="upstream_timeout",
            headers=headers,
        )
    return APIError(
        502,
        f"Upstream error: {failure.message}",
        type="server_error",
        code="upstream_error",
        headers=headers,
    )


def _failure(exc: BaseException) -> UpstreamFailure:
    if isinstance(exc, UpstreamFailure):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamFailure(FailureReason.timeout, "no first byte within the timeout")
    if isinstance(exc, StopAsyncIteration):
        return UpstreamFailure(FailureReason.protocol, "the stream ended before any event")
    return UpstreamFailure(FailureReason.protocol, f"{type(exc).__name__}: {exc}")


def _mid_stream_error(exc: BaseException) -> bytes:
    timeout = isinstance(exc, TimeoutError)
    error = APIError(
        504 if timeout else 502,
        "The upstream went silent mid-stream." if timeout else f"The upstream stream broke: {exc}",
        type="server_error",
        code="upstream_timeout" if timeout else "upstream_error",
    )
    return b"data: " + error.body() + b"\n\n"


class Proxy:
    def __init__(self, pool: ProviderPool, metrics: Metrics) -> None:
        self.pool = pool
        self.metrics = metrics

    async def serve(
        self,
        call: Call,
        body: dict[str, Any],
        entry: ModelEntry,
        upstream_op: Operation,
        send: Send,
    ) -> None:
        convert = upstream_op.value != call.operation
        upstream_body = chat_request(body) if convert else body
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        route, exchange, batches, first = await self._open(call, entry, upstream_op, upstream_body)
        provider = route.provider
        try:
            if batches is not None:
                assert isinstance(first, list)
                await self._relay(call, entry, batches, first, send, wants_usage, convert, route)
            else:
                assert isinstance(first, bytes)
                await self._respond(call, entry, first, send, convert)
        finally:
            await exchange.aclose()
            provider.inflight -= 1
            self.pool.release_if_idle(provider)

    async def _open(
        self, call: Call, entry: ModelEntry, op: Operation, body: dict[str, Any]
    ) -> tuple[Route, Exchange, AsyncIterator[list[bytes]] | None, list[bytes] | bytes]:
        failures: dict[int, UpstreamFailure] = {}
        last: UpstreamFailure | None = None
        for route, retry_round in plan(entry):
            provider = route.provider
            if retry_round:
                previous = failures.get(id(route))
                retry_after = previous.retry_after if previous is not None else None
                delay = backoff(provider.spec.retry, retry_round, retry_after)
                if delay is None:
                    continue
                await asyncio.sleep(delay)
            call.attempts += 1
            call.provider = provider.name
            provider.inflight += 1
            try:
                async with asyncio.timeout(provider.spec.timeouts.firstByte):
                    exchange = await provider.open(
                        op, body, route.model, call.stream, call.request_id
                    )
                    try:
                        if call.stream:
                            batches = exchange.batches()
                            return route, exchange, batches, await anext(batches)
                        return route, exchange, None, await exchange.read()
                    except BaseException:
                        await exchange.aclose()
                        raise
            except (UpstreamFailure, TimeoutError, StopAsyncIteration, aiohttp.ClientError) as exc:
                provider.inflight -= 1
                self.pool.release_if_idle(provider)
                last = failures[id(route)] = _failure(exc)
                self.metrics.upstream_errors.labels(provider.name, last.metric_reason).inc()
                log.warning(
                    "attempt %d of request %s on %s (%s) failed: %s",
                    call.attempts,
                    call.request_id,
                    provider.name,
                    route.model,
                    last.message,
                )
                if not last.retryable:
                    raise client_error(last) from None
            except BaseException:
                provider.inflight -= 1
                self.pool.release_if_idle(provider)
                raise
        raise exhausted(last, call)

    def _account(self, call: Call, entry: ModelEntry, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        call.input_tokens = int(usage.get("prompt_tokens") or 0)
        call.output_tokens = int(usage.get("completion_tokens") or 0)
        call.cost = cost(entry.pricing, call.input_tokens, call.output_tokens)

    async def _respond(
        self, call: Call, entry: ModelEntry, data: bytes, send: Send, convert: bool
    ) -> None:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise APIError(
                502,
                "The upstream answered with invalid JSON.",
                type="server_error",
                code="upstream_error",
            ) from None
        if isinstance(parsed, dict):
            self._account(call, entry, parsed.get("usage"))
            if convert:
                data = orjson.dumps(completion_response(parsed))
        call.status = 200
        call.finished = True
        await send_bytes(send, 200, data, JSON_HEADERS)

    def _events(
        self, call: Call, entry: ModelEntry, batch: list[bytes], wants_usage: bool, convert: bool
    ) -> tuple[bytes, bool]:
        """The bytes to send for one batch of upstream events, and whether [DONE] came."""
        parts: list[bytes] = []
        for payload in batch:
            if payload == DONE:
                parts.append(_STREAM_END)
                return b"".join(parts), True
            chunk: dict[str, Any] | None = None
            if _USAGE.search(payload):
                chunk = orjson.loads(payload)
                self._account(call, entry, chunk.get("usage"))
                if not chunk.get("choices") and not wants_usage:
                    continue  # usage was asked for on the client's behalf: not its to see
            if convert:
                converted = completion_chunk(chunk if chunk is not None else orjson.loads(payload))
                if converted is not None:
                    parts.append(b"data: " + orjson.dumps(converted) + b"\n\n")
            else:
                parts.append(b"data: " + payload + b"\n\n")
        return b"".join(parts), False

    async def _relay(
        self,
        call: Call,
        entry: ModelEntry,
        batches: AsyncIterator[list[bytes]],
        batch: list[bytes],
        send: Send,
        wants_usage: bool,
        convert: bool,
        route: Route,
    ) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        call.status = 200
        loop = asyncio.get_running_loop()
        idle = route.provider.spec.timeouts.idle
        try:
            async with asyncio.timeout(None) as deadline:
                while True:
                    out, done = self._events(call, entry, batch, wants_usage, convert)
                    if done:
                        call.finished = True
                        await send({"type": "http.response.body", "body": out})
                        return
                    if out:
                        if call.ttft is None:
                            call.ttft = loop.time() - call.started
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                    deadline.reschedule(loop.time() + idle)
                    try:
                        batch = await anext(batches)
                    except StopAsyncIteration:
                        raise UpstreamFailure(
                            FailureReason.protocol, "the stream ended without [DONE]"
                        ) from None
        except (UpstreamFailure, TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            failure = _failure(exc)
            self.metrics.upstream_errors.labels(route.provider.name, failure.metric_reason).inc()
            log.warning("stream of request %s broke: %s", call.request_id, failure.message)
            call.finished = True
            await send({"type": "http.response.body", "body": _mid_stream_error(exc)})
