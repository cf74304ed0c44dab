"""Retries, fallback, timeouts, failures mid-stream and clients that leave."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import orjson
import pytest

from tests.conftest import StartGateway
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import GatewayProcess, free_port, new_key
from tests.support.manifests import api_key, backend, dump, model, openai_provider, policy

KEY = new_key()
FAST_RETRY = {"attempts": 2, "initialBackoff": "10ms", "maxBackoff": "2s"}


@pytest.fixture(scope="module")
def gateway(start_module_gateway: StartGateway, fake_openai: FakeUpstream) -> GatewayProcess:
    url = fake_openai.url
    return start_module_gateway(
        dump(
            openai_provider("once", url, fake_openai.api_key, retry={"attempts": 0}),
            openai_provider("retrying", url, fake_openai.api_key, retry=FAST_RETRY),
            openai_provider(
                "impatient",
                url,
                fake_openai.api_key,
                retry={"attempts": 0},
                timeouts={"firstByte": "500ms", "idle": "300ms"},
            ),
            openai_provider(
                "nowhere",
                f"http://127.0.0.1:{free_port()}/v1",
                fake_openai.api_key,
                retry={"attempts": 0},
                timeouts={"connect": "1s"},
            ),
            model(
                "fallback",
                [
                    backend("once", "fail-500", priority=0),
                    backend("once", "gpt-4o-mini", priority=1),
                ],
            ),
            model("retried", [backend("retrying", "gpt-4o-mini")]),
            model("broken", [backend("retrying", "fail-500")]),
            model("limited", [backend("once", "fail-429")]),
            model(
                "rejects",
                [backend("retrying", "fail-400"), backend("retrying", "gpt-4o-mini", priority=1)],
            ),
            model("hangs", [backend("impatient", "hang")]),
            model(
                "hangs-then-ok",
                [backend("impatient", "hang"), backend("once", "gpt-4o-mini", priority=1)],
            ),
            model("slow", [backend("once", "slow-first-byte")]),
            model("drops", [backend("once", "drop-mid-stream")]),
            model("dawdles", [backend("impatient", "gpt-4o-mini")]),
            model(
                "unreachable",
                [backend("nowhere", "gpt-4o-mini"), backend("once", "gpt-4o-mini", priority=1)],
            ),
            model("weighted", [backend("once", "heavy", weight=3), backend("once", "light")]),
            api_key("tester", KEY, groups=["testers"]),
            policy("all", [("Group", "testers")], models=["*"]),
        )
    )


@pytest.fixture
def upstream(fake_openai: FakeUpstream) -> Iterator[FakeUpstream]:
    fake_openai.clear()
    yield fake_openai
    fake_openai.fail_next(0, 500)


def client(gateway: GatewayProcess, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=KEY, **{"max_retries": 0, **kwargs})


def chat(gateway: GatewayProcess, model: str, **kwargs: Any) -> Any:
    return client(gateway).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], **kwargs
    )


def models_sent(fake: FakeUpstream) -> list[str]:
    return [r.body["model"] for r in fake.requests if r.method == "POST"]


def test_falls_back_to_the_next_priority(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    assert chat(gateway, "fallback").choices[0].message.content.startswith("Hello from gpt-4o-mini")
    assert models_sent(upstream) == ["fail-500", "gpt-4o-mini"]
    assert 'kubellm_fallbacks_total{model="fallback"}' in gateway.metrics()


def test_retries_with_backoff_then_succeeds(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    upstream.fail_next(2, 503)
    assert chat(gateway, "retried").choices
    assert models_sent(upstream) == ["gpt-4o-mini"] * 3


def test_retry_after_is_honoured(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    upstream.fail_next(1, 429, retry_after=0.4)
    started = time.monotonic()
    assert chat(gateway, "retried").choices
    assert time.monotonic() - started >= 0.4
    assert len(models_sent(upstream)) == 2


def test_exhausted_retries_give_502_that_sdks_do_not_retry(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    response = gateway.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "broken", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert response.headers["x-should-retry"] == "false"
    assert models_sent(upstream) == ["fail-500"] * 3
    upstream.clear()
    with pytest.raises(openai.InternalServerError):
        client(gateway, max_retries=2).chat.completions.create(
            model="broken", messages=[{"role": "user", "content": "x"}]
        )
    assert len(models_sent(upstream)) == 3, "the SDK retried what the gateway already retried"


def test_upstream_rate_limit_reaches_the_client(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        chat(gateway, "limited")
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"


def test_upstream_4xx_keeps_status_and_message_and_is_not_retried(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(gateway, "rejects")
    sent = [r for r in upstream.requests if r.method == "POST"]
    assert len(sent) == 1, "a client error must not be retried or fall back"
    error = caught.value.body
    assert isinstance(error, dict) and error["param"]  # the upstream's own field


def test_first_byte_timeout_is_504_and_closes_the_upstream(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gateway, "hangs")
    assert caught.value.status_code == 504
    assert 0.5 <= time.monotonic() - started < 3
    upstream.wait_for(lambda r: r.body and r.body["model"] == "hang" and r.disconnected)


def test_first_byte_timeout_falls_back(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    assert chat(gateway, "hangs-then-ok").choices
    assert models_sent(upstream) == ["hang", "gpt-4o-mini"]


def test_slow_first_byte_within_the_limit_is_fine(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    assert chat(gateway, "slow", stream=False).choices


def test_connect_error_falls_back(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    assert chat(gateway, "unreachable").choices
    assert (
        'kubellm_upstream_errors_total{provider="default/nowhere",reason="connect"}'
        in gateway.metrics()
    )


def test_mid_stream_failure_ends_with_an_error_event(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    received = []
    with pytest.raises(openai.APIError, match="stream broke"):
        for chunk in chat(gateway, "drops", stream=True):
            received.append(chunk)
    assert received, "chunks before the failure must reach the client"
    assert len(models_sent(upstream)) == 1, "never retried once bytes reached the client"


def test_idle_gap_mid_stream_ends_with_a_timeout_event(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    with gateway.http.stream(
        "POST",
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}"},
        json={
            "model": "dawdles",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
            "fake": {"chunks": 5, "delay": 1.0},
        },
    ) as response:
        body = response.read()
    assert response.status_code == 200
    last = body.strip().split(b"\n\n")[-1]
    assert last.startswith(b'data: {"error"') and b"upstream_timeout" in last
    assert b"[DONE]" not in body


def test_client_disconnect_mid_stream_cancels_the_upstream(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    with (
        httpx2.Client(base_url=gateway.url, timeout=10) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={
                "model": "retried",
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
                "fake": {"chunks": 50, "delay": 0.1},
            },
        ) as response,
    ):
        next(response.iter_raw())
    started = time.monotonic()
    upstream.wait_for(lambda r: r.disconnected, timeout=5)
    assert time.monotonic() - started < 1
    assert not upstream.requests[-1].finished
    gateway_metrics = gateway.metrics()
    assert (
        'kubellm_stream_disconnects_total{model="retried",operation="chat"} 1.0' in gateway_metrics
    )


def test_client_disconnect_while_waiting_cancels_the_upstream(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        body = orjson.dumps(
            {
                "model": "retried",
                "messages": [{"role": "user", "content": "x"}],
                "fake": {"first_byte_delay": 5},
            }
        )
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer "
            + KEY.encode()
            + b"\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        upstream.wait_for(lambda r: r.method == "POST")
    upstream.wait_for(lambda r: r.disconnected, timeout=2)


def test_weighted_choice_within_a_priority(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    c = client(gateway)
    for _ in range(200):
        c.chat.completions.create(model="weighted", messages=[{"role": "user", "content": "x"}])
    counts = Counter(models_sent(upstream))
    # Binomial(200, 0.75): mean 150, sd 6.1; these bounds fail about once in a million runs.
    assert 120 <= counts["heavy"] <= 180, counts
