"""Logging: text or one JSON object per line, and the access log.

The access log is one line per request with who, what, which backend, the outcome,
tokens, cost and timings: never a key, a token or message content. It goes through
the `kubellm.access` logger so it follows the same format and destination.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from .metrics import Call

ACCESS = logging.getLogger("kubellm.access")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "access", None)
        if fields is not None:
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "access", None)
        if fields is not None:
            record.message = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return super().formatMessage(record)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _iso(seconds: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        + f".{int(seconds % 1 * 1000):03d}Z"
    )


def access(call: Call, seconds: float) -> None:
    """Log one finished request (when the access logger is enabled for INFO)."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    fields = {
        "request_id": call.request_id,
        "user": call.user,
        "auth": call.auth,
        "policy": call.policy,
        "operation": call.operation,
        "model": call.model,
        "provider": call.provider,
        "attempts": call.attempts,
        "status": call.status,
        "error": call.error,
        "stream": call.stream,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "tokens_estimated": call.tokens_estimated,
        "cost_usd": round(call.cost, 8),
        "latency_ms": round(seconds * 1000, 3),
        "ttft_ms": round(call.ttft * 1000, 3) if call.ttft is not None else None,
        "bytes": call.bytes_out,
        "disconnected": call.disconnected,
    }
    ACCESS.info("access", extra={"access": fields})
