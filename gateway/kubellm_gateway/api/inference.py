"""The inference pipeline every client schema shares, as raw ASGI endpoints.

authenticate -> read and validate -> resolve and authorize -> admit against limits
-> proxy (retries, fallback, relaying) -> charge, record, trace, log. One pipeline,
parameterized by a `ClientSchema`: OpenAI's (api/openai.py) or Anthropic's
(api/anthropic.py). The endpoints build no framework request or response objects
(bench/README.md has the numbers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from ..asgi import (
    REQUEST_ID_KEY,
    SENT_KEY,
    ClientGone,
    Message,
    RawHeaders,
    Receive,
    Scope,
    Send,
    parse_json_object,
    read_body,
    send_error,
)
from ..auth import authenticate
from ..codecs import CodecChoice
from ..errors import APIError, bad_request, model_not_found, no_backend
from ..limits import Admission, rate_limit_headers
from ..providers.base import Operation
from ..routing import ModelEntry, Principal, Snapshot, capability_route
from ..runtime import Runtime
from ..telemetry import logs
from ..telemetry.metrics import Call

log = logging.getLogger(__name__)


class ClientSchema(Protocol):
    """A client API's conventions: what the pipeline asks of OpenAI's and Anthropic's."""

    def validate(self, op: Operation, body: dict[str, Any]) -> str:
        """The requested model id, or a 400 (the fields every backend needs are there)."""

    def codecs(
        self,
        call: Call,
        body: dict[str, Any],
        op: Operation,
        upstream: Operation,
        headers: RawHeaders,
    ) -> CodecChoice:
        """The codec of each attempt, by the provider it goes to (`headers`: the client's)."""

    def error_body(self, error: APIError, request_id: str) -> bytes: ...

    def error_event(self, error: APIError) -> bytes:
        """The event that ends a stream on error."""


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], call: Call) -> None:
    """Cancel the request when its client goes away, upstream call included."""
    while (await receive())["type"] != "http.disconnect":
        pass
    # uvicorn also reports "disconnect" once the response is complete: not a cancel then.
    if not call.finished:
        call.disconnected = True
        task.cancel()


def _with_headers(send: Send, extra: RawHeaders) -> Send:
    async def send_with(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *extra]
        await send(message)

    return send_with


def _policy(snapshot: Snapshot, principal: Principal, model_id: str) -> str:
    """The first policy (by name) granting the model: the `policy` label and log field."""
    granting = snapshot.grant(principal).granting(model_id)
    return min(f"{p.metadata.namespace}/{p.metadata.name}" for p in granting) if granting else "-"


class Inference:
    """POST /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/messages."""

    def __init__(self, runtime: Runtime, op: Operation, schema: ClientSchema) -> None:
        self.runtime = runtime
        self.op = op
        self.schema = schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        metrics = runtime.metrics
        snapshot = runtime.snapshot  # one read: the whole request sees one configuration
        loop = asyncio.get_running_loop()
        call = Call(self.op.value, scope[REQUEST_ID_KEY], started=loop.time())
        call.trace = runtime.tracing.request(scope["headers"], self.op.value, call.request_id)
        task = asyncio.current_task()
        assert task is not None
        watcher: asyncio.Task[None] | None = None
        admission: Admission | None = None
        metrics.started()
        try:
            # Before reading a body we may not want.
            principal = await authenticate(scope, snapshot, runtime.verifier)
            call.user, call.auth = principal.user, principal.auth
            raw = await read_body(scope, receive, runtime.settings.max_body_bytes)
            call.bytes_in = len(raw)
            body = parse_json_object(raw)
            model = self.schema.validate(self.op, body)
            call.stream = self.op is not Operation.embeddings and body.get("stream") is True
            entry = snapshot.models.get(model)
            if entry is None or entry.id not in snapshot.allowed(principal):
                raise model_not_found(model)
            call.model = entry.id
            call.policy = _policy(snapshot, principal, entry.id)
            upstream_op = _upstream_operation(entry, self.op, model)
            admission = await runtime.limiter.admit(snapshot, principal, entry.id)
            if admission.usages:
                send = _with_headers(send, rate_limit_headers(admission))
            watcher = loop.create_task(_watch_disconnect(receive, task, call))
            codecs = self.schema.codecs(call, body, self.op, upstream_op, scope["headers"])
            await runtime.proxy.serve(call, body, entry, codecs, send)
        except APIError as exc:
            call.status = exc.status
            call.error = exc.code or exc.type
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
            if admission is not None:
                # Tokens and cost are known now, at the end (streams included).
                await runtime.limiter.charge(
                    admission, call.input_tokens + call.output_tokens, call.cost
                )
            elapsed = loop.time() - call.started
            call.bytes_out = scope[SENT_KEY][0]
            metrics.record(call, elapsed)
            if call.trace is not None:
                call.trace.finish(call)
            logs.access(call, elapsed)


async def _internal_error(call: Call, send: Send, schema: ClientSchema) -> None:
    error = APIError(
        500,
        f"Internal gateway error (request id {call.request_id}).",
        type="server_error",
        code="internal_error",
    )
    call.error = error.code
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
