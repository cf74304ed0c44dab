"""Small typed helpers over raw ASGI: the hot endpoints skip framework objects."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response

from .errors import APIError, bad_request, request_too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

JSON_HEADERS: RawHeaders = [(b"content-type", b"application/json")]
SSE_HEADERS: RawHeaders = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # nginx-based ingresses buffer responses unless told not to.
    (b"x-accel-buffering", b"no"),
]
REQUEST_ID_KEY = "kubellm.request_id"
SENT_KEY = "kubellm.sent"  # [bytes of response body sent so far], for the access log


class ClientGone(Exception):
    """The client disconnected before the request body arrived."""


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; 413 as soon as it is known to exceed `limit`."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise request_too_large(limit)
    parts: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise request_too_large(limit)
        parts.append(chunk)
        more = message.get("more_body", False)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise bad_request("The request body is empty; expected a JSON object.")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise bad_request("The request body must be a JSON object.")
    return value


def json_response(
    payload: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response for the framework-served endpoints (orjson, like the hot path)."""
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def encode_headers(pairs: Iterable[tuple[str, str]]) -> RawHeaders:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


async def send_bytes(
    send: Send, status: int, body: bytes, headers: RawHeaders = JSON_HEADERS
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    error: APIError,
    extra: Sequence[tuple[bytes, bytes]] = (),
    *,
    body: bytes | None = None,
) -> None:
    """The error response; `body` when the client's schema renders it (default OpenAI's)."""
    headers = [*JSON_HEADERS, *encode_headers(error.headers.items()), *extra]
    await send_bytes(send, error.status, error.body() if body is None else body, headers)


def _valid_request_id(value: bytes) -> bool:
    # Echo a caller's id only when it is short and printable: it ends up in logs and headers.
    return 0 < len(value) <= 128 and value.isascii() and value.decode().isprintable()


ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Edge:
    """The outermost ASGI layer: a request id for everything, and a fast lane.

    Every request gets an id (the caller's `x-request-id` when sane), returned in
    the response. POSTs to the inference paths go straight to their endpoints:
    going through the framework's middleware stack instead cost 0.03 ms of CPU per
    request and 6.7 KB per open stream (bench/README.md). Everything else,
    including other methods on those paths, goes to the framework.
    """

    def __init__(self, app: ASGIApp, fast_lane: Mapping[str, ASGIApp]) -> None:
        self.app = app
        self.fast_lane = dict(fast_lane)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, b"x-request-id")
        rid = (
            given
            if given is not None and _valid_request_id(given)
            else os.urandom(12).hex().encode()
        )
        scope[REQUEST_ID_KEY] = rid.decode()
        sent = scope[SENT_KEY] = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            else:
                sent[0] += len(message.get("body", b""))
            await send(message)

        endpoint = self.fast_lane.get(scope["path"]) if scope["method"] == "POST" else None
        await (endpoint or self.app)(scope, receive, send_with_id)
