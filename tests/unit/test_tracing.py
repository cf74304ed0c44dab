"""Span tree and GenAI attributes of telemetry.tracing, with the SDK's in-memory exporter;
the OTLP/HTTP JSON exporter against a fake collector on 127.0.0.1."""

from __future__ import annotations

import gzip
import math
import socket
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanKind,
    Status,
    StatusCode,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kubellm_gateway.telemetry.metrics import Call
from kubellm_gateway.telemetry.otlp_json import (
    ExportConfig,
    OTLPJSONSpanExporter,
    _any_value,
    encode,
)
from kubellm_gateway.telemetry.tracing import (
    AttemptTrace,
    Tracing,
    otlp_provider,
    span_exporter,
    wanted,
)
from tests.fakes.otlp import CLIENT, PROTOBUF, SERVER, FakeCollector, decode
from tests.support.tls import PKI, make_pki

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01".encode()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


def test_off_means_no_trace() -> None:
    assert Tracing(None).request([], "chat", "rid") is None


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (False, {}, False),
        (True, {}, True),
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        (False, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x"}, True),
        (False, {"OTEL_TRACES_EXPORTER": "otlp"}, True),
        (False, {"OTEL_TRACES_EXPORTER": "none"}, False),
        (True, {"OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_wanted(flag: bool, env: dict[str, str], expected: bool) -> None:
    assert wanted(flag, env) is expected


def test_span_tree_attributes_and_propagation(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    trace = tracing.request([(b"traceparent", TRACEPARENT)], "chat", "rid-1")
    assert trace is not None
    failed = trace.attempt("AzureOpenAI", "default/azure", "gpt-4o-prod")
    failed.end(error_type="timeout")
    second = trace.attempt("OpenAI", "default/openai", "gpt-4o")
    sent = second.headers()["traceparent"]
    second.end()
    trace.first_token()
    trace.finish(
        Call(
            "chat", "rid-1", model="gpt-4o", status=200, input_tokens=12, output_tokens=34,
            response_model="gpt-4o-2024-08-06",
        )
    )  # fmt: skip

    spans = {s.name + "/" + s.kind.name: s for s in exporter.get_finished_spans()}
    server = spans["chat gpt-4o/SERVER"]
    attempts = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(attempts) == 2, "every attempt, retries and fallbacks included, is a span"
    # The caller's trace continues through the gateway and on to the upstream.
    assert f"{server.context.trace_id:032x}" == PARENT_TRACE
    assert server.parent is not None and f"{server.parent.span_id:016x}" == PARENT_SPAN
    assert all(
        a.parent is not None and a.parent.span_id == server.context.span_id for a in attempts
    )
    assert sent.split("-")[1] == PARENT_TRACE
    assert sent.split("-")[2] == f"{attempts[1].context.span_id:016x}"

    assert server.attributes is not None
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.request.model"] == "gpt-4o"
    assert server.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert server.attributes["gen_ai.usage.input_tokens"] == 12
    assert server.attributes["gen_ai.usage.output_tokens"] == 34
    assert [e.name for e in server.events] == ["gen_ai.first_token"]
    assert attempts[0].attributes is not None and attempts[1].attributes is not None
    assert attempts[0].attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert attempts[0].attributes["error.type"] == "timeout"
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].attributes["gen_ai.provider.name"] == "openai"


def test_server_errors_mark_the_span(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    trace = tracing.request([], "completions", "rid-2")
    assert trace is not None
    trace.finish(Call("completions", "rid-2", status=502, error="upstream_error"))
    (span,) = exporter.get_finished_spans()
    assert span.name == "text_completion"
    assert span.parent is None
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "upstream_error"


def test_unsampled_requests_make_no_spans_but_still_propagate(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    trace = tracing.request([], "chat", "rid-3")
    assert trace is not None
    first = trace.attempt("OpenAI", "default/openai", "gpt-4o")
    version, trace_id, span_id, flags = first.headers()["traceparent"].split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
    assert int(trace_id, 16) and int(span_id, 16)
    assert int(flags, 16) & 1 == 0  # the upstream learns the trace, flagged unsampled
    first.end("timeout")
    retry = trace.attempt("OpenAI", "default/openai", "gpt-4o")
    assert retry.headers() == first.headers(), "every attempt names the request's span"
    retry.end()
    trace.first_token()
    trace.finish(Call("chat", "rid-3", model="gpt-4o", status=200, input_tokens=1, output_tokens=2))
    other = tracing.request([], "chat", "rid-4")
    assert other is not None
    other_attempt = other.attempt("OpenAI", "default/openai", "gpt-4o")
    assert other_attempt.headers()["traceparent"].split("-")[1] != trace_id
    # A caller's unsampled trace goes on, unsampled, under its own id.
    unsampled_parent = f"00-{PARENT_TRACE}-{PARENT_SPAN}-00".encode()
    child = tracing.request([(b"traceparent", unsampled_parent)], "chat", "rid-5")
    assert child is not None
    sent = child.attempt("OpenAI", "default/openai", "gpt-4o").headers()["traceparent"]
    assert sent.split("-")[1] == PARENT_TRACE and sent.split("-")[3] == "00"
    assert exporter.get_finished_spans() == ()


def test_sampled_headers_match_the_w3c_propagator(tracing: Tracing) -> None:
    # Formatted directly from the span context: the same bytes the SDK's propagator writes.
    state = b"vendor=abc,other=1"
    trace = tracing.request([(b"traceparent", TRACEPARENT), (b"tracestate", state)], "chat", "r")
    assert trace is not None
    attempt = trace.attempt("OpenAI", "default/openai", "gpt-4o")
    assert isinstance(attempt, AttemptTrace)
    expected: dict[str, str] = {}
    context = set_span_in_context(NonRecordingSpan(attempt.context))
    TraceContextTextMapPropagator().inject(expected, context)
    assert attempt.headers() == expected
    assert expected["tracestate"] == state.decode()


# The exporter: protocol choice, configuration, JSON encoding, sending.


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, OTLPJSONSpanExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, OTLPJSONSpanExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, OTLPSpanExporter),
        # The signal's own variable wins over the general one.
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            OTLPSpanExporter,
        ),
    ],
)
def test_protocol_chooses_the_exporter(env: dict[str, str], kind: type[SpanExporter]) -> None:
    chosen = span_exporter(env)
    assert type(chosen) is kind
    chosen.shutdown()


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_grpc_is_refused_at_startup_naming_the_variable(variable: str) -> None:
    with pytest.raises(ValueError, match=f"{variable}=grpc.*not installed"):
        otlp_provider(env={variable: "grpc"})


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL='thrift'"):
        span_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({}, "http://localhost:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c/otlp/"}, "https://c/otlp/v1/traces"),
        # The signal's own endpoint is used as it is, and wins.
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://own:9/ingest",
            },
            "http://own:9/ingest",
        ),
    ],
)
def test_endpoint_precedence(env: dict[str, str], endpoint: str) -> None:
    assert ExportConfig.from_env(env).endpoint == endpoint


