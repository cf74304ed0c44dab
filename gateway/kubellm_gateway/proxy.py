"""The pipeline after authorization: pick a backend, retry, fall back, relay, account.

Retries and fallbacks happen only before the first byte reaches the client: a
stream's response starts once its first upstream event is in hand, so an
upstream that fails before that is still retried elsewhere.

What goes upstream and what the client gets back is a codec's business (codecs.py):
the pipeline itself never looks inside a payload.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson

from .asgi import JSON_HEADERS, SSE_HEADERS, Send, send_bytes
from .codecs import Codec, CodecChoice
from .errors import APIError, no_backend
from .providers.base import Exchange, FailureReason, UpstreamFailure
from .providers.pool import ProviderPool
from .resources import Pricing, RetrySpec
from .routing import ModelEntry, Route
from .telemetry.metrics import Call, Metrics
from .telemetry.tracing import AttemptTrace, Unsampled

log = logging.getLogger(__name__)


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
    # The gateway already retried (or retrying cannot help): SDKs that retry on their own
    # should not multiply it.
    headers = {"x-should-retry": "false"} if call.attempts > 1 or failure.final else {}
    if failure.retry_after is not None and failure.status in (429, 529):
        headers["retry-after"] = str(math.ceil(failure.retry_after))
    if failure.status == 429:
        return APIError(
            429,
            f"Upstream rate limit: {failure.message}",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if failure.status == 529:  # Anthropic's "overloaded": a 503 in every other API
        return APIError(
            503,
            f"Upstream overloaded: {failure.message}",
            type="server_error",
            code="upstream_overloaded",
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


def _stream_error(exc: BaseException) -> APIError:
    """What a client is told when the stream breaks after its response started."""
    if isinstance(exc, TimeoutError):
        return APIError(
            504,
            "The upstream went silent mid-stream.",
            type="server_error",
            code="upstream_timeout",
        )
    if isinstance(exc, UpstreamFailure) and exc.error is not None:
        return client_error(exc)  # the upstream's own words (an Anthropic `error` event)
    return APIError(
        502, f"The upstream stream broke: {exc}", type="server_error", code="upstream_error"
    )


def estimate(call: Call) -> None:
    """Tokens for a stream cut before its usage arrived (the client left, or the upstream
    broke). The provider bills what it generated, and a disconnect must not be a way around
    token limits: a count still missing becomes a token per relayed event (OpenAI-style
    streams carry about one each) or one per 4 bytes of the request, rather than nothing.
    Per count, as Anthropic streams report input first and output only at the end. The
    access log says so."""
    if not call.events:
        return  # not a stream, or nothing relayed
    if not call.input_tokens:
        call.input_tokens = call.bytes_in // 4
        call.tokens_estimated = True
    if not call.output_tokens:
        call.output_tokens = call.events
        call.tokens_estimated = True


class Proxy:
    def __init__(self, pool: ProviderPool, metrics: Metrics) -> None:
        self.pool = pool
        self.metrics = metrics

    async def serve(
        self,
        call: Call,
        body: dict[str, Any],
        entry: ModelEntry,
        codecs: CodecChoice,
        send: Send,
    ) -> None:
        route, codec, exchange, batches, first, attempt = await self._open(
            call, entry, codecs, body
        )
        provider = route.provider
        try:
            if batches is not None:
                assert isinstance(first, list)
                await self._relay(call, codec, batches, first, send, route)
            else:
                assert isinstance(first, bytes)
                await self._respond(call, codec, first, send)
        finally:
            estimate(call)
            call.cost = cost(entry.pricing, call.input_tokens, call.output_tokens)
            await exchange.aclose()
            provider.inflight -= 1
            self.pool.release_if_idle(provider)
            if attempt is not None:
                attempt.end(call.error)

    async def _open(
        self, call: Call, entry: ModelEntry, codecs: CodecChoice, body: dict[str, Any]
    ) -> tuple[
        Route,
        Codec,
        Exchange,
        AsyncIterator[list[bytes]] | None,
        list[bytes] | bytes,
        AttemptTrace | Unsampled | None,
    ]:
        failures: dict[int, UpstreamFailure] = {}
        last: UpstreamFailure | None = None
        for route, retry_round in plan(entry):
            provider = route.provider
            if retry_round:
                previous = failures.get(id(route))
                if previous is not None and previous.final:
                    continue
                retry_after = previous.retry_after if previous is not None else None
                delay = backoff(provider.spec.retry, retry_round, retry_after)
                if delay is None:
                    continue
                await asyncio.sleep(delay)
            codec = codecs(provider)
            upstream_body = codec.request(body)  # a 400 here is the client's, not an attempt
            call.attempts += 1
            call.provider = provider.name
            forward = {"x-request-id": call.request_id, **codec.forward()}
            attempt = None
            if call.trace is not None:
                attempt = call.trace.attempt(provider.spec.type.value, provider.name, route.model)
                forward.update(attempt.headers())
            if call.overhead is None:
                call.overhead = asyncio.get_running_loop().time() - call.started
            provider.inflight += 1
            try:
                async with asyncio.timeout(provider.spec.timeouts.firstByte):
                    exchange = await provider.open(
                        codec.op, upstream_body, route.model, call.stream, forward
                    )
                    try:
                        if call.stream:
                            batches = exchange.batches()
                            first = await anext(batches)
                            return route, codec, exchange, batches, first, attempt
                        return route, codec, exchange, None, await exchange.read(), attempt
                    except BaseException:
                        await exchange.aclose()
                        raise
            except (UpstreamFailure, TimeoutError, StopAsyncIteration, aiohttp.ClientError) as exc:
                provider.inflight -= 1
                self.pool.release_if_idle(provider)
                last = failures[id(route)] = _failure(exc)
                if attempt is not None:
                    attempt.end(last.metric_reason)
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
                if attempt is not None:
                    attempt.end("cancelled")
                raise
        raise exhausted(last, call)

    async def _respond(self, call: Call, codec: Codec, data: bytes, send: Send) -> None:
        out = codec.response(data)
        call.status = 200
        call.finished = True
        await send_bytes(send, 200, out, JSON_HEADERS)

    async def _relay(
        self,
        call: Call,
        codec: Codec,
        batches: AsyncIterator[list[bytes]],
        batch: list[bytes],
        send: Send,
        route: Route,
    ) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        call.status = 200
        loop = asyncio.get_running_loop()
        idle = route.provider.spec.timeouts.idle
        try:
            async with asyncio.timeout(None) as deadline:
                while True:
                    out, done = codec.events(batch)
                    call.events += len(batch)
                    # Before the end check: a short stream can arrive in one read.
                    if out and call.ttft is None:
                        call.ttft = loop.time() - call.started
                        if call.trace is not None:
                            call.trace.first_token()
                    if done:
                        call.finished = True
                        await send({"type": "http.response.body", "body": out})
                        return
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                    deadline.reschedule(loop.time() + idle)
                    try:
                        batch = await anext(batches)
                    except StopAsyncIteration:
                        raise UpstreamFailure(
                            FailureReason.protocol, "the stream ended before its end event"
                        ) from None
        except (UpstreamFailure, TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            failure = _failure(exc)
            self.metrics.upstream_errors.labels(route.provider.name, failure.metric_reason).inc()
            log.warning("stream of request %s broke: %s", call.request_id, failure.message)
            call.finished = True
            error = codec.error_event(_stream_error(exc))
            await send({"type": "http.response.body", "body": error})
