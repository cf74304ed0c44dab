"""Span tree and GenAI attributes of telemetry.tracing, with the SDK's in-memory exporter."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from kubellm_gateway.telemetry.tracing import Tracing, wanted

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
    trace.model("gpt-4o")
    failed = trace.attempt("AzureOpenAI", "default/azure", "gpt-4o-prod")
    failed.end(error_type="timeout")
    second = trace.attempt("OpenAI", "default/openai", "gpt-4o")
    sent = second.headers()["traceparent"]
    second.end()
    trace.first_token()
    trace.finish(200, 12, 34, "gpt-4o-2024-08-06", None)

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
    trace.finish(502, 0, 0, None, "upstream_error")
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
    trace = Tracing(provider).request([], "chat", "rid-3")
    assert trace is not None
    attempt = trace.attempt("OpenAI", "default/openai", "gpt-4o")
    version, trace_id, span_id, flags = attempt.headers()["traceparent"].split("-")
    assert version == "00"
    assert int(flags, 16) & 1 == 0  # the upstream learns the trace, flagged unsampled
    assert trace_id == f"{trace.span.get_span_context().trace_id:032x}"
    assert span_id == f"{trace.span.get_span_context().span_id:016x}"
    attempt.end("timeout")
    trace.finish(200, 1, 2, None, None)
    assert exporter.get_finished_spans() == ()
