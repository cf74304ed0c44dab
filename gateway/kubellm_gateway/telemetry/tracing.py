"""OpenTelemetry traces, off unless asked for; then one server span per request and one
client span per upstream attempt, with GenAI semantic-convention attributes.

Off is the default and costs the hot path one `is None` check. The exporter is imported
only when tracing is on (RSS on top of the gateway's: 0.75 MiB for the JSON one, 1.6-1.9
MiB for the protobuf one).

On when `--otel` is given or the standard variables ask for it
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_TRACES_EXPORTER=otlp`), unless `OTEL_SDK_DISABLED=true`; the exporter reads the
rest of the standard variables itself. No prompt or completion text is ever recorded.

The SDK is the engine (sampler, ids, span data, processors, exporters), but its live
spans cost microseconds per call, so the gateway records its two kinds of span itself
and hands the SDK finished ones (RequestTrace; bench/README.md, "Observability"): an
unsampled request only asks the sampler.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    get_current_span,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:  # metrics.Call holds a request's trace: imported for annotations only
    from .metrics import Call

_PROPAGATOR = TraceContextTextMapPropagator()
# The parent of a request without `traceparent`: given explicitly, it spares the sampler
# lookups of the ambient context (which the gateway never sets).
_ROOT = Context()
_ERROR = Status(StatusCode.ERROR)
_UNSET = Status(StatusCode.UNSET)
_SCOPE = InstrumentationScope("kubellm")

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


def traceparent(
    trace_id: int, span_id: int, flags: int, state: TraceState | None
) -> dict[str, str]:
    """`traceparent` (and `tracestate`) naming a span, as the W3C propagator writes them,
    without the propagator's context lookups."""
    headers = {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"}
    if state:
        headers["tracestate"] = state.to_header()
    return headers


class Tracing:
    """Starts request traces, or nothing at all when `provider` is None."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        # The SDK's Tracer, for its sampler, id generator, resource and span processor.
        self._tracer = cast(sdk_trace.Tracer, provider.get_tracer("kubellm")) if provider else None

    def request(
        self, headers: list[tuple[bytes, bytes]], operation: str, request_id: str
    ) -> RequestTrace | Unsampled | None:
        """The server span of one request, a child of the caller's `traceparent` if any."""
        tracer = self._tracer
        if tracer is None:
            return None
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in headers
            if k in (b"traceparent", b"tracestate")
        }
        context, parent = _ROOT, None
        if carrier:
            context = _PROPAGATOR.extract(carrier)
            parent = get_current_span(context).get_span_context()
            if not parent.is_valid:  # a malformed header: a new trace, as the SDK would
                parent = None
        ids = tracer.id_generator
        trace_id = parent.trace_id if parent else ids.generate_trace_id()
        op = OPERATION_NAMES.get(operation, operation)
        attributes = {"gen_ai.operation.name": op, "kubellm.request_id": request_id}
        # The decision the SDK's Tracer.start_span would take, flags included.
        sampling = tracer.sampler.should_sample(context, trace_id, op, SpanKind.SERVER, attributes)
        sampled = sampling.decision is Decision.RECORD_AND_SAMPLE
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        if parent.trace_flags.random_trace_id if parent else ids.is_trace_id_random():
            flags |= TraceFlags.RANDOM_TRACE_ID
        if not sampled:
            return Unsampled(
                traceparent(trace_id, ids.generate_span_id(), flags, sampling.trace_state)
            )
        own = SpanContext(
            trace_id, ids.generate_span_id(), False, TraceFlags(flags), sampling.trace_state
        )
        return RequestTrace(tracer, own, parent, op, dict(sampling.attributes))

    async def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()  # flushes what is batched


