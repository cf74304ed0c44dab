"""Wiring: the ASGI application of one gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from .api import anthropic, kubellm, openai
from .api.inference import Inference
from .asgi import REQUEST_ID_KEY, Edge, json_response
from .errors import APIError
from .providers.base import Operation
from .runtime import Runtime
from .sources.files import FileSource

if TYPE_CHECKING:
    from .sources.kubernetes import KubernetesSource

log = logging.getLogger(__name__)


def _log_prefetch(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("OIDC keys not fetched at start: %s", task.exception())


def _error_response(request: Request, error: APIError) -> Response:
    if anthropic.VERSION_HEADER in request.headers:  # an anthropic SDK: its error shape
        body = anthropic.SCHEMA.error_body(error, request.scope[REQUEST_ID_KEY])
        return Response(body, error.status, error.headers, media_type="application/json")
    return json_response(error.payload(), error.status, error.headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return _error_response(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return _error_response(request, APIError(exc.status_code, message, code=code))


async def _validation_error(request: Request, exc: Exception) -> Response:
    return _error_response(
        request, APIError(400, f"Invalid request: {exc}", code="invalid_request")
    )


def create_app(runtime: Runtime, stopping: threading.Event) -> Edge:
    """The app; `stopping` is set on SIGTERM and fails readiness from then on."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = runtime.settings
        source: FileSource | KubernetesSource
        if settings.source == "kubernetes":
            # Imported only in that mode: kopf and its dependencies weigh 15 MiB of RSS.
            from .sources.kubernetes import KubernetesSource  # noqa: PLC0415

            source = KubernetesSource(runtime.apply, settings.namespaces, settings.kubeconfig)
        else:
            source = FileSource(settings.manifests, runtime.apply, settings.reload_interval)
        task = asyncio.create_task(
            source.run(runtime.ready), name=f"kubellm-{settings.source}-source"
        )
        if runtime.verifier is not None:
            # Keys fetched ahead so the first requests do not wait; failures are retried
            # on demand by the verifier itself.
            prefetch = asyncio.create_task(runtime.verifier.prefetch(), name="kubellm-oidc-keys")
            prefetch.add_done_callback(_log_prefetch)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await runtime.aclose()

    app = FastAPI(
        title="kubellm gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    inference = {
        "/v1/chat/completions": Inference(runtime, Operation.chat, openai.SCHEMA),
        "/v1/completions": Inference(runtime, Operation.completions, openai.SCHEMA),
        "/v1/embeddings": Inference(runtime, Operation.embeddings, openai.SCHEMA),
        "/v1/messages": Inference(runtime, Operation.messages, anthropic.SCHEMA),
    }
    app.include_router(openai.router(runtime, inference))
    app.include_router(kubellm.router(runtime, runtime.verifier, runtime.limiter))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if stopping.is_set():
            return json_response({"status": "shutting down"}, 503)
        if not runtime.ready.is_set():
            return json_response({"status": "not ready"}, 503)
        return json_response({"status": "ready", "generation": runtime.snapshot.generation})

    return Edge(app, fast_lane=inference)
