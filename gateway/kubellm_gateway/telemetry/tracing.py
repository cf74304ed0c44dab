"""OpenTelemetry traces, off unless asked for; then one server span per request and one
client span per upstream attempt, with GenAI semantic-convention attributes.

Off is the default and costs the hot path one `is None` check. The OTLP exporter is
imported only when tracing is on (1.9 MiB of RSS on top of the gateway's own).

On when `--otel` is given or the standard variables ask for it
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_TRACES_EXPORTER=otlp`), unless `OTEL_SDK_DISABLED=true`; the exporter reads the
rest of the standard variables itself. No prompt or completion text is ever recorded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()

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


def wanted(flag: bool, env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return (
        flag
        or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        or bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        or env.get("OTEL_TRACES_EXPORTER", "").lower() == "otlp"
    )


def otlp_provider(service_name: str = "kubellm-gateway") -> TracerProvider:
    """A provider exporting in batches over OTLP/HTTP, configured by the OTEL_* variables."""
    # Imported here, not above: it costs memory that a gateway without tracing keeps.
    from opentelemetry.exporter.otlp.proto.http import trace_exporter  # noqa: PLC0415

    name = os.environ.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(trace_exporter.OTLPSpanExporter()))
    return provider


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
        parent = _PROPAGATOR.extract(carrier) if carrier else None
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
        self._operation = operation

    def model(self, model: str) -> None:
        self.span.update_name(f"{self._operation} {model}")
        self.span.set_attribute("gen_ai.request.model", model)

    def attempt(self, provider_type: str, provider: str, model: str) -> AttemptTrace:
        if not self.span.is_recording():
            # Not sampled: no child spans, but the upstream still gets this trace's id
            # (flagged unsampled), so logs on both sides correlate.
            return AttemptTrace(self.span, owned=False)
        span = self._tracer.start_span(
            f"{self._operation} {model}",
            context=set_span_in_context(self.span),
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
        self.span.add_event("gen_ai.first_token")

    def finish(
        self,
        status: int,
        input_tokens: int,
        output_tokens: int,
        response_model: str | None,
        error_type: str | None,
    ) -> None:
        span = self.span
        span.set_attribute("http.response.status_code", status)
        if input_tokens or output_tokens:
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if response_model:
            span.set_attribute("gen_ai.response.model", response_model)
        if error_type:
            span.set_attribute("error.type", error_type)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class AttemptTrace:
    def __init__(self, span: Span, *, owned: bool = True) -> None:
        self.span = span
        self._owned = owned  # False: the request's own span, ended by the request

    def headers(self) -> dict[str, str]:
        """`traceparent` (and `tracestate`) for the upstream request."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=set_span_in_context(self.span))
        return carrier

    def end(self, error_type: str | None = None, **attributes: Any) -> None:
        if not self._owned:
            return
        for key, value in attributes.items():
            self.span.set_attribute(key, value)
        if error_type is not None:
            self.span.set_attribute("error.type", error_type)
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()
