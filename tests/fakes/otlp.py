"""A fake OpenTelemetry collector on 127.0.0.1: OTLP/HTTP in, protobuf or JSON, gzipped or
not, decoded into one shape; spans and requests kept, answers scriptable."""

from __future__ import annotations

import base64
import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

# protobuf ships no type stubs (types-protobuf is not a dependency).
from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.asgi_server import ThreadedServer, read_all
from tests.support.tls import PKI

Message = dict[str, Any]
# OTLP span kinds: 2 server, 3 client.
SERVER, CLIENT = 2, 3
PROTOBUF, JSON = "application/x-protobuf", "application/json"


@dataclass(frozen=True)
class Span:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: tuple[str, ...]
    error: bool


@dataclass(frozen=True)
class Received:
    """One export request as it arrived: headers (lower-case names), raw body, and the
    client's address (the same one for requests on one kept-alive connection)."""

    headers: dict[str, str]
    body: bytes
    client: tuple[str, int]


def _value(v: Message) -> Any:
    """An OTLP JSON AnyValue as Python: int64s arrive as decimal strings."""
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return next(iter(v.values()), None)


def _span(s: Message) -> Span:
    return Span(
        name=s["name"],
        kind=s["kind"],
        trace_id=s["traceId"],
        span_id=s["spanId"],
        parent_span_id=s.get("parentSpanId", ""),
        attributes={a["key"]: _value(a["value"]) for a in s.get("attributes", [])},
        events=tuple(e["name"] for e in s.get("events", [])),
        error=s.get("status", {}).get("code") == 2,
    )


def decode(content_type: str, body: bytes) -> Message:
    """An export request as OTLP JSON, whichever encoding it came in."""
    if content_type == JSON:
        decoded: Message = orjson.loads(body)
        return decoded
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    # The protobuf library's JSON mapping is the one OTLP JSON follows, but for ids: OTLP
    # writes them in hex, the generic mapping in base64.
    as_json: Message = MessageToDict(request, use_integers_for_enums=True)
    for rs in as_json.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in s:
                        s[name] = _hex(s[name])
    return as_json


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


class FakeCollector:
    def __init__(self, tls: PKI | None = None, client_certs: bool = False) -> None:
        self.spans: list[Span] = []
        self.requests: list[Received] = []
        # Statuses to answer, in turn (then 200): a retry test scripts 503s here.
        self.answers: list[tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._http = ThreadedServer(self, tls, client_certs)

    @property
    def url(self) -> str:
        return self._http.url

    def __enter__(self) -> FakeCollector:
        self._http.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.stop()

    def wait(self, predicate: Callable[[list[Span]], bool], timeout: float = 10) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            time.sleep(0.05)
        raise AssertionError(f"spans never matched; got {[s.name for s in self.spans]}")

    async def __call__(
        self, scope: Message, receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        body = await read_all(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self._lock:
            self.requests.append(Received(headers, body, tuple(scope["client"])))
            status, extra = self.answers.pop(0) if self.answers else (200, {})
        if scope["path"] == "/v1/traces" and status == 200:
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            content_type = headers.get("content-type", "")
            request = decode(content_type, body)
            with self._lock:
                self.spans.extend(
                    _span(s)
                    for rs in request.get("resourceSpans", [])
                    for ss in rs.get("scopeSpans", [])
                    for s in ss.get("spans", [])
                )
        else:
            content_type = JSON
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    *((k.encode(), v.encode()) for k, v in extra.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
