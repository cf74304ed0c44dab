"""HTTP plumbing shared by the adapters that call a remote API.

One long-lived aiohttp session per provider, created lazily inside the serving
loop: aiohttp's client measured about 7x less CPU per request than httpx2's on
this hot path (bench/README.md), and a pool without a connection cap keeps
hundreds of concurrent streams from queueing behind each other.
"""

from __future__ import annotations

import email.utils
import math
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson

from ..resources import LLMProviderSpec
from .base import Exchange, FailureReason, Headers, Operation, Provider, UpstreamFailure
from .sse import SSEError, SSEParser

MAX_ERROR_BODY = 64 * 1024

EventFilter = Callable[[list[bytes]], list[bytes]]


def _seconds(value: str, scale: float = 1.0) -> float | None:
    try:
        seconds = float(value) * scale
    except ValueError:
        return None
    # float() takes "inf" and "nan": an upstream's header must not become our arithmetic.
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def retry_after_seconds(headers: Any) -> float | None:
    """`retry-after-ms` (Azure, OpenAI) or `retry-after` (seconds or an HTTP date)."""
    if (ms := headers.get("retry-after-ms")) is not None and (
        seconds := _seconds(ms, 1 / 1000)
    ) is not None:
        return seconds
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _seconds(value)) is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def upstream_error_object(body: bytes) -> dict[str, Any] | None:
    """The `error` object of an OpenAI-style error body, if that is what it is."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return error
    if isinstance(error, str):  # some OpenAI-compatible servers send a bare string
        return {"message": error}
    return None


class HTTPExchange(Exchange):
    __slots__ = ("_filter", "_response")

    def __init__(self, response: aiohttp.ClientResponse, event_filter: EventFilter | None) -> None:
        self._response = response
        self._filter = event_filter

    async def read(self) -> bytes:
        return await self._response.read()

    async def batches(self) -> AsyncIterator[list[bytes]]:
        parser = SSEParser()
        event_filter = self._filter
        try:
            async for chunk in self._response.content.iter_any():
                events = parser.feed(chunk)
                if event_filter is not None and events:
                    events = event_filter(events)
                if events:
                    yield events
        except SSEError as exc:
            raise UpstreamFailure(FailureReason.protocol, str(exc)) from None

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # back to the pool
        else:
            self._response.close()  # abandoned mid-body: the upstream must see the close


class HTTPProvider(Provider):
    """An adapter that speaks HTTP to its backend."""

    def __init__(self, name: str, spec: LLMProviderSpec, api_key: str | None) -> None:
        super().__init__(name, spec)
        self._api_key = api_key
        self._session: aiohttp.ClientSession | None = None

    @abstractmethod
    def url(self, op: Operation, model: str) -> str: ...

    @abstractmethod
    def headers(self, forward: Headers) -> dict[str, str]:
        """The upstream request's headers: content type, credentials and `forward`."""

    @abstractmethod
    def payload(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> bytes: ...

    def event_filter(self) -> EventFilter | None:
        """A per-exchange rewrite of stream payloads, for backends with quirks."""
        return None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeouts = self.spec.timeouts
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30),
                # Whole-request limits are the proxy's (first byte, idle gap): here only connect.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect),
                raise_for_status=False,
            )
        return self._session

    async def open(
        self, op: Operation, body: dict[str, Any], model: str, stream: bool, forward: Headers
    ) -> Exchange:
        try:
            response = await self.session().post(
                self.url(op, model),
                data=self.payload(op, body, model, stream),
                headers=self.headers(forward),
            )
        except aiohttp.ServerTimeoutError as exc:
            raise UpstreamFailure(FailureReason.timeout, f"connect timeout: {exc}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(FailureReason.connect, f"{type(exc).__name__}: {exc}") from None
        if response.status < 400:
            return HTTPExchange(response, self.event_filter() if stream else None)
        try:
            raw = await response.content.read(MAX_ERROR_BODY)
        except aiohttp.ClientError:
            raw = b""
        finally:
            response.release()
        error = upstream_error_object(raw)
        message = (
            str(error.get("message")) if error else f"upstream answered HTTP {response.status}"
        )
        raise UpstreamFailure(
            FailureReason.status,
            message,
            status=response.status,
            retry_after=retry_after_seconds(response.headers),
            error=error,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
