"""A fake OpenAI / Azure OpenAI upstream for kubellm's integration tests.

It serves real HTTP with uvicorn on 127.0.0.1 from a background thread, so the gateway (a
separate process) reaches it over sockets while the tests inspect it in-process. The wire
shapes follow shared/PROTOCOLS.md and the openai SDK's types.

Behaviour is chosen by the model name the gateway sends (openai: body ``model``; azure: the
deployment in the path):

- any other name: success, a deterministic reply ``"Hello from <model>: <last user words>"``;
- ``fail-400``, ``fail-429`` (with ``retry-after: 1``), ``fail-500``, ``fail-503``: that error;
- ``hang``: never answers; ``slow-first-byte``: waits 1 s before the first byte;
- ``drop-mid-stream``: resets the connection after 3 stream events (non-stream: at once);
- ``tools``: chat replies with two tool calls.

A ``"fake"`` object in the request body tunes one request: ``chunks`` (reply words),
``delay`` (seconds between stream events), ``first_byte_delay`` and ``fail_after`` (reset the
connection after that many stream events, counting every ``data:`` line including Azure's
prompt-filter chunk; any value resets a non-stream request at once).
``FakeUpstream.fail_next`` overrides all of this for the next requests.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import math
import re
import secrets
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_FINGERPRINT = "fp_kubellm_fake"
_SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
_JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
# Static stand-ins for the headers each service adds, so header pass-through can be tested.
_FLAVOR_HEADERS: dict[str, Headers] = {
    "openai": [
        (b"openai-version", b"2020-10-01"),
        (b"openai-processing-ms", b"1"),
        (b"x-ratelimit-limit-requests", b"10000"),
        (b"x-ratelimit-remaining-requests", b"9999"),
        (b"x-ratelimit-reset-requests", b"6ms"),
        (b"x-ratelimit-limit-tokens", b"1000000"),
        (b"x-ratelimit-remaining-tokens", b"999000"),
        (b"x-ratelimit-reset-tokens", b"0s"),
    ],
    "azure": [
        (b"x-ratelimit-remaining-requests", b"999"),
        (b"x-ratelimit-remaining-tokens", b"99000"),
    ],
}

_OPENAI_ROUTES = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/completions"): "completions",
    ("POST", "/v1/embeddings"): "embeddings",
    ("GET", "/v1/models"): "models",
}
_AZURE_ROUTE = re.compile(r"/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)")

_ERROR_MODELS = {"fail-400": 400, "fail-429": 429, "fail-500": 500, "fail-503": 503}
_MODELS = [
    "gpt-4o-mini",
    "text-embedding-3-small",
    "tools",
    "hang",
    "slow-first-byte",
    "drop-mid-stream",
    *_ERROR_MODELS,
]

_FILTER_OK = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}
_PROMPT_FILTERS = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            **_FILTER_OK,
            "jailbreak": {"filtered": False, "detected": False},
        },
    }
]
# Azure opens every stream with this choice-less chunk; clients indexing choices[0] crash on it.
_AZURE_FIRST_CHUNK = {
    "id": "",
    "object": "",
    "created": 0,
    "model": "",
    "choices": [],
    "prompt_filter_results": _PROMPT_FILTERS,
}


def _envelope(
    message: str, type_: str | None, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    # OpenAI always sends all four keys, null or not; Azure's bodies are given the same shape.
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_DEFAULT_ERRORS = {
    400: _envelope(
        "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "invalid_request_error",
        "max_tokens",
        "unsupported_parameter",
    ),
    429: _envelope(
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in 1s.",
        "requests",
        code="rate_limit_exceeded",
    ),
    500: _envelope(
        "The server had an error while processing your request. Sorry about that!", "server_error"
    ),
    503: _envelope("The server is overloaded or not ready yet.", "server_error"),
}


def _error_body(status: int) -> dict[str, Any]:
    generic_type = "server_error" if status >= 500 else "invalid_request_error"
    return _DEFAULT_ERRORS.get(status, _envelope(f"Fake upstream error {status}", generic_type))


def _retry_headers(seconds: float) -> Headers:
    # retry-after takes whole seconds; the openai SDK reads the precise retry-after-ms first.
    return [
        (b"retry-after", str(math.ceil(seconds)).encode()),
        (b"retry-after-ms", str(round(seconds * 1000)).encode()),
    ]


class _ApiError(Exception):
    """An error response, raised from anywhere in request handling."""

    def __init__(self, status: int, body: Any, headers: Headers | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []


@dataclass
class Recorded:
    """One request the fake received. The flags change while its response runs; they are
    plain bools because only the server thread writes them and bool stores are atomic."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    disconnected: bool = False
    finished: bool = False


