"""What tracing costs the whole request pipeline, in-process, without sockets or noise from
other processes.

    python -m bench.tracing_pipeline [--requests 1000] [--rounds 5]

The gateway's ASGI app (deploy/examples/local, its Mock provider answering at once) is
called directly with a chat completion, on uvloop like the gateway, in three variants
built side by side: tracing off, tracing on with nothing sampled (`traceidratio` 0), and
everything sampled, spans going through the BatchSpanProcessor to an exporter that
encodes them to OTLP JSON and drops the bytes. Each figure is the median over rounds of
the process CPU time per request; the variants alternate within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import uvloop
import yaml
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from kubellm_gateway.app import create_app
from kubellm_gateway.asgi import Edge
from kubellm_gateway.resources import Resource, parse_resource
from kubellm_gateway.runtime import Runtime
from kubellm_gateway.settings import Settings
from kubellm_gateway.telemetry.otlp_json import encode
from kubellm_gateway.telemetry.tracing import Tracing

LOCAL = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "local"
KEY = b"sk-kl-local-demo-key"  # the embedded default's demo key
BODY = orjson.dumps({"model": "mock/small", "messages": [{"role": "user", "content": "hi"}]})
SAMPLED = {"off": None, "unsampled": 0.0, "sampled": 1.0}


class EncodeAndDrop(SpanExporter):
    """Pays for the encoding, as the real exporter does, and sends nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode(spans)
        return SpanExportResult.SUCCESS


def resources() -> list[Resource]:
    found = []
    for doc in yaml.safe_load_all((LOCAL / "gateway.yaml").read_text()):
        if doc and doc["kind"] == "LLMProvider":
            doc["spec"]["mock"] = {"latency": "0ms", "tokensPerSecond": 100_000}
        if doc and (resource := parse_resource(doc)) is not None:
            found.append(resource)
    return found


async def gateway(ratio: float | None) -> tuple[Edge, Runtime]:
    runtime = Runtime(Settings(manifests=LOCAL, metrics_port=9))  # metrics on, as by default
    if ratio is not None:
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
        provider.add_span_processor(BatchSpanProcessor(EncodeAndDrop()))
        runtime.tracing = Tracing(provider)
    await runtime.apply(resources(), {})
    return create_app(runtime, threading.Event()), runtime


async def request(app: Edge) -> None:
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"gateway"), (b"authorization", b"Bearer " + KEY),
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY)),
        ],
    }  # fmt: skip
    answered = asyncio.Event()
    status = []
    read = False

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not read:
            read = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif not message.get("more_body"):
            answered.set()

    await app(scope, receive, send)
    if status != [200]:
        raise RuntimeError(f"the gateway answered {status}")


async def measure(requests: int, rounds: int) -> dict[str, float]:
    apps = {name: await gateway(ratio) for name, ratio in SAMPLED.items()}
    per_request: dict[str, list[float]] = {name: [] for name in apps}
    try:
        for app, _ in apps.values():
            for _ in range(requests // 2):  # warm-up
                await request(app)
        for _ in range(rounds):
            for name, (app, _) in apps.items():
                started = time.process_time()
                for _ in range(requests):
                    await request(app)
                per_request[name].append((time.process_time() - started) / requests * 1e6)
    finally:
        for _, runtime in apps.values():
            await runtime.aclose()
    return {name: statistics.median(values) for name, values in per_request.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing_pipeline", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = uvloop.run(measure(args.requests, args.rounds))
    base = result["off"]
    for name, micros in result.items():
        extra = "" if name == "off" else f"  +{micros - base:.1f} us ({micros / base - 1:+.1%})"
        print(f"{name:10} {micros:7.1f} us CPU per request{extra}")


if __name__ == "__main__":
    main()
