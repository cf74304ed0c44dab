"""Anthropic's wire vocabulary, shared by both translation directions and the endpoint.

Error types and the statuses they go with, stop reasons against finish reasons,
usage totals and event framing: each fact once, so that a Claude answer read by an
OpenAI client and an OpenAI answer read by an Anthropic client agree on it.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..errors import APIError

# Anthropic's error type for the statuses the gateway answers with (docs: /en/api/errors).
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# And back: the status an Anthropic error type stands for (an `error` stream event has none).
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# Anthropic stop_reason -> OpenAI finish_reason. pause_turn (a long turn paused by the
# server) is `length`: the answer is incomplete, and `stop` would say it is whole.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "pause_turn": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# OpenAI finish_reason -> Anthropic stop_reason. OpenAI does not say whether a stop
# sequence ended the text, so `stop` is end_turn.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_LEADING_TYPE = re.compile(rb'\{\s*"type"\s*:\s*"([a-z_]+)"')


def error_type(error: APIError) -> str:
    """The Anthropic error type for an error's status (its own type for other statuses)."""
    if (kind := _TYPE_BY_STATUS.get(error.status)) is not None:
        return kind
    if error.type in _STATUS_BY_TYPE:
        return error.type
    return "api_error" if error.status >= 500 else "invalid_request_error"


def status_of(error_type: str) -> int:
    return _STATUS_BY_TYPE.get(error_type, 500)


def _error_object(error: APIError) -> dict[str, str]:
    return {"type": error_type(error), "message": error.message}


def error_body(error: APIError, request_id: str) -> bytes:
    """`{"type": "error", "error": {"type", "message"}, "request_id"}`, Anthropic's shape."""
    return orjson.dumps({"type": "error", "error": _error_object(error), "request_id": request_id})


def event(kind: bytes, payload: bytes) -> bytes:
    # The anthropic SDK skips events without an `event:` line: it is not optional here.
    return b"event: " + kind + b"\ndata: " + payload + b"\n\n"


def error_event(error: APIError) -> bytes:
    return event(b"error", orjson.dumps({"type": "error", "error": _error_object(error)}))


def event_type(payload: bytes) -> bytes | None:
    """The `type` of an event payload; Anthropic writes it first, so usually no parse."""
    if match := _LEADING_TYPE.match(payload):
        return match.group(1)
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    kind = parsed.get("type") if isinstance(parsed, dict) else None
    return kind.encode() if isinstance(kind, str) else None


def fields(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: upstream bodies are read leniently."""
    return value if isinstance(value, dict) else {}


def prompt_tokens(usage: dict[str, Any]) -> int:
    """All input tokens: Anthropic counts cache reads and writes apart from `input_tokens`."""
    return sum(
        int(usage.get(field) or 0)
        for field in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
