"""OpenTelemetry traces, off unless asked for; then one server span per request and one
client span per upstream attempt, with GenAI semantic-convention attributes.

Off is the default and costs the hot path one `is None` check. The exporter is imported
only when tracing is on (RSS on top of the gateway's: 0.75 MiB for the JSON one, 1.6-1.9
MiB for the protobuf one).

On when `--otel` is given or the standard variables ask for it
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_TRACES_EXPORTER=otlp`), unless `OTEL_SDK_DISABLED=true`; the exporter reads the
rest of the standard variables itself. No prompt or completion text is ever recorded.

The SDK is the engine (sampler, ids, batching), but each of its calls costs
microseconds, so a request makes as few as it can (bench/README.md, "Observability"):
an unsampled request only asks the sampler, and a sampled one gives its attributes when
a span starts and in one call when it ends.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import (
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
# The parent of a request without `traceparent`: given explicitly, it spares the SDK three
# lookups of the ambient context (which the gateway never sets).
_ROOT = Context()
_ERROR = Status(StatusCode.ERROR)

# gen_ai.operation.name per operation (OpenTelemetry GenAI semantic conventions).
OPERATION_NAMES = {
    "chat": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "messages": "chat",
}
# gen_ai.provider.name per LLMProvider type.
PROVIDER_NAMES = {
    "OpenAI": "openai",
    "AzureOpenAI": "azure.ai.openai",
    "Anthropic": "anthropic",
    "Mock": "kubellm.mock",
}
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def wanted(flag: bool, env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return (
        flag
        or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        or bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        or env.get("OTEL_TRACES_EXPORTER", "").lower() == "otlp"
    )


def span_exporter(env: Mapping[str, str] = os.environ) -> SpanExporter:
    """The OTLP exporter for the protocol the standard variables name; http/json unset."""
    variable, protocol = next(
        ((name, env[name].strip().lower()) for name in PROTOCOL_VARIABLES if env.get(name)),
        ("", "http/json"),
    )
    # Imported here, not above: a gateway without tracing keeps the memory they cost.
    if protocol == "http/json":
        # Encoding to JSON costs a fraction of protobuf's per span (README, "Traces").
        from . import otlp_json  # noqa: PLC0415

        return otlp_json.OTLPJSONSpanExporter(otlp_json.ExportConfig.from_env(env))
    if protocol == "http/protobuf":
        # For collectors that take no JSON; this one reads the variables itself.
        from opentelemetry.exporter.otlp.proto.http import trace_exporter  # noqa: PLC0415

        return trace_exporter.OTLPSpanExporter()
    if protocol == "grpc":
        raise ValueError(
            f"{variable}=grpc: the OTLP/gRPC exporter is not installed; "
            "use http/json (the default) or http/protobuf"
        )
    raise ValueError(f"{variable}={protocol!r}: expected http/json, http/protobuf or grpc")


def otlp_provider(
    service_name: str = "kubellm-gateway", env: Mapping[str, str] = os.environ
) -> TracerProvider:
    """A provider exporting in batches over OTLP/HTTP, configured by the OTEL_* variables."""
    name = env.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter(env)))
    return provider


def traceparent(context: SpanContext) -> dict[str, str]:
    """`traceparent` (and `tracestate`) naming `context`, as the W3C propagator writes
    them, without the propagator's context lookups."""
    headers = {
        "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-"
        f"{context.trace_flags:02x}"
    }
    if context.trace_state:
        headers["tracestate"] = context.trace_state.to_header()
    return headers


class Tracing:
    """Starts request traces, or nothing at all when `provider` is None."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        self.tracer: Tracer | None = provider.get_tracer("kubellm") if provider else None

    def request(
        self, headers: list[tuple[bytes, bytes]], operation: str, request_id: str
    ) -> RequestTrace | None:
        """The server span of one request, a child of the caller's `traceparent` if any."""
        if self.tracer is None:
            return None
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in headers
            if k in (b"traceparent", b"tracestate")
        }
        parent = _PROPAGATOR.extract(carrier) if carrier else _ROOT
        op = OPERATION_NAMES.get(operation, operation)
        span = self.tracer.start_span(
            op,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"gen_ai.operation.name": op, "kubellm.request_id": request_id},
        )
        return RequestTrace(self.tracer, span, op)

    async def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()  # flushes what is batched


class RequestTrace:
    def __init__(self, tracer: Tracer, span: Span, operation: str) -> None:
        self._tracer = tracer
        self.span = span
        # Read once: when False, every later call is a no-op but for the headers.
        self.recording = span.is_recording()
        self._operation = operation
        self._model: str | None = None
        self._context: Context | None = None  # the attempts' parent, made at the first

    def model(self, model: str) -> None:
        self._model = model

    def attempt(self, provider_type: str, provider: str, model: str) -> AttemptTrace:
        if not self.recording:
            # Not sampled: no child spans, but the upstream still gets this trace's id
            # (flagged unsampled), so logs on both sides correlate.
            return AttemptTrace(self.span, owned=False)
        if self._context is None:
            self._context = set_span_in_context(self.span)
        span = self._tracer.start_span(
            f"{self._operation} {model}",
            context=self._context,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": self._operation,
                "gen_ai.provider.name": PROVIDER_NAMES.get(provider_type, provider_type),
                "gen_ai.request.model": model,
                "kubellm.provider": provider,
            },
        )
        return AttemptTrace(span)

    def first_token(self) -> None:
        if self.recording:
            self.span.add_event("gen_ai.first_token")

    def finish(
        self,
        status: int,
        input_tokens: int,
        output_tokens: int,
        response_model: str | None,
        error_type: str | None,
    ) -> None:
        if not self.recording:
            return  # an unsampled span has nothing to end
        span = self.span
        attributes: dict[str, Any] = {"http.response.status_code": status}
        if self._model is not None:
            span.update_name(f"{self._operation} {self._model}")
            attributes["gen_ai.request.model"] = self._model
        if input_tokens or output_tokens:
            attributes["gen_ai.usage.input_tokens"] = input_tokens
            attributes["gen_ai.usage.output_tokens"] = output_tokens
        if response_model:
            attributes["gen_ai.response.model"] = response_model
        if error_type:
            attributes["error.type"] = error_type
        span.set_attributes(attributes)
        if status >= 500:
            span.set_status(_ERROR)
        span.end()


class AttemptTrace:
    def __init__(self, span: Span, *, owned: bool = True) -> None:
        self.span = span
        self._owned = owned  # False: the request's own span, ended by the request

    def headers(self) -> dict[str, str]:
        """`traceparent` (and `tracestate`) for the upstream request."""
        return traceparent(self.span.get_span_context())

    def end(self, error_type: str | None = None, **attributes: Any) -> None:
        if not self._owned:
            return
        if error_type is not None:
            attributes["error.type"] = error_type
            self.span.set_status(_ERROR)
        if attributes:
            self.span.set_attributes(attributes)
        self.span.end()
