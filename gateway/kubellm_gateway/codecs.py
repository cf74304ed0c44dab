"""Codecs: what goes upstream and what the client gets back, one per pair of client
schema and upstream operation. OpenAI relayed as it is, legacy completions served by
chat, Anthropic relayed as it is, Anthropic served by OpenAI chat. The pipeline
(proxy.py) never looks inside a payload; a codec does, as little as it can: upstream
SSE bytes are forwarded unchanged unless a translation needs them parsed.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import orjson

from .errors import APIError
from .providers import anthropic_openai, anthropic_wire
from .providers.base import Operation, Provider
from .providers.completions_chat import chat_request, completion_chunk, completion_response
from .providers.sse import DONE
from .telemetry.metrics import Call

# Cheap pre-check before parsing a chunk: only usage-bearing chunks need parsing.
_USAGE = re.compile(rb'"usage":\s*\{')
_STREAM_END = b"data: [DONE]\n\n"
_NONE: Mapping[str, str] = MappingProxyType({})


def _json_object(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise APIError(
            502,
            "The upstream answered with invalid JSON.",
            type="server_error",
            code="upstream_error",
        ) from None


def openai_error_event(error: APIError) -> bytes:
    return b"data: " + error.body() + b"\n\n"


# --- codecs ----------------------------------------------------------------------------------


class Codec(ABC):
    """How one client schema is served by one upstream operation, for one request.

    It makes the upstream body, turns the upstream's answer (a whole body, or stream
    payloads batch by batch) into the client's bytes, counts tokens into the call,
    and writes the event that ends a stream on error.
    """

    __slots__ = ("call", "op")

    def __init__(self, call: Call, op: Operation) -> None:
        self.call = call
        self.op = op  # the upstream operation

    def forward(self) -> Mapping[str, str]:
        """Client headers the upstream request carries (most codecs: none)."""
        return _NONE

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body for the upstream operation (the provider sets the backend's model)."""
        return body

    @abstractmethod
    def response(self, data: bytes) -> bytes:
        """The client's body for a whole upstream body."""

    @abstractmethod
    def events(self, batch: list[bytes]) -> tuple[bytes, bool]:
        """The client's bytes for a batch of upstream payloads, and whether the stream ended."""

    @abstractmethod
    def error_event(self, error: APIError) -> bytes:
        """The last event of a stream that broke."""

    def account(self, usage: Any, model: Any = None) -> None:
        """Tokens from OpenAI-shaped usage, and the model the upstream says answered."""
        if isinstance(model, str):
            self.call.response_model = model
        if isinstance(usage, dict):
            self.call.input_tokens = int(usage.get("prompt_tokens") or 0)
            self.call.output_tokens = int(usage.get("completion_tokens") or 0)


CodecChoice = Callable[[Provider], Codec]
"""The codec for an attempt on a provider: the client's schema decides."""


class OpenAIRelay(Codec):
    """OpenAI in, OpenAI out: bytes forwarded unchanged; only usage chunks are parsed."""

    __slots__ = ("wants_usage",)

    def __init__(self, call: Call, op: Operation, body: dict[str, Any]) -> None:
        super().__init__(call, op)
        options = body.get("stream_options")
        self.wants_usage = isinstance(options, dict) and options.get("include_usage") is True

    def response(self, data: bytes) -> bytes:
        parsed = _json_object(data)
        if isinstance(parsed, dict):
            self.account(parsed.get("usage"), parsed.get("model"))
        return data

    def events(self, batch: list[bytes]) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        for payload in batch:
            if payload == DONE:
                parts.append(_STREAM_END)
                return b"".join(parts), True
            chunk: dict[str, Any] | None = None
            if _USAGE.search(payload):
                chunk = orjson.loads(payload)
                self.account(chunk.get("usage"), chunk.get("model"))
                if not chunk.get("choices") and not self.wants_usage:
                    continue  # usage was asked for on the client's behalf: not its to see
            parts.append(b"data: " + payload + b"\n\n")
        return b"".join(parts), False

    def error_event(self, error: APIError) -> bytes:
        return openai_error_event(error)


class CompletionsFromChat(OpenAIRelay):
    """Legacy completions served by chat: the request and every answer converted."""

    __slots__ = ()

    def __init__(self, call: Call, body: dict[str, Any]) -> None:
        super().__init__(call, Operation.chat, body)

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        return chat_request(body)

    def response(self, data: bytes) -> bytes:
        parsed = _json_object(data)
        if not isinstance(parsed, dict):
            return data
        self.account(parsed.get("usage"), parsed.get("model"))
        return orjson.dumps(completion_response(parsed))

    def events(self, batch: list[bytes]) -> tuple[bytes, bool]:
        # Converted first, then relayed: the relay's usage rules apply to the result.
        converted = []
        for payload in batch:
            if payload == DONE:
                converted.append(payload)
                break
            if (chunk := completion_chunk(orjson.loads(payload))) is not None:
                converted.append(orjson.dumps(chunk))
        return super().events(converted)


class AnthropicRelay(Codec):
    """Anthropic in, Anthropic out: payloads forwarded unchanged, `event:` lines rebuilt
    from each payload's type (the SSE parser keeps only `data`)."""

    __slots__ = ("_forward", "_usage")

    def __init__(self, call: Call, forward: Mapping[str, str] = MappingProxyType({})) -> None:
        super().__init__(call, Operation.messages)
        self._forward = forward
        self._usage: dict[str, Any] = {}

    def forward(self) -> Mapping[str, str]:
        return self._forward

    def _account(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # message_delta's counts are totals, and it leaves out those that did not change.
        self._usage.update({k: v for k, v in usage.items() if v is not None})
        self.call.input_tokens = anthropic_wire.prompt_tokens(self._usage)
        self.call.output_tokens = int(self._usage.get("output_tokens") or 0)

    def response(self, data: bytes) -> bytes:
        parsed = _json_object(data)
        if isinstance(parsed, dict):
            self._account(parsed.get("usage"))
        return data

    def events(self, batch: list[bytes]) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        for payload in batch:
            kind = anthropic_wire.event_type(payload)
            if kind is None:
                continue
            if kind == b"message_start":
                message = anthropic_wire.fields(orjson.loads(payload)).get("message")
                self._account(anthropic_wire.fields(message).get("usage"))
            elif kind == b"message_delta":
                self._account(anthropic_wire.fields(orjson.loads(payload)).get("usage"))
            parts.append(anthropic_wire.event(kind, payload))
            if kind in (b"message_stop", b"error"):  # an error event ends the stream
                return b"".join(parts), True
        return b"".join(parts), False

    def error_event(self, error: APIError) -> bytes:
        return anthropic_wire.error_event(error)


class AnthropicFromOpenAI(Codec):
    """Anthropic clients on OpenAI chat: request, answer and event stream translated."""

    __slots__ = ("_stream",)

    def __init__(self, call: Call) -> None:
        super().__init__(call, Operation.chat)
        self._stream = anthropic_openai.EventStream()

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        return anthropic_openai.chat_request(body)

    def response(self, data: bytes) -> bytes:
        parsed = _json_object(data)
        if not isinstance(parsed, dict):
            raise APIError(
                502, "The upstream answered without a chat completion.", type="server_error"
            )
        self.account(parsed.get("usage"), parsed.get("model"))
        return orjson.dumps(anthropic_openai.message_response(parsed))

    def events(self, batch: list[bytes]) -> tuple[bytes, bool]:
        out, done = self._stream(batch)
        self.account(self._stream.usage)
        return out, done

    def error_event(self, error: APIError) -> bytes:
        return anthropic_wire.error_event(error)
