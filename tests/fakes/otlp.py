"""A fake OpenTelemetry collector on 127.0.0.1: OTLP/HTTP protobuf in, spans kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.asgi_server import ThreadedServer, read_all

Message = dict[str, Any]
# OTLP span kinds: 2 server, 3 client.
SERVER, CLIENT = 2, 3


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


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class FakeCollector:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self._http = ThreadedServer(self)

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
        if scope["path"] == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with self._lock:
                self.spans.extend(
                    Span(
                        name=s.name,
                        kind=s.kind,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        events=tuple(e.name for e in s.events),
                        error=s.status.code == 2,
                    )
                    for rs in request.resource_spans
                    for ss in rs.scope_spans
                    for s in ss.spans
                )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-protobuf")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
