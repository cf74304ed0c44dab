"""OpenAI clients to OpenAI (or any OpenAI-compatible server): a pass-through."""

from __future__ import annotations

from typing import Any

import orjson

from .base import PATHS, Headers, Operation
from .http import HTTPProvider


def with_usage_requested(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """The client's body with the backend's model, asking for usage on streams.

    Every other field passes through untouched, unknown ones included; usage is
    always asked for so tokens are counted even when the client did not ask.
    """
    out = dict(body)
    out["model"] = model
    if stream:
        options = out.get("stream_options")
        out["stream_options"] = (
            {**options, "include_usage": True}
            if isinstance(options, dict)
            else {"include_usage": True}
        )
    return out


class OpenAIProvider(HTTPProvider):
    def url(self, op: Operation, model: str) -> str:
        return self.spec.base_url + PATHS[op]

    def headers(self, forward: Headers) -> dict[str, str]:
        headers = {"content-type": "application/json", **forward}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        return headers

    def payload(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> bytes:
        return orjson.dumps(with_usage_requested(body, model, stream))