@dataclass(frozen=True)
class _Plan:
    """Timing and failure knobs of one request (the names are those of the "fake" field)."""

    chunks: int | None = None
    delay: float = 0.0
    first_byte_delay: float = 0.0
    fail_after: int | None = None


_KNOBS = {f.name for f in dataclasses.fields(_Plan)}
_MODEL_PLANS = {
    "slow-first-byte": _Plan(first_byte_delay=1.0),
    "drop-mid-stream": _Plan(fail_after=3),
}


def _plan(model: str, body: dict[str, Any]) -> _Plan:
    knobs = body.get("fake") or {}
    if unknown := knobs.keys() - _KNOBS:
        message = f"Unknown fake knobs {sorted(unknown)}; known: {sorted(_KNOBS)}"
        raise _ApiError(400, _envelope(message, "invalid_request_error", "fake"))
    return dataclasses.replace(_MODEL_PLANS.get(model, _Plan()), **knobs)


def _content_text(content: Any) -> str:
    """Text of a message content: a string, or a list of parts of which text parts count."""
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return content if isinstance(content, str) else ""


def _prompt(kind: str, body: dict[str, Any]) -> tuple[list[str], str]:
    """All prompt texts (for prompt_tokens) and the last user text (echoed in the reply)."""
    if kind == "chat":
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        texts = [_content_text(m.get("content")) for m in messages]
        users = [t for m, t in zip(messages, texts, strict=True) if m.get("role") == "user"]
        return texts, users[-1] if users else ""
    prompt = body.get("prompt", "")
    texts = [prompt] if isinstance(prompt, str) else [p for p in prompt if isinstance(p, str)]
    return texts, texts[-1] if texts else ""


def _tool_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Two calls, named after the request's tools when it has some."""
    tools = [t["function"]["name"] for t in body.get("tools") or [] if t.get("type") == "function"]
    names = tools or ["get_weather"]
    return [
        {
            "id": f"call_fake_{i}",
            "type": "function",
            "function": {"name": names[i % len(names)], "arguments": f'{{"city": "{city}"}}'},
        }
        for i, city in enumerate(("Paris", "Tokyo"))
    ]


def _tool_call_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The streamed form: a header fragment per call, then its arguments in 8-char pieces."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        head = {"index": index, "id": call["id"], "type": "function"}
        deltas.append({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + 8]}}]}
            for i in range(0, len(arguments), 8)
        ]
    return deltas