def test_headers_timeout_and_compression_from_the_environment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ExportConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "x-general=1",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Api-Key=s3cr%3Dt%2C1 , x-b=two==,broken,",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
        }
    )
    # The traces variable replaces the general one; values are URL-decoded.
    assert config.headers == {"api-key": "s3cr=t,1", "x-b": "two=="}
    assert config.timeout == 2.5  # milliseconds in the variable
    assert config.gzip
    assert "OTEL_EXPORTER_OTLP_TRACES_HEADERS: entry 3 is not key=value" in caplog.text
    assert "s3cr" not in caplog.text
    defaults = ExportConfig.from_env({})
    assert (defaults.headers, defaults.timeout, defaults.gzip) == ({}, 10.0, False)
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_COMPRESSION='br'"):
        ExportConfig.from_env({"OTEL_EXPORTER_OTLP_COMPRESSION": "br"})
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"):
        ExportConfig.from_env({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "10s"})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_tls_files_from_the_environment(pki: PKI, tmp_path: Path) -> None:
    config = ExportConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca),
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": str(pki.client_cert),
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": str(pki.client_key),
        }
    )
    assert (config.certificate, config.client_certificate, config.client_key) == (
        str(pki.ca),
        str(pki.client_cert),
        str(pki.client_key),
    )
    missing = str(tmp_path / "nowhere.pem")
    with pytest.raises(ValueError, match=r"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE='.*nowhere"):
        ExportConfig.from_env({"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": missing})
    with pytest.raises(ValueError, match="go together"):
        ExportConfig.from_env({"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pki.client_cert)})


def test_https_to_a_collector_with_a_private_ca(pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    with FakeCollector(tls=pki) as collector:
        assert collector.url.startswith("https://")
        trusting = json_exporter(collector, certificate=str(pki.ca))
        assert trusting.export(finished_spans()) is SpanExportResult.SUCCESS
        trusting.shutdown()
        # The system's CAs do not know this one: refused, and said why.
        system = json_exporter(collector, timeout=0.2)
        assert system.export(finished_spans()) is SpanExportResult.FAILURE
        system.shutdown()
    assert len(collector.requests) == 1
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_mutual_tls_sends_the_client_certificate(pki: PKI) -> None:
    with FakeCollector(tls=pki, client_certs=True) as collector:
        anonymous = json_exporter(collector, certificate=str(pki.ca), timeout=0.2)
        assert anonymous.export(finished_spans()) is SpanExportResult.FAILURE
        anonymous.shutdown()
        known = json_exporter(
            collector,
            certificate=str(pki.ca),
            client_certificate=str(pki.client_cert),
            client_key=str(pki.client_key),
        )
        assert known.export(finished_spans()) is SpanExportResult.SUCCESS
        known.shutdown()
    assert len(collector.requests) == 1


def finished_spans() -> tuple[ReadableSpan, ...]:
    """A server span continuing a remote parent and, under it, a failed client span."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("kubellm", "1.2")
    parent = TraceContextTextMapPropagator().extract({"traceparent": TRACEPARENT.decode()})
    server = tracer.start_span(
        "chat m",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"s": "x", "i": 2**40, "f": 0.5, "b": True, "a": ("p", "q"), "n": (1, 2)},
    )
    client = tracer.start_span("chat m", context=set_span_in_context(server), kind=SpanKind.CLIENT)
    client.add_event("gen_ai.first_token", {"at": 3})
    client.set_status(Status(StatusCode.ERROR, "boom"))
    client.end()
    server.end()
    return memory.get_finished_spans()


def test_json_encoding_follows_the_otlp_json_mapping() -> None:
    spans = finished_spans()
    body = orjson.loads(encode(spans))
    (resource_spans,) = body["resourceSpans"]
    resource = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "svc"}
    (scope_spans,) = resource_spans["scopeSpans"]
    assert scope_spans["scope"] == {"name": "kubellm", "version": "1.2"}
    client, server = scope_spans["spans"]
    assert server["traceId"] == PARENT_TRACE and server["parentSpanId"] == PARENT_SPAN
    assert client["parentSpanId"] == server["spanId"] and len(client["spanId"]) == 16
    assert (server["kind"], client["kind"]) == (2, 3)  # enums as integers
    assert server["flags"] == 0x300 and client["flags"] == 0x100  # parent remote, or not
    assert server["startTimeUnixNano"] == str(spans[1].start_time)  # int64: a string
    assert {a["key"]: a["value"] for a in server["attributes"]} == {
        "s": {"stringValue": "x"},
        "i": {"intValue": str(2**40)},
        "f": {"doubleValue": 0.5},
        "b": {"boolValue": True},
        "a": {"arrayValue": {"values": [{"stringValue": "p"}, {"stringValue": "q"}]}},
        "n": {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}]}},
    }
    (event,) = client["events"]
    assert event["name"] == "gen_ai.first_token"
    assert event["timeUnixNano"] == str(spans[0].events[0].timestamp)
    assert event["attributes"] == [{"key": "at", "value": {"intValue": "3"}}]
    assert client["status"] == {"code": 2, "message": "boom"}
    assert server["status"] == {}


def test_json_equals_the_protobuf_exporters_message_in_json() -> None:
    # The SDK's protobuf, read back and written by the protobuf library's JSON mapping
    # (which OTLP JSON follows, ids aside): every field, every type, the same.
    spans = finished_spans()
    protobuf = encode_spans(spans).SerializeToString()
    assert orjson.loads(encode(spans)) == decode(PROTOBUF, protobuf)


def test_non_finite_doubles_are_spelled_as_proto3_json_does() -> None:
    assert [_any_value(v) for v in (math.nan, math.inf, -math.inf)] == [
        {"doubleValue": "NaN"},
        {"doubleValue": "Infinity"},
        {"doubleValue": "-Infinity"},
    ]


def json_exporter(collector: FakeCollector, **config: Any) -> OTLPJSONSpanExporter:
    return OTLPJSONSpanExporter(
        ExportConfig(endpoint=collector.url + "/v1/traces", **config), backoff=0.01
    )


def test_export_posts_json_with_the_configured_headers(collector: FakeCollector) -> None:
    sender = json_exporter(collector, headers={"api-key": "k1"})
    assert sender.export(finished_spans()) is SpanExportResult.SUCCESS
    assert sender.export(finished_spans()) is SpanExportResult.SUCCESS
    sender.shutdown()
    first, second = collector.requests
    assert first.client == second.client  # one kept-alive connection
    for request in collector.requests:
        assert request.headers["content-type"] == "application/json"
        assert request.headers["api-key"] == "k1"
        assert "content-encoding" not in request.headers
        assert orjson.loads(request.body)["resourceSpans"]
    assert [s.name for s in collector.spans] == ["chat m"] * 4
    assert sender.export(finished_spans()) is SpanExportResult.FAILURE  # after shutdown


def test_gzip_compresses_and_the_collector_decompresses(collector: FakeCollector) -> None:
    sender = json_exporter(collector, gzip=True)
    spans = finished_spans()
    assert sender.export(spans) is SpanExportResult.SUCCESS
    sender.shutdown()
    (request,) = collector.requests
    assert request.headers["content-encoding"] == "gzip"
    assert gzip.decompress(request.body) == encode(spans)
    assert len(request.body) < len(encode(spans))
    assert {s.kind for s in collector.spans} == {SERVER, CLIENT}


@pytest.mark.parametrize("answer", [503, 429])
def test_retryable_answers_are_retried(collector: FakeCollector, answer: int) -> None:
    collector.answers = [(answer, {}), (answer, {"retry-after": "0"})]
    sender = json_exporter(collector)
    assert sender.export(finished_spans()) is SpanExportResult.SUCCESS
    sender.shutdown()
    assert len(collector.requests) == 3
    assert len(collector.spans) == 2  # delivered once, by the third request


def test_other_answers_drop_the_batch_once_logged_without_secrets(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    collector.answers = [(400, {}), (400, {})]
    sender = json_exporter(collector, headers={"authorization": "Bearer s3cret"})
    assert sender.export(finished_spans()) is SpanExportResult.FAILURE
    assert sender.export(finished_spans()) is SpanExportResult.FAILURE
    sender.shutdown()
    assert len(collector.requests) == 2  # one each: a 400 is not retried
    warnings = [r.getMessage() for r in caplog.records if "answered 400" in r.getMessage()]
    assert len(warnings) == 1
    assert "s3cret" not in caplog.text


def test_retries_stop_at_the_timeout(collector: FakeCollector) -> None:
    collector.answers = [(503, {})] * 100
    sender = json_exporter(collector, timeout=0.3)
    started = time.monotonic()
    assert sender.export(finished_spans()) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 1
    assert 2 <= len(collector.requests) < 100
    sender.shutdown()


def test_connection_errors_are_retried() -> None:
    # Its port is chosen but nothing listens yet: the collector comes up while the
    # exporter backs off.
    collector = FakeCollector()
    sender = json_exporter(collector, timeout=5)
    result: list[SpanExportResult] = []
    worker = threading.Thread(target=lambda: result.append(sender.export(finished_spans())))
    worker.start()
    time.sleep(0.2)
    with collector:
        worker.join(5)
    sender.shutdown()
    assert result == [SpanExportResult.SUCCESS]
    assert len(collector.spans) == 2


def test_a_connection_the_collector_closed_is_replaced_at_once(collector: FakeCollector) -> None:
    sender = OTLPJSONSpanExporter(ExportConfig(endpoint=collector.url + "/v1/traces"), backoff=5.0)
    assert sender.export(finished_spans()) is SpanExportResult.SUCCESS
    # As when the collector drops an idle kept-alive connection between two batches.
    # No public way to age a connection: the test reaches in.
    connection = sender._connection
    assert connection is not None and connection.sock is not None
    connection.sock.shutdown(socket.SHUT_RDWR)
    started = time.monotonic()
    assert sender.export(finished_spans()) is SpanExportResult.SUCCESS
    assert time.monotonic() - started < 1  # no 5 s backoff
    sender.shutdown()
    first, second = collector.requests
    assert first.client != second.client


def test_a_kept_connection_that_times_out_fails_the_export_within_its_timeout() -> None:
    # A collector that answers the first request and then hangs on the kept connection:
    # the time out uses up the export's timeout, and no reconnect is tried without time.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            connection.recv(65536)  # the second request: read, never answered
            time.sleep(0.5)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    sender = OTLPJSONSpanExporter(
        ExportConfig(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=0.3), backoff=0.01
    )
    try:
        assert sender.export(finished_spans()) is SpanExportResult.SUCCESS
        started = time.monotonic()
        assert sender.export(finished_spans()) is SpanExportResult.FAILURE
        assert time.monotonic() - started < 1
    finally:
        sender.shutdown()
        listener.close()
        server.join(2)


@pytest.mark.parametrize(
    "header",
    [
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        b"zz-not-a-traceparent",
        b"",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(
    tracing: Tracing, exporter: InMemorySpanExporter, header: bytes
) -> None:
    trace = tracing.request(
        [(b"traceparent", header), (b"tracestate", b"vendor=abc")], "chat", "rid-6"
    )
    assert trace is not None
    sent = trace.attempt("OpenAI", "default/openai", "gpt-4o").headers()
    trace.finish(Call("chat", "rid-6", status=200))
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert span.context is not None and span.context.trace_id != 0
    assert sent["traceparent"].split("-")[1] == f"{span.context.trace_id:032x}"
    assert "tracestate" not in sent  # a state without a valid parent is not carried on
