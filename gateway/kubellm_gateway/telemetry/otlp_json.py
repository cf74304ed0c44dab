"""An OTLP/HTTP JSON span exporter: the SDK's spans, encoded with orjson, POSTed with the
standard library from the BatchSpanProcessor's worker thread.

Why not the SDK's protobuf exporter: it builds opentelemetry-proto message objects span
by span, 50-80 µs of CPU each, in the same process (and under the same GIL) as the
requests; encoding the same span to JSON costs a small fraction of that (README,
"Traces"). The JSON mapping is the OTLP specification's: lowerCamelCase names, trace and
span ids in hex, enums as numbers, 64-bit integers as decimal strings.

Configured by the standard variables, read as the SDK's exporter reads them, but the
timeout is in milliseconds as the current specification says. Header values (often a
collector's API key) are never logged.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import logging
import math
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, Status

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_TIMEOUT = 10.0  # seconds
# Worth retrying per the OTLP/HTTP specification; anything else drops the batch.
RETRYABLE = frozenset({429, 502, 503, 504})
# OTLP SpanFlags: the parent's is_remote is known, and whether it is remote.
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200

Json = dict[str, Any]


def _variable(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """The traces-specific variable, else the general one: (the name that was set, value)."""
    for variable in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = env.get(variable, "").strip()
        if value:
            return variable, value
    return None


def parse_headers(text: str, variable: str) -> dict[str, str]:
    """`key=value` pairs, comma-separated, URL-encoded (W3C Baggage style); a malformed
    one is skipped with a warning that names its position, never its value."""
    headers: dict[str, str] = {}
    for position, item in enumerate(text.split(","), 1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key).strip().lower()
        if not sep or not key:
            log.warning("%s: entry %d is not key=value; ignored", variable, position)
            continue
        headers[key] = unquote(value).strip()
    return headers


@dataclass(frozen=True)
class ExportConfig:
    endpoint: str = DEFAULT_ENDPOINT
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT  # seconds, for one export, retries included
    gzip: bool = False
    certificate: str | None = None  # CA bundle to trust instead of the system's, for https
    client_certificate: str | None = None  # PEM certificate and key for mutual TLS
    client_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ExportConfig:
        endpoint = DEFAULT_ENDPOINT
        if value := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
            endpoint = value  # the signal's own endpoint is taken as is
        elif value := env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
            endpoint = value.removesuffix("/") + "/v1/traces"
        headers: dict[str, str] = {}
        if found := _variable(env, "HEADERS"):
            headers = parse_headers(found[1], found[0])
        timeout = DEFAULT_TIMEOUT
        if found := _variable(env, "TIMEOUT"):
            try:
                timeout = float(found[1]) / 1000
            except ValueError:
                raise ValueError(f"{found[0]}={found[1]!r}: expected milliseconds") from None
        compressed = False
        if found := _variable(env, "COMPRESSION"):
            if found[1].lower() not in ("gzip", "none"):
                raise ValueError(f"{found[0]}={found[1]!r}: expected gzip or none")
            compressed = found[1].lower() == "gzip"
        files: dict[str, str | None] = {}
        for name in ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"):
            found = _variable(env, name)
            if found is not None and not Path(found[1]).is_file():
                raise ValueError(f"{found[0]}={found[1]!r}: no such file")
            files[name] = found[1] if found else None
        if bool(files["CLIENT_CERTIFICATE"]) != bool(files["CLIENT_KEY"]):
            raise ValueError(
                "OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE and ..._CLIENT_KEY go together"
            )
        return cls(
            endpoint,
            headers,
            timeout,
            compressed,
            files["CERTIFICATE"],
            files["CLIENT_CERTIFICATE"],
            files["CLIENT_KEY"],
        )


# Encoding: the OTLP JSON mapping of ExportTraceServiceRequest.


def _any_value(value: Any) -> Json:
    # bool before int: bool is an int.
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value if math.isfinite(value) else _non_finite(value)}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": _attributes(value)}}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    return {}  # None: an empty AnyValue


def _non_finite(value: float) -> str:
    # JSON has no NaN or infinities; proto3's JSON mapping spells them as strings.
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _attributes(attributes: Mapping[str, Any]) -> list[Json]:
    # Strings first, inline: most attributes are, and a call per value shows in profiles.
    # Keys then lookups: the SDK's attribute mappings iterate items() in Python, slower.
    return [
        {
            "key": k,
            "value": {"stringValue": v} if type(v := attributes[k]) is str else _any_value(v),
        }
        for k in attributes
    ]


def _flags(parent: SpanContext | None) -> int:
    return (
        _HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE
    )


def _span(span: ReadableSpan) -> Json:
    # Each property is read once: the SDK's build a new tuple or mappingproxy per read.
    context, parent, events, links = span.context, span.parent, span.events, span.links
    assert context is not None  # the SDK's finished spans always have one
    # Empty fields are left out, as proto3's JSON mapping does; the status is always
    # there, as the SDK's protobuf exporter always sets it.
    out: Json = {
        "traceId": f"{context.trace_id:032x}",
        "spanId": f"{context.span_id:016x}",
        "name": span.name,
        "kind": span.kind.value + 1,  # the SDK counts from INTERNAL, OTLP from UNSPECIFIED
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "status": _status(span.status),
        "flags": _flags(parent),
    }
    if attributes := span.attributes:
        out["attributes"] = _attributes(attributes)
    if context.trace_state:
        out["traceState"] = context.trace_state.to_header()
    if parent is not None:
        out["parentSpanId"] = f"{parent.span_id:016x}"
    if dropped := span.dropped_attributes:
        out["droppedAttributesCount"] = dropped
    if events:
        out["events"] = [
            _with_attributes(
                {"timeUnixNano": str(event.timestamp), "name": event.name}, event.attributes
            )
            for event in events
        ]
    if dropped := span.dropped_events:
        out["droppedEventsCount"] = dropped
    if links:
        out["links"] = [
            _with_attributes(
                {
                    "traceId": f"{link.context.trace_id:032x}",
                    "spanId": f"{link.context.span_id:016x}",
                    "flags": _flags(link.context),
                },
                link.attributes,
            )
            for link in links
        ]
    if dropped := span.dropped_links:
        out["droppedLinksCount"] = dropped
    return out


def _with_attributes(out: Json, attributes: Mapping[str, Any] | None) -> Json:
    if attributes:
        out["attributes"] = _attributes(attributes)
    return out


def _status(status: Status) -> Json:
    out: Json = {}
    if status.status_code.value:
        out["code"] = status.status_code.value
    if status.description:
        out["message"] = status.description
    return out


def _scope(scope: InstrumentationScope | None) -> Json:
    if scope is None:
        return {}
    out: Json = {"name": scope.name}
    if scope.version:
        out["version"] = scope.version
    return _with_attributes(out, scope.attributes)


def encode(spans: Iterable[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest in OTLP JSON: spans grouped by resource, then scope."""
    # Keyed by identity: a provider's spans share one Resource and one scope per tracer,
    # and hashing a Resource serializes its attributes.
    groups: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[Json]]]]]
    groups = {}
    for span in spans:
        resource, scopes = groups.setdefault(id(span.resource), (span.resource, {}))
        scope = span.instrumentation_scope
        scopes.setdefault(id(scope), (scope, []))[1].append(_span(span))
    resource_spans = []
    for resource, scopes in groups.values():
        scope_spans = []
        for scope, encoded in scopes.values():
            entry: Json = {"scope": _scope(scope), "spans": encoded}
            if scope is not None and scope.schema_url:
                entry["schemaUrl"] = scope.schema_url
            scope_spans.append(entry)
        group: Json = {
            "resource": _with_attributes({}, resource.attributes),
            "scopeSpans": scope_spans,
        }
        if resource.schema_url:
            group["schemaUrl"] = resource.schema_url
        resource_spans.append(group)
    return orjson.dumps({"resourceSpans": resource_spans})