def _sse(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class _Generation:
    """The fake's deterministic answer to a chat or completions request, as one response
    object or as stream events, in the flavor's wire shape."""

    def __init__(
        self, azure: bool, kind: str, model: str, body: dict[str, Any], plan: _Plan
    ) -> None:
        self.azure = azure
        self.chat = kind == "chat"
        self.model = model
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        texts, last_user = _prompt(kind, body)
        self.prompt_tokens = sum(len(t.split()) for t in texts)
        self.tool_calls = _tool_calls(body) if self.chat and model == "tools" else None
        words = ["Hello", "from", f"{model}:", *last_user.split()]
        if plan.chunks is not None:
            words = [words[i % len(words)] for i in range(plan.chunks)]
        self.text = " ".join(words)
        # One stream event per piece; completion_tokens counts them.
        texts_out = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        self.pieces: list[dict[str, Any]]
        if self.tool_calls:
            self.pieces = [{"delta": d} for d in _tool_call_deltas(self.tool_calls)]
        elif self.chat:
            self.pieces = [{"delta": {"content": t}} for t in texts_out]
        else:
            self.pieces = [{"text": t} for t in texts_out]
        self.finish_reason = "tool_calls" if self.tool_calls else "stop"

    def usage(self) -> dict[str, Any]:
        completion = len(self.pieces)
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }
        if self.chat:
            usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
            usage["completion_tokens_details"] = {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        return usage

    def _choice(
        self, content: dict[str, Any], finish: str | None, filters: dict[str, Any]
    ) -> dict[str, Any]:
        choice = {"index": 0, **content, "logprobs": None, "finish_reason": finish}
        if self.azure:
            choice["content_filter_results"] = filters
        return choice

    def _object(self, choices: list[dict[str, Any]], stream: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": f"{kind}.chunk" if stream and self.chat else kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
        }

    def response(self) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None if self.tool_calls else self.text,
                "refusal": None,
                "annotations": [],
            }
            if self.tool_calls:
                message["tool_calls"] = self.tool_calls
            content: dict[str, Any] = {"message": message}
        else:
            content = {"text": self.text}
        result = self._object([self._choice(content, self.finish_reason, _FILTER_OK)], False)
        result["usage"] = self.usage()
        if self.azure:
            result["prompt_filter_results"] = _PROMPT_FILTERS
        return result

    def events(self, stream_options: dict[str, Any]) -> list[bytes]:
        include_usage = stream_options.get("include_usage") is True
        # OpenAI pads chat chunks with random "obfuscation" unless asked not to; Azure does not.
        obfuscate = self.chat and not self.azure
        obfuscate &= stream_options.get("include_obfuscation") is not False

        def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
            payload = self._object(choices, True)
            if include_usage:  # "usage": null on every chunk but the last, absent when not asked
                payload["usage"] = usage
            if obfuscate:
                payload["obfuscation"] = secrets.token_urlsafe(6)
            return _sse(payload)

        events = [_sse(_AZURE_FIRST_CHUNK)] if self.azure else []
        if self.chat:
            role = {
                "role": "assistant",
                "content": None if self.tool_calls else "",
                "refusal": None,
            }
            events.append(chunk([self._choice({"delta": role}, None, {})]))
        events += [chunk([self._choice(piece, None, _FILTER_OK)]) for piece in self.pieces]
        last: dict[str, Any] = {"delta": {}} if self.chat else {"text": ""}
        events.append(chunk([self._choice(last, self.finish_reason, {})]))
        if include_usage:
            events.append(chunk([], self.usage()))
        return [*events, b"data: [DONE]\n\n"]


