"""The OpenAI-compatible API: its request schema for the inference pipeline
(api/inference.py), and the model listing (OpenAI's shape, or Anthropic's when the
request carries `anthropic-version`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Route

from ..asgi import RawHeaders, json_response
from ..auth import authenticate
from ..codecs import CodecChoice, CompletionsFromChat, OpenAIRelay, openai_error_event
from ..errors import APIError, bad_request, model_not_found
from ..providers.base import Operation
from ..routing import ModelEntry
from ..runtime import Runtime
from ..telemetry.metrics import Call
from . import anthropic
from .inference import Inference

# What each operation needs besides `model`, and the type it must have.
_REQUIRED: dict[Operation, tuple[str, tuple[type, ...]]] = {
    Operation.chat: ("messages", (list,)),
    Operation.completions: ("prompt", (str, list)),
    Operation.embeddings: ("input", (str, list)),
}


def validate(op: Operation, body: dict[str, Any]) -> str:
    """The requested model id, once the fields every backend needs are there."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("`model` is required and must be a non-empty string.", "model")
    field, types = _REQUIRED[op]
    value = body.get(field)
    if value is None:
        raise bad_request(f"`{field}` is required.", field)
    if not isinstance(value, types) or not value:
        raise bad_request(
            f"`{field}` must be a non-empty {' or '.join(t.__name__ for t in types)}.", field
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("`stream` must be a boolean.", "stream")
    return model


class OpenAISchema:
    def validate(self, op: Operation, body: dict[str, Any]) -> str:
        return validate(op, body)

    def codecs(
        self,
        call: Call,
        body: dict[str, Any],
        op: Operation,
        upstream: Operation,
        headers: RawHeaders,
    ) -> CodecChoice:
        codec = (
            CompletionsFromChat(call, body) if upstream is not op else OpenAIRelay(call, op, body)
        )
        return lambda _provider: codec

    def error_body(self, error: APIError, request_id: str) -> bytes:
        return error.body()

    def error_event(self, error: APIError) -> bytes:
        return openai_error_event(error)


SCHEMA = OpenAISchema()


def model_object(entry: ModelEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "model",
        "created": entry.created,
        "owned_by": entry.namespace,
    }


def router(runtime: Runtime, inference: Mapping[str, Inference]) -> APIRouter:
    api = APIRouter()
    for path, endpoint in inference.items():
        # A Route whose endpoint is not a function is served as a plain ASGI app.
        api.routes.append(Route(path, endpoint, methods=["POST"]))

    @api.get("/v1/models")
    async def list_models(request: Request) -> Response:
        snapshot = runtime.snapshot
        principal = await authenticate(request.scope, snapshot, runtime.verifier)
        listed = snapshot.listed(principal)
        if anthropic.VERSION_HEADER in request.headers:
            return json_response(anthropic.models_page(listed))
        return json_response({"object": "list", "data": [model_object(m) for m in listed]})

    @api.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> Response:
        snapshot = runtime.snapshot
        principal = await authenticate(request.scope, snapshot, runtime.verifier)
        entry = snapshot.models.get(model_id)
        if entry is None or entry.id not in snapshot.allowed(principal):
            raise model_not_found(model_id)
        if anthropic.VERSION_HEADER in request.headers:
            return json_response(anthropic.model_info(entry))
        return json_response(model_object(entry))

    return api
