"""The Anthropic Messages API: `POST /v1/messages` for clients of the anthropic SDK.

It runs through the same pipeline as the OpenAI endpoints (`api.openai.Inference`),
so identity, policies, limits and metrics are the same; this module is what differs:
how a request is checked, how errors look (`{"type": "error", "error": {"type",
"message"}, "request_id"}`), and the codec of each attempt: an Anthropic backend gets
the body as it is, any other backend gets it translated to chat. `/v1/models`
answers in Anthropic's shape to requests that carry `anthropic-version`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..asgi import RawHeaders
from ..codecs import AnthropicFromOpenAI, AnthropicRelay, Codec, CodecChoice
from ..errors import APIError, bad_request
from ..providers import anthropic_wire
from ..providers.base import Operation, Provider
from ..routing import ModelEntry
from ..telemetry.metrics import Call

VERSION_HEADER = "anthropic-version"  # its presence asks for Anthropic shapes


class AnthropicSchema:
    """Anthropic's wire conventions, for the shared inference pipeline."""

    def validate(self, op: Operation, body: dict[str, Any]) -> str:
        """The requested model id, once what every backend needs is there."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("`model` is required and must be a non-empty string.", "model")
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise bad_request("`max_tokens` is required.", "max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
            raise bad_request("`max_tokens` must be a non-negative integer.", "max_tokens")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("`messages` is required and must be a non-empty list.", "messages")
        system = body.get("system")
        if system is not None and not isinstance(system, str | list):
            raise bad_request("`system` must be a string or a list of text blocks.", "system")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise bad_request("`stream` must be a boolean.", "stream")
        return model

    def codecs(
        self,
        call: Call,
        body: dict[str, Any],
        op: Operation,
        upstream: Operation,
        headers: RawHeaders,
    ) -> CodecChoice:
        # Betas (prompt caching, new tools...) only mean something to Anthropic itself.
        betas = [v.decode("latin-1") for k, v in headers if k == b"anthropic-beta"]
        forward = {"anthropic-beta": ",".join(betas)} if betas else {}

        def codec(provider: Provider) -> Codec:
            if Operation.messages in provider.operations:
                return AnthropicRelay(call, forward)
            return AnthropicFromOpenAI(call)

        return codec

    def error_body(self, error: APIError, request_id: str) -> bytes:
        return anthropic_wire.error_body(error, request_id)

    def error_event(self, error: APIError) -> bytes:
        return anthropic_wire.error_event(error)


SCHEMA = AnthropicSchema()


def model_info(entry: ModelEntry) -> dict[str, Any]:
    created = datetime.fromtimestamp(entry.created, UTC).isoformat().replace("+00:00", "Z")
    return {
        "type": "model",
        "id": entry.id,
        "display_name": entry.id,
        "created_at": created,
        "lifecycle": "active",
    }


def models_page(entries: list[ModelEntry]) -> dict[str, Any]:
    """Every model in one page: the list is small, and the same for every page asked."""
    data = [model_info(m) for m in entries]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