def _embeddings(model: str, body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("input")
    # A string, a list of strings, one token array, or a list of token arrays.
    single = isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int))
    inputs: list[Any] = [raw] if single else list(raw or [])
    data, tokens = [], 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else " ".join(map(str, item))
        tokens += len(text.split())
        # Multiples of 1/128 are exact in float32, so the base64 form decodes to the same floats.
        vector = [(b - 128) / 128 for b in hashlib.sha256(text.encode()).digest()[:8]]
        # The openai SDK asks for base64 unless the caller picked a format.
        embedding: object = vector
        if body.get("encoding_format") == "base64":
            embedding = base64.b64encode(struct.pack("<8f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def _models() -> dict[str, Any]:
    entry = {"object": "model", "created": 1_700_000_000, "owned_by": "kubellm-fake"}
    return {"object": "list", "data": [{"id": name, **entry} for name in _MODELS]}


class _Exchange:
    """Writes one response and keeps its Recorded flags true to what reached the socket."""

    def __init__(
        self,
        send: Send,
        record: Recorded,
        headers: Headers,
        watcher: asyncio.Future[None],
        abort: Callable[[], None],
    ) -> None:
        self._send = send
        self._record = record
        self._headers = headers
        self._watcher = watcher
        self._abort = abort

    async def _start(self, status: int, headers: Headers) -> None:
        message = {"type": "http.response.start", "status": status}
        await self._send({**message, "headers": self._headers + headers})

    async def _body(self, data: bytes, more: bool) -> None:
        # Marked before the last write, which reaches the client within the send: a test
        # may check the flag as soon as it has read the response. A client the watcher has
        # already seen leave gets nothing (uvicorn drops the write), so it is not finished.
        if not more and not self._record.disconnected:
            self._record.finished = True
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(self, status: int, payload: object, headers: Headers | None = None) -> None:
        data = orjson.dumps(payload)
        length = [(b"content-length", str(len(data)).encode())]
        await self._start(status, [*(headers or []), *_JSON_HEADERS, *length])
        await self._body(data, more=False)

    async def stream(self, events: list[bytes], plan: _Plan) -> None:
        await self._start(200, _SSE_HEADERS)
        for sent, event in enumerate(events):
            if sent == plan.fail_after:
                self.abort()
                return
            # Yield even without a delay so the disconnect watcher runs between events.
            await asyncio.sleep(plan.delay if sent else 0)
            await self._body(event, more=sent < len(events) - 1)

    def abort(self) -> None:
        # The server cut the connection, not the client: keep `disconnected` False.
        self._watcher.cancel()
        self._abort()


async def _watch_disconnect(receive: Receive, record: Recorded) -> None:
    # Once the body is read, receive() only returns when the client goes away (or the
    # response completes, which `finished` tells apart).
    while (await receive())["type"] != "http.disconnect":
        pass
    if not record.finished:
        record.disconnected = True


class FakeUpstream:
    """A fake OpenAI ("openai") or Azure OpenAI ("azure") server on 127.0.0.1."""

    def __init__(
        self, flavor: Literal["openai", "azure"] = "openai", api_key: str = "upstream-secret-key"
    ) -> None:
        self.flavor = flavor
        self.api_key = api_key
        # Entra ID access tokens the azure flavor accepts as `Authorization: Bearer`.
        self.bearer_tokens: set[str] = set()
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._failures: deque[tuple[int, Any, Headers]] = deque()
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    @property
    def url(self) -> str:
        """openai: the base URL with /v1 (LLMProvider baseURL); azure: the endpoint."""
        if not self._port:
            raise RuntimeError("FakeUpstream is not started")
        base = f"http://127.0.0.1:{self._port}"
        return f"{base}/v1" if self.flavor == "openai" else base

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already started")
        # httptools pinned: the disconnect and abort handling relies on its receive() semantics.
        # log_config=None leaves the test process's logging configuration alone, and
        # proxy_headers=False keeps scope["client"] the real peer, which _abort matches on.
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=0,
            http="httptools",
            ws="none",
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,
            log_config=None,
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(server)),
            name=f"fake-upstream-{self.flavor}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 5
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("FakeUpstream failed to start")
            time.sleep(0.005)
        self._port = server.servers[0].sockets[0].getsockname()[1]
        return self

    async def _serve(self, server: uvicorn.Server) -> None:
        self._loop = asyncio.get_running_loop()
        await server.serve()

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._shut_down)
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            raise RuntimeError("FakeUpstream did not stop")
        self._thread = self._loop = self._server = None
        self._port = 0

    def _shut_down(self) -> None:
        assert self._server is not None
        # uvicorn's graceful shutdown waits for open responses and "hang" never ends one;
        # closing the sockets ends them through the disconnect path instead.
        for connection in list(self._server.server_state.connections):
            connection.transport.close()
        self._server.should_exit = True

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget recorded requests and pending fail_next errors."""
        with self._lock:
            self.requests.clear()
            self._failures.clear()

    def wait_for(self, predicate: Callable[[Recorded], bool], timeout: float = 5.0) -> Recorded:
        """The first recorded request matching predicate, polling until timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                snapshot = list(self.requests)
            for record in snapshot:
                if predicate(record):
                    return record
            if time.monotonic() > deadline:
                seen = [(r.method, r.path, r.disconnected, r.finished) for r in snapshot]
                raise AssertionError(f"no matching request within {timeout}s; saw {seen}")
            time.sleep(0.01)

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `count` requests, whatever they are, with this error. `body` is
        the whole JSON body (default: the OpenAI envelope for the status); calls queue up."""
        headers = _retry_headers(retry_after) if retry_after is not None else []
        failure = (status, body if body is not None else _error_body(status), headers)
        with self._lock:
            self._failures.extend([failure] * count)

    # --- the ASGI side, run on the server thread ---

    async def _app(self, scope: Message, receive: Receive, send: Send) -> None:
        raw = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        record = Recorded(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope["query_string"].decode("latin-1"))),
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
        )
        with self._lock:
            self.requests.append(record)
        request_id = f"req_{uuid.uuid4().hex}".encode()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, record))
        exchange = _Exchange(
            send,
            record,
            [(b"x-request-id", request_id), *_FLAVOR_HEADERS[self.flavor]],
            watcher,
            lambda: self._abort(scope),
        )
        responder = asyncio.ensure_future(self._respond(exchange, record, bool(raw)))
        await asyncio.wait({responder, watcher}, return_when=asyncio.FIRST_COMPLETED)
        # Whichever ends first ends the other: a client that left stops the response.
        watcher.cancel()
        responder.cancel()
        with suppress(asyncio.CancelledError):
            await responder

    def _abort(self, scope: Message) -> None:
        """Reset the request's TCP connection, like a crashed upstream or proxy. ASGI has no
        way to do this, so find the connection's transport in uvicorn's server state."""
        assert self._server is not None
        for connection in self._server.server_state.connections:
            if isinstance(connection, HttpToolsProtocol) and connection.client == scope["client"]:
                connection.transport.abort()

    async def _respond(self, exchange: _Exchange, record: Recorded, had_body: bool) -> None:
        try:
            await self._produce(exchange, record, had_body)
        except _ApiError as error:
            await exchange.json(error.status, error.body, error.headers)

    async def _produce(self, exchange: _Exchange, record: Recorded, had_body: bool) -> None:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            raise _ApiError(*failure)
        kind, deployment = self._route(record)
        if kind == "models":
            await exchange.json(200, _models())
            return
        if had_body and record.body is None:
            message = "We could not parse the JSON body of your request."
            raise _ApiError(400, _envelope(message, "invalid_request_error"))
        body: dict[str, Any] = record.body if isinstance(record.body, dict) else {}
        model = deployment or body.get("model")
        if not isinstance(model, str):
            message = "you must provide a model parameter"
            raise _ApiError(400, _envelope(message, "invalid_request_error"))
        plan = _plan(model, body)
        await asyncio.sleep(plan.first_byte_delay)
        if model == "hang":
            await asyncio.Event().wait()  # never set: only the client leaving ends this
        if status := _ERROR_MODELS.get(model):
            headers = _retry_headers(1) if status == 429 else []
            raise _ApiError(status, _error_body(status), headers)
        stream = body.get("stream") is True and kind != "embeddings"
        if plan.fail_after is not None and not stream:
            exchange.abort()
        elif kind == "embeddings":
            await exchange.json(200, _embeddings(model, body))
        else:
            generation = _Generation(self.flavor == "azure", kind, model, body, plan)
            if stream:
                await exchange.stream(generation.events(body.get("stream_options") or {}), plan)
            else:
                await exchange.json(200, generation.response())

    def _route(self, record: Recorded) -> tuple[str, str | None]:
        """The endpoint kind and, for azure, the deployment; checks the URL and the key."""
        if self.flavor == "openai":
            kind = _OPENAI_ROUTES.get((record.method, record.path))
            if kind is None:
                message = f"Invalid URL ({record.method} {record.path})"
                raise _ApiError(404, _envelope(message, "invalid_request_error"))
            if record.headers.get("authorization") != f"Bearer {self.api_key}":
                message = "Incorrect API key provided."
                raise _ApiError(
                    401, _envelope(message, "invalid_request_error", None, "invalid_api_key")
                )
            return kind, None
        match = _AZURE_ROUTE.fullmatch(record.path)
        # Azure answers a missing api-version like an unknown path.
        if record.method != "POST" or match is None or "api-version" not in record.query:
            raise _ApiError(404, _envelope("Resource not found", None, code="404"))
        bearer = record.headers.get("authorization", "").removeprefix("Bearer ")
        if record.headers.get("api-key") != self.api_key and bearer not in self.bearer_tokens:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource."
            )
            raise _ApiError(401, _envelope(message, None, code="401"))
        deployment, path_kind = match.groups()
        return ("chat" if path_kind == "chat/completions" else path_kind), deployment