class RequestTrace:
    """One request's server span, recorded here and handed to the SDK's span processor as
    a finished ReadableSpan when the request ends: the SDK's live spans (locks, limits,
    per-call validation, on_start) cost several times as much, and the gateway's spans
    are made in one place with attributes it controls. A processor's on_start is
    therefore not called; the batch and simple processors do nothing there."""

    def __init__(
        self,
        tracer: sdk_trace.Tracer,
        context: SpanContext,
        parent: SpanContext | None,
        operation: str,
        attributes: dict[str, Any],
    ) -> None:
        self._tracer = tracer
        self.context = context
        self._parent = parent
        self._operation = operation
        self._attributes = attributes
        self._started = time.time_ns()
        self._events: list[Event] = []

    def attempt(self, provider_type: str, provider: str, model: str) -> AttemptTrace:
        context = self.context
        own = SpanContext(
            context.trace_id,
            self._tracer.id_generator.generate_span_id(),
            False,
            context.trace_flags,
            context.trace_state,
        )
        attributes = {
            "gen_ai.operation.name": self._operation,
            "gen_ai.provider.name": PROVIDER_NAMES.get(provider_type, provider_type),
            "gen_ai.request.model": model,
            "kubellm.provider": provider,
        }
        return AttemptTrace(own, self, f"{self._operation} {model}", attributes)

    def first_token(self) -> None:
        self._events.append(Event("gen_ai.first_token"))

    def finish(self, call: Call) -> None:
        attributes = self._attributes
        name = self._operation
        attributes["http.response.status_code"] = call.status
        if call.model != "-":  # Call's own "-": no model the caller may use was named
            name = f"{self._operation} {call.model}"
            attributes["gen_ai.request.model"] = call.model
        if call.input_tokens or call.output_tokens:
            attributes["gen_ai.usage.input_tokens"] = call.input_tokens
            attributes["gen_ai.usage.output_tokens"] = call.output_tokens
        if call.response_model:
            attributes["gen_ai.response.model"] = call.response_model
        if call.error:
            attributes["error.type"] = call.error
        self.emit(
            name, self.context, self._parent, SpanKind.SERVER, attributes, self._started,
            _ERROR if call.status >= 500 else _UNSET, tuple(self._events),
        )  # fmt: skip

    def emit(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        started: int,
        status: Status,
        events: tuple[Event, ...] = (),
    ) -> None:
        """Hands a finished span to the SDK's span processor (batching, export)."""
        tracer = self._tracer
        span = ReadableSpan(
            name, context, parent, tracer.resource, attributes, events, (), kind, None,
            status, started, time.time_ns(), _SCOPE,
        )  # fmt: skip
        tracer.span_processor.on_end(span)


class AttemptTrace:
    """One upstream attempt: a client span under the request's."""

    def __init__(
        self, context: SpanContext, request: RequestTrace, name: str, attributes: dict[str, Any]
    ) -> None:
        self.context = context
        self._request = request
        self._name = name
        self._attributes = attributes
        self._started = time.time_ns()

    def headers(self) -> dict[str, str]:
        """`traceparent` (and `tracestate`) for the upstream request."""
        c = self.context
        return traceparent(c.trace_id, c.span_id, c.trace_flags, c.trace_state)

    def end(self, error_type: str | None = None, **attributes: Any) -> None:
        status = _UNSET
        if error_type is not None:
            attributes["error.type"] = error_type
            status = _ERROR
        request = self._request
        request.emit(
            self._name, self.context, request.context, SpanKind.CLIENT,
            self._attributes | attributes, self._started, status,
        )  # fmt: skip


class Unsampled:
    """A request the sampler passed over, and each of its attempts: nothing is recorded,
    but the upstream still learns the trace (flagged unsampled), so logs on both sides
    correlate. The slimmest path, as most requests take it: no span context is made."""

    __slots__ = ("_headers",)

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def attempt(self, provider_type: str, provider: str, model: str) -> Unsampled:
        return self

    def headers(self) -> dict[str, str]:
        return self._headers

    def end(self, error_type: str | None = None, **attributes: Any) -> None:
        pass

    def first_token(self) -> None:
        pass

    def finish(self, call: Call) -> None:
        pass
