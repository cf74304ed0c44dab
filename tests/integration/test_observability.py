"""Traces exported by a real gateway process, and its access log."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from tests.conftest import StartGateway
from tests.fakes.otlp import CLIENT, JSON, PROTOBUF, SERVER, FakeCollector
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import api_key, backend, dump, model, openai_provider, policy, provider

KEY = new_key()
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
ASK: Any = [{"role": "user", "content": "a b"}]


def manifests(fake: FakeUpstream) -> str:
    return dump(
        provider("mock", "Mock"),
        openai_provider("openai", fake.url, fake.api_key, retry={"attempts": 0}),
        model("fb", [backend("openai", "fail-500"), backend("mock", "fb-v1", priority=1)]),
        model("m", [backend("mock", "m-v1")]),
        model("up", [backend("openai", "gpt-4o-mini")]),
        api_key("tester", KEY, user="alice", groups=["t"]),
        policy("all", [("Group", "t")], models=["*"]),
    )


# Both exporters the gateway has: its own JSON one (the default) and the SDK's protobuf.
PROTOCOLS = pytest.mark.parametrize(
    ("protocol", "content_type"), [("http/json", JSON), ("http/protobuf", PROTOBUF)]
)


def traced(
    start: StartGateway, fake: FakeUpstream, collector: FakeCollector, protocol: str
) -> GatewayProcess:
    return start(
        manifests(fake),
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        },
    )


@PROTOCOLS
def test_span_tree_across_a_fallback(
    start_gateway: StartGateway,
    fake_openai: FakeUpstream,
    collector: FakeCollector,
    protocol: str,
    content_type: str,
) -> None:
    gateway = traced(start_gateway, fake_openai, collector, protocol)
    fake_openai.clear()
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    client.chat.completions.create(
        model="fb", messages=ASK, extra_headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}
    )
    spans = collector.wait(
        lambda s: sum(x.kind == CLIENT for x in s) >= 2 and any(x.kind == SERVER for x in s)
    )
    (server,) = [s for s in spans if s.kind == SERVER]
    attempts = [s for s in spans if s.kind == CLIENT]
    assert server.name == "chat fb"
    assert (server.trace_id, server.parent_span_id) == (TRACE, PARENT)  # the caller's trace
    assert {a.parent_span_id for a in attempts} == {server.span_id}
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.request.model"] == "fb"
    assert server.attributes["gen_ai.usage.input_tokens"] == 2
    assert server.attributes["gen_ai.usage.output_tokens"] > 0
    assert server.attributes["http.response.status_code"] == 200
    failed, served = sorted(
        attempts, key=lambda a: a.attributes["kubellm.provider"] == "default/mock"
    )
    assert failed.attributes["gen_ai.provider.name"] == "openai"
    assert failed.attributes["error.type"] == "5xx" and failed.error
    assert served.attributes["gen_ai.provider.name"] == "kubellm.mock"
    # The upstream saw the failed attempt's span as its parent.
    sent = fake_openai.wait_for(lambda r: r.method == "POST")
    assert sent.headers["traceparent"] == f"00-{TRACE}-{failed.span_id}-01"
    # No prompt or completion text in any span.
    for span in spans:
        assert "a b" not in orjson.dumps(span.attributes).decode()
    assert {r.headers["content-type"] for r in collector.requests} == {content_type}


@PROTOCOLS
def test_stream_span_has_first_token_event_and_response_model(
    start_gateway: StartGateway,
    fake_openai: FakeUpstream,
    collector: FakeCollector,
    protocol: str,
    content_type: str,
) -> None:
    gateway = traced(start_gateway, fake_openai, collector, protocol)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    list(client.chat.completions.create(model="up", messages=ASK, stream=True))
    spans = collector.wait(lambda s: any(x.kind == SERVER for x in s))
    (server,) = [s for s in spans if s.kind == SERVER]
    assert server.events == ("gen_ai.first_token",)
    assert server.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert len(server.trace_id) == 32 and not server.parent_span_id  # a new trace
    assert {r.headers["content-type"] for r in collector.requests} == {content_type}


def test_access_log_one_json_line_per_request(
    start_gateway: StartGateway, fake_openai: FakeUpstream
) -> None:
    gateway = start_gateway(manifests(fake_openai), extra_args=("--log-format", "json"))
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    ok = client.chat.completions.with_raw_response.create(model="m", messages=ASK)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=ASK)
    list(client.chat.completions.create(model="fb", messages=ASK, stream=True))
    lines = [orjson.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "kubellm.access"]
    assert len(access) == 3
    first, refused, streamed = access
    assert first["request_id"] == ok.headers["x-request-id"]
    assert first | {"latency_ms": 0, "time": 0, "ttft_ms": 0} == first | {
        "user": "alice",
        "auth": "apikey",
        "policy": "default/all",
        "operation": "chat",
        "model": "m",
        "provider": "default/mock",
        "attempts": 1,
        "status": 200,
        "error": None,
        "stream": False,
        "input_tokens": 2,
        "output_tokens": first["output_tokens"],
        "latency_ms": 0,
        "time": 0,
        "ttft_ms": 0,
        "disconnected": False,
    }
    assert first["bytes"] == len(ok.content) and first["output_tokens"] > 0
    assert (refused["status"], refused["error"], refused["model"]) == (404, "model_not_found", "-")
    assert (streamed["attempts"], streamed["stream"]) == (2, True)
    assert streamed["ttft_ms"] is not None and streamed["ttft_ms"] <= streamed["latency_ms"]
    # Every other log line is JSON too.
    assert all(line.startswith("{") for line in gateway.log().splitlines() if line.strip())
