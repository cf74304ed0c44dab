"""The OpenAI-compatible API, and the inference pipeline every client schema shares.

The inference endpoints are raw ASGI callables: the hot path builds no
framework request or response objects (bench/README.md has the numbers).
`Inference` is one pipeline (authenticate, read, validate, resolve and
authorize, proxy, record) parameterized by a `ClientSchema`: OpenAI's here,
Anthropic's in api/anthropic.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Route

from ..asgi import (
    REQUEST_ID_KEY,
    ClientGone,
    Receive,
    Scope,
    Send,
    json_response,
    parse_json_object,
    read_body,
    send_error,
)
from ..auth.apikeys import authenticate
from ..errors import APIError, bad_request, model_not_found, no_backend
from ..providers.base import Operation
from ..proxy import CodecChoice, CompletionsFromChat, OpenAIRelay, openai_error_event
from ..routing import ModelEntry, capability_route
from ..runtime import Runtime
from ..telemetry.metrics import Call
from . import anthropic

log = logging.getLogger(__name__)

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


class ClientSchema(Protocol):
    """A client API's conventions: what the pipeline asks of OpenAI's and Anthropic's."""

    def validate(self, op: Operation, body: dict[str, Any]) -> str:
        """The requested model id, or a 400 (the fields every backend needs are there)."""

    def codecs(
        self, call: Call, body: dict[str, Any], op: Operation, upstream: Operation
    ) -> CodecChoice:
        """The codec of each attempt, by the provider it goes to."""

    def error_body(self, error: APIError, request_id: str) -> bytes: ...

    def error_event(self, error: APIError) -> bytes:
        """The event that ends a stream on error."""


class OpenAISchema:
    def validate(self, op: Operation, body: dict[str, Any]) -> str:
        return validate(op, body)

    def codecs(
        self, call: Call, body: dict[str, Any], op: Operation, upstream: Operation
    ) -> CodecChoice:
        codec = (
            CompletionsFromChat(call, body) if upstream is not op else OpenAIRelay(call, op, body)
        )
        return lambda _provider: codec

    def error_body(self, error: APIError, request_id: str) -> bytes:
        return error.body()

    def error_event(self, error: APIError) -> bytes:
        return openai_error_event(error)


OPENAI = OpenAISchema()


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], call: Call) -> None:
    """Cancel the request when its client goes away, upstream call included."""
    while (await receive())["type"] != "http.disconnect":
        pass
    # uvicorn also reports "disconnect" once the response is complete: not a cancel then.
    if not call.finished:
        call.disconnected = True
        task.cancel()


class Inference:
    """POST /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/messages."""

    def __init__(self, runtime: Runtime, op: Operation, schema: ClientSchema = OPENAI) -> None:
        self.runtime = runtime
        self.op = op
        self.schema = schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        metrics = runtime.metrics
        snapshot = runtime.snapshot  # one read: the whole request sees one configuration
        loop = asyncio.get_running_loop()
        call = Call(self.op.value, scope[REQUEST_ID_KEY], started=loop.time())
        task = asyncio.current_task()
        assert task is not None
        watcher: asyncio.Task[None] | None = None
        metrics.inflight.inc()
        try:
            principal = authenticate(scope, snapshot)  # before reading a body we may not want
            body = parse_json_object(
                await read_body(scope, receive, runtime.settings.max_body_bytes)
            )
            model = self.schema.validate(self.op, body)
            call.stream = self.op is not Operation.embeddings and body.get("stream") is True
            entry = snapshot.models.get(model)
            if entry is None or entry.id not in snapshot.allowed(principal):
                raise model_not_found(model)
            call.model = entry.id
            upstream_op = _upstream_operation(entry, self.op, model)
            watcher = loop.create_task(_watch_disconnect(receive, task, call))
            codecs = self.schema.codecs(call, body, self.op, upstream_op)
            await runtime.proxy.serve(call, body, entry, codecs, send)
        except APIError as exc:
            call.status = exc.status
            call.finished = True
            await send_error(send, exc, body=self.schema.error_body(exc, call.request_id))
        except ClientGone:
            call.disconnected = True
            call.status = 499
        except asyncio.CancelledError:
            if not call.disconnected:
                raise
            task.uncancel()
            call.status = call.status or 499  # nginx's "client closed request"
        except Exception:
            # A bug, not a client's or upstream's fault: log it whole, answer in the envelope.
            log.exception("request %s failed", call.request_id)
            await _internal_error(call, send, self.schema)
        finally:
            if watcher is not None:
                watcher.cancel()
            metrics.inflight.dec()
            metrics.record(call, loop.time() - call.started)


async def _internal_error(call: Call, send: Send, schema: ClientSchema) -> None:
    error = APIError(
        500,
        f"Internal gateway error (request id {call.request_id}).",
        type="server_error",
        code="internal_error",
    )
    if call.finished:
        return
    call.finished = True
    if call.status == 0:
        call.status = 500
        await send_error(send, error, body=schema.error_body(error, call.request_id))
    else:  # the stream has started: end it the way upstream failures end it
        await send({"type": "http.response.body", "body": schema.error_event(error)})


def _upstream_operation(entry: ModelEntry, op: Operation, requested: str) -> Operation:
    upstream = capability_route(entry, op)
    if upstream is None:
        raise bad_request(f"The model `{requested}` does not support {op.value}.", "model")
    if not entry.tiers:
        raise no_backend(requested)
    return upstream


def model_object(entry: ModelEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "model",
        "created": entry.created,
        "owned_by": entry.namespace,
    }


def inference_endpoints(runtime: Runtime) -> dict[str, Inference]:
    return {
        "/v1/chat/completions": Inference(runtime, Operation.chat),
        "/v1/completions": Inference(runtime, Operation.completions),
        "/v1/embeddings": Inference(runtime, Operation.embeddings),
        "/v1/messages": Inference(runtime, Operation.messages, anthropic.SCHEMA),
    }


def router(runtime: Runtime, inference: dict[str, Inference]) -> APIRouter:
    api = APIRouter()
    for path, endpoint in inference.items():
        # A Route whose endpoint is not a function is served as a plain ASGI app.
        api.routes.append(Route(path, endpoint, methods=["POST"]))

    @api.get("/v1/models")
    async def list_models(request: Request) -> Response:
        snapshot = runtime.snapshot
        principal = authenticate(request.scope, snapshot)
        listed = snapshot.listed(principal)
        if anthropic.VERSION_HEADER in request.headers:
            return json_response(anthropic.models_page(listed))
        return json_response({"object": "list", "data": [model_object(m) for m in listed]})

    @api.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> Response:
        snapshot = runtime.snapshot
        principal = authenticate(request.scope, snapshot)
        entry = snapshot.models.get(model_id)
        if entry is None or entry.id not in snapshot.allowed(principal):
            raise model_not_found(model_id)
        if anthropic.VERSION_HEADER in request.headers:
            return json_response(anthropic.model_info(entry))
        return json_response(model_object(entry))

    return api
