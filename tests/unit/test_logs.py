"""Log formats and the access log line."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest

from kubellm_gateway.telemetry import logs
from kubellm_gateway.telemetry.metrics import Call


def finished_call() -> Call:
    return Call(
        operation="chat",
        request_id="rid-9",
        stream=True,
        model="gpt-4o",
        provider="default/openai",
        status=200,
        attempts=2,
        input_tokens=10,
        output_tokens=20,
        ttft=0.0125,
        cost=0.00042,
        user="alice",
        auth="apikey",
        policy="default/team-a",
        bytes_out=2048,
    )


def record(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    (entry,) = [r for r in caplog.records if r.name == "kubellm.access"]
    return entry


def test_access_line_in_json(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kubellm.access"):
        logs.access(finished_call(), 0.25)
    line = orjson.loads(logs.JSONFormatter().format(record(caplog)))
    assert line["logger"] == "kubellm.access"
    assert line["time"].endswith("Z")
    expected = {
        "request_id": "rid-9",
        "user": "alice",
        "auth": "apikey",
        "policy": "default/team-a",
        "operation": "chat",
        "model": "gpt-4o",
        "provider": "default/openai",
        "attempts": 2,
        "status": 200,
        "error": None,
        "stream": True,
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_usd": 0.00042,
        "latency_ms": 250.0,
        "ttft_ms": 12.5,
        "bytes": 2048,
        "disconnected": False,
    }
    assert {k: line[k] for k in expected} == expected


def test_access_line_in_text(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kubellm.access"):
        logs.access(finished_call(), 0.25)
    text = logs.TextFormatter().format(record(caplog))
    assert "kubellm.access: request_id=rid-9 user=alice" in text
    assert "error=" not in text  # absent fields are left out, not printed as None


def test_access_log_can_be_switched_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kubellm.access"):
        logs.access(finished_call(), 0.25)
    assert not [r for r in caplog.records if r.name == "kubellm.access"]


def test_json_formatter_for_ordinary_records() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        entry = logging.LogRecord(
            "kubellm_gateway.x", logging.ERROR, __file__, 1, "failed %s", ("y",), sys.exc_info()
        )
    line = orjson.loads(logs.JSONFormatter().format(entry))
    assert line["message"] == "failed y"
    assert line["level"] == "error"
    assert "ValueError: boom" in line["exception"]