# Sending.


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from Retry-After (a number of seconds, or an HTTP date); None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


class OTLPJSONSpanExporter(SpanExporter):
    """POSTs each batch to the collector over one kept-alive connection.

    `export` is called by the BatchSpanProcessor's worker, one call at a time; retries
    (429, 502, 503, 504, connection errors) back off exponentially from `backoff` seconds,
    or as Retry-After says, for as long as the timeout leaves.
    """

    def __init__(self, config: ExportConfig, *, backoff: float = 1.0) -> None:
        self.config = config
        self._backoff = backoff
        url = urlsplit(config.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"OTLP traces endpoint {config.endpoint!r} is not an http(s) URL")
        # Made once: reading the files here also refuses a bad certificate at startup.
        self._tls: ssl.SSLContext | None = None
        if url.scheme == "https":
            self._tls = ssl.create_default_context(cafile=config.certificate)
            if config.client_certificate:
                self._tls.load_cert_chain(config.client_certificate, config.client_key)
        self._host = url.hostname
        self._port = url.port
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        # Logged in place of the endpoint: the URL less any user:password in it.
        self._where = f"{url.scheme}://{url.netloc.rpartition('@')[2]}"
        self._headers = {
            **config.headers,
            "Content-Type": "application/json",
            **({"Content-Encoding": "gzip"} if config.gzip else {}),
        }
        self._connection: http.client.HTTPConnection | None = None
        self._closed = threading.Event()  # set by shutdown; also cuts a backoff short
        self._logged: set[str] = set()  # what failed already: each kind is logged once

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed.is_set():
            return SpanExportResult.FAILURE
        body = encode(spans)
        if self.config.gzip:
            # Level 6, zlib's own default: gzip's 9 took 11 µs a span against 5, for 2 % less.
            body = gzip.compress(body, compresslevel=6)
        return self._send(body, len(spans))

    def _send(self, body: bytes, count: int) -> SpanExportResult:
        deadline = time.monotonic() + self.config.timeout
        delay = self._backoff
        while True:
            remaining = deadline - time.monotonic()
            reused = self._connection is not None
            try:
                status, retry_after = self._post(body, remaining)
            except (OSError, http.client.HTTPException) as exc:
                self._disconnect()
                if reused and time.monotonic() < deadline:
                    # Most likely the collector closed the idle connection between two
                    # batches (uvicorn's keep-alive is 5 s, the batches' default delay
                    # too): a new connection at once, no backoff, if time is left (a
                    # socket refuses a timeout that is not positive).
                    continue
                self._once(type(exc).__name__, "cannot reach %s: %s", self._where, exc)
                status, retry_after = 0, None
            if 200 <= status < 300:
                return SpanExportResult.SUCCESS
            if status and status not in RETRYABLE:
                self._once(
                    str(status), "%s answered %d: %d spans dropped", self._where, status, count
                )
                return SpanExportResult.FAILURE
            wait = retry_after if retry_after is not None else delay
            if time.monotonic() + wait >= deadline or self._closed.wait(wait):
                self._once("gave up", "%s: gave up retrying; %d spans dropped", self._where, count)
                return SpanExportResult.FAILURE
            delay *= 2

    def _post(self, body: bytes, timeout: float) -> tuple[int, float | None]:
        connection = self._connection or self._connect()
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        connection.request("POST", self._path, body, self._headers)
        response = connection.getresponse()
        response.read()  # to the end, so that the connection can carry the next batch
        if response.will_close:
            self._disconnect()
        return response.status, _retry_after(response.getheader("Retry-After"), time.time())

    def _connect(self) -> http.client.HTTPConnection:
        factory: Callable[..., http.client.HTTPConnection] = http.client.HTTPConnection
        options: dict[str, Any] = {}
        if self._tls is not None:
            factory = http.client.HTTPSConnection
            options["context"] = self._tls
        self._connection = factory(self._host, self._port, timeout=self.config.timeout, **options)
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _once(self, kind: str, message: str, *args: object) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(message + " (logged once)", *args)

    def shutdown(self) -> None:
        self._closed.set()
        self._disconnect()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # nothing is held between exports
