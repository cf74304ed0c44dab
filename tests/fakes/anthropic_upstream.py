"""A fake Anthropic Messages API for kubellm's integration tests.

It runs on the OpenAI fake's plumbing (tests/fakes/upstream.py: uvicorn on 127.0.0.1 in
a thread, requests recorded, `fail_next`, disconnects seen, connections reset on cue), and
answers as Anthropic does. Every answer, event and error body is built from the official
`anthropic` package's types, so a shape the SDK would not parse cannot be sent; every
request is validated against the package's `MessageCreateParams` and anything it does not
describe (an unknown field, a misspelt block type, a coerced value) is refused with a 400,
and recorded in `rejected`.

The package's types follow API version 2026-10-21, which dropped `temperature`, `top_p` and
`top_k`: those are checked by hand, accepted on older versions and refused on that one.
Both auth styles are accepted (`x-api-key`, and `Authorization: Bearer` as the SDK 2.x
sends); `anthropic-version` is required.

Behaviour is chosen by the model name:

- any other name: text, ``"Hello from <model>: <the last user turn's text>"``, one
  `text_delta` per word (tool results count as the user's text, images as "[image]");
- ``tools``: a text block, a tool_use, another text block, another tool_use (two parallel
  calls, Paris then Tokyo, named after the request's first tool), stop_reason tool_use;
- ``thinking``: a thinking block before the text; ``refusal``, ``pause``: those stop
  reasons; ``cached``: usage with cache reads and writes;
- ``overloaded-mid-stream``: an `error` event after three events (50 ms apart);
  ``overloaded-first``: an `error` event as the first event of a 200 stream;
- ``fail-400``, ``fail-401``, ``fail-404``, ``fail-429`` (retry-after: 1), ``fail-429-spend``
  (a spend limit: details.error_code), ``fail-500``, ``fail-529``: that error;
- ``hang``, ``slow-first-byte``, ``drop-mid-stream`` and the ``"fake"`` body knobs work as in
  the OpenAI fake (``chunks`` counts reply words).

`stop_sequences` cut the text at the first match (stop_reason stop_sequence) and
`max_tokens` at that many pieces (stop_reason max_tokens).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import uuid
from typing import Any

import orjson
import pydantic
from anthropic.types import (
    InputJSONDelta,
    Message,
    MessageDeltaUsage,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    SignatureDelta,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
)
from anthropic.types.message_create_params import MessageCreateParams
from anthropic.types.raw_message_delta_event import Delta
from anthropic.types.shared import ErrorResponse

from tests.fakes.upstream import FakeUpstream, Recorded, _ApiError, _Exchange, _plan
from tests.support import sdk_types

VERSIONS = ("2023-01-01", "2023-06-01", "2026-10-21")
# The version that dropped the sampling parameters (and which the package's types follow).
NO_SAMPLING_VERSION = "2026-10-21"
_SAMPLING = {"temperature": (0.0, 1.0), "top_p": (0.0, 1.0), "top_k": (0, math.inf)}
_PARAMS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(MessageCreateParams)

_ERROR_MODELS: dict[str, tuple[int, str, str]] = {
    "fail-400": (400, "invalid_request_error", "messages: text content blocks must be non-empty"),
    "fail-401": (401, "authentication_error", "invalid x-api-key"),
    "fail-404": (404, "not_found_error", "model: fail-404"),
    "fail-429": (429, "rate_limit_error", "Number of requests has exceeded your rate limit."),
    "fail-429-spend": (
        429,
        "rate_limit_error",
        "You have reached your specified API usage limits.",
    ),
    "fail-500": (500, "api_error", "Internal server error"),
    "fail-529": (529, "overloaded_error", "Overloaded"),
}
_DETAILS = {"fail-429-spend": {"error_code": "enforced_spend_limit_reached"}}


def error_body(status: int, error_type: str, message: str, **error: Any) -> dict[str, Any]:
    """Anthropic's error body, checked against the package's ErrorResponse."""
    body = {
        "type": "error",
        "error": {"type": error_type, "message": message, **error},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }
    return _dump(ErrorResponse.model_validate(body))


def _dump(model: pydantic.BaseModel) -> dict[str, Any]:
    # `type` first, as Anthropic writes it (and as the gateway reads it without parsing).
    payload = model.model_dump(mode="json", exclude_unset=True)
    return {"type": payload.pop("type"), **payload}


def request_problems(body: dict[str, Any], version: str) -> list[str]:
    """Why the package's request types (and the version's sampling rules) refuse `body`."""
    body = dict(body)
    problems = []
    for field, (low, high) in _SAMPLING.items():
        value = body.pop(field, None)
        if value is None:
            continue
        if version == NO_SAMPLING_VERSION:
            problems.append(f"{field}: not supported with anthropic-version {version}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{field}: must be a number")
        elif not low <= value <= high:
            problems.append(f"{field}: must be within [{low}, {high}]")
    return problems + sdk_types.problems(_PARAMS, body)


def _user_text(body: dict[str, Any]) -> tuple[int, str]:
    """Prompt words (input tokens) and the last user turn's text, tool results included."""
    words = 0
    system = body.get("system")
    for block in [system] if isinstance(system, str) else system or []:
        text = block if isinstance(block, str) else block.get("text", "")
        words += len(text.split())
    last = ""
    for message in body["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        texts = []
        for block in blocks:
            if block["type"] == "text":
                texts.append(block["text"])
            elif block["type"] == "image":
                texts.append("[image]")
            elif block["type"] == "tool_result":
                result = block.get("content") or ""
                parts = [{"text": result}] if isinstance(result, str) else result
                texts += [p.get("text", "") for p in parts]
        text = " ".join(texts)
        words += len(text.split())
        if message["role"] == "user":
            last = text
    return words, last


class _Reply:
    """The fake's deterministic answer to one request, as a message or as events."""

    def __init__(self, model: str, body: dict[str, Any], chunks: int | None) -> None:
        self.model = model
        self.id = f"msg_{uuid.uuid4().hex[:24]}"
        self.input_tokens, last_user = _user_text(body)
        self.stop_reason = {"refusal": "refusal", "pause": "pause_turn"}.get(model, "end_turn")
        self.stop_sequence: str | None = None
        words = ["Hello", "from", f"{model}:", *last_user.split()]
        if chunks is not None:
            words = [words[i % len(words)] for i in range(chunks)]
        # (kind, pieces, extra) per content block; a piece is one delta and one output token.
        self.blocks: list[tuple[str, list[str], dict[str, Any]]] = []
        if model == "thinking":
            self.blocks.append(("thinking", ["Let me", " think."], {"signature": "sig-fake"}))
        if model == "tools":
            tools = body.get("tools") or [{"name": "get_weather"}]
            name = tools[0]["name"]
            for i, (lead, city) in enumerate(
                (("Checking Paris.", "Paris"), (" And Tokyo.", "Tokyo"))
            ):
                self.blocks.append(("text", [lead], {}))
                arguments = orjson.dumps({"city": city}).decode()
                pieces = [arguments[j : j + 8] for j in range(0, len(arguments), 8)]
                self.blocks.append(("tool_use", pieces, {"id": f"toolu_fake_{i}", "name": name}))
            self.stop_reason = "tool_use"
        else:
            self.blocks.append(
                ("text", [w if i == 0 else f" {w}" for i, w in enumerate(words)], {})
            )
        self._cut(body)
        self.cached = model == "cached"

    def _cut(self, body: dict[str, Any]) -> None:
        """Stop at the first stop sequence in the text, or at max_tokens pieces."""
        kind, pieces, extra = self.blocks[-1]
        if kind == "text":
            text = "".join(pieces)
            hits = [(text.find(s), s) for s in body.get("stop_sequences") or () if s in text]
            if hits:
                at, sequence = min(hits)
                kept, length = [], 0
                for piece in pieces:
                    if length + len(piece) > at:
                        if at > length:
                            kept.append(piece[: at - length])
                        break
                    kept.append(piece)
                    length += len(piece)
                self.blocks[-1] = (kind, kept, extra)
                self.stop_reason, self.stop_sequence = "stop_sequence", sequence
        budget = body["max_tokens"]
        if sum(len(b[1]) for b in self.blocks) > budget:
            kept_blocks = []
            for kind, pieces, extra in self.blocks:
                if budget <= 0:
                    break
                kept_blocks.append((kind, pieces[:budget], extra))
                budget -= len(pieces)
            self.blocks = kept_blocks
            self.stop_reason, self.stop_sequence = "max_tokens", None

    def usage(self) -> Usage:
        output = sum(len(pieces) for _, pieces, _ in self.blocks)
        if self.cached:
            return Usage(
                input_tokens=self.input_tokens,
                output_tokens=output,
                cache_read_input_tokens=100,
                cache_creation_input_tokens=20,
            )
        return Usage(input_tokens=self.input_tokens, output_tokens=output)

    @staticmethod
    def _block(kind: str, pieces: list[str], extra: dict[str, Any], whole: bool) -> Any:
        text = "".join(pieces) if whole else ""
        if kind == "thinking":
            return ThinkingBlock(type="thinking", thinking=text, signature=extra["signature"])
        if kind == "tool_use":
            tool_input = orjson.loads(text) if whole else {}
            return ToolUseBlock(
                type="tool_use", input=tool_input, id=extra["id"], name=extra["name"]
            )
        return TextBlock(type="text", text=text)

    def message(self) -> dict[str, Any]:
        content = [self._block(*block, whole=True) for block in self.blocks]
        return _dump(self._message(content, self.stop_reason, self.stop_sequence, self.usage()))

    def _message(
        self, content: list[Any], stop_reason: str | None, sequence: str | None, usage: Usage
    ) -> Message:
        return Message(
            id=self.id,
            type="message",
            role="assistant",
            model=self.model,
            content=content,
            stop_reason=stop_reason,
            stop_sequence=sequence,
            usage=usage,
        )

    def events(self, error_after: int | None) -> list[bytes]:
        start_usage = self.usage().model_copy(update={"output_tokens": 1})
        events: list[pydantic.BaseModel | dict[str, Any]] = [
            RawMessageStartEvent(
                type="message_start", message=self._message([], None, None, start_usage)
            ),
            {"type": "ping"},  # Anthropic's keep-alive; the package has no type for it
        ]
        for index, (kind, pieces, extra) in enumerate(self.blocks):
            start = self._block(kind, pieces, extra, whole=False)
            events.append(
                RawContentBlockStartEvent(
                    type="content_block_start", index=index, content_block=start
                )
            )
            for piece in pieces:
                delta: Any
                if kind == "thinking":
                    delta = ThinkingDelta(type="thinking_delta", thinking=piece)
                elif kind == "tool_use":
                    delta = InputJSONDelta(type="input_json_delta", partial_json=piece)
                else:
                    delta = TextDelta(type="text_delta", text=piece)
                events.append(
                    RawContentBlockDeltaEvent(type="content_block_delta", index=index, delta=delta)
                )
            if kind == "thinking":
                signature = SignatureDelta(type="signature_delta", signature=extra["signature"])
                events.append(
                    RawContentBlockDeltaEvent(
                        type="content_block_delta", index=index, delta=signature
                    )
                )
            events.append(RawContentBlockStopEvent(type="content_block_stop", index=index))
        output = self.usage().output_tokens
        events.append(
            RawMessageDeltaEvent(
                type="message_delta",
                delta=Delta(stop_reason=self.stop_reason, stop_sequence=self.stop_sequence),
                usage=MessageDeltaUsage(output_tokens=output),
            )
        )
        events.append(RawMessageStopEvent(type="message_stop"))
        if error_after is not None:
            events = events[:error_after]
            error = error_body(529, "overloaded_error", "Overloaded")
            events.append({"type": "error", "error": error["error"]})
        return [_sse(e) for e in events]


def _sse(event: pydantic.BaseModel | dict[str, Any]) -> bytes:
    payload = event if isinstance(event, dict) else _dump(event)
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class FakeAnthropic(FakeUpstream):
    """A fake Anthropic API on 127.0.0.1; `url` is the LLMProvider baseURL (no /v1)."""

    def __init__(self, api_key: str = "upstream-secret-key") -> None:
        # The OpenAI flavor of the base only adds its stand-in x-request-id and rate-limit
        # headers to each answer; the gateway reads neither.
        super().__init__("openai", api_key)
        self.rejected: list[str] = []  # why requests were refused as invalid

    def __enter__(self) -> FakeAnthropic:
        super().__enter__()
        return self

    @property
    def url(self) -> str:
        return super().url.removesuffix("/v1")

    def clear(self) -> None:
        super().clear()
        self.rejected.clear()

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Like the base's, with Anthropic's error body for the status by default."""
        if body is None:
            kind, message = next(
                ((k, m) for s, k, m in _ERROR_MODELS.values() if s == status),
                ("api_error", f"Fake upstream error {status}"),
            )
            body = error_body(status, kind, message)
        super().fail_next(count, status, retry_after=retry_after, body=body)

    def _refuse(self, status: int, error_type: str, message: str) -> _ApiError:
        return _ApiError(status, error_body(status, error_type, message))

    async def _produce(self, exchange: _Exchange, record: Recorded, had_body: bool) -> None:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            raise _ApiError(*failure)
        if (record.method, record.path) != ("POST", "/v1/messages"):
            raise self._refuse(404, "not_found_error", f"Not found: {record.method} {record.path}")
        key = record.headers.get("x-api-key") or record.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        if key != self.api_key:
            raise self._refuse(401, "authentication_error", "invalid x-api-key")
        version = record.headers.get("anthropic-version")
        if version not in VERSIONS:
            message = f"anthropic-version: {version!r} is not a valid version"
            if version is None:
                message = "anthropic-version: header is required"
            raise self._refuse(400, "invalid_request_error", message)
        body: dict[str, Any] = record.body if isinstance(record.body, dict) else {}
        model = body.get("model")
        plan = _plan(str(model), body)
        body = {k: v for k, v in body.items() if k != "fake"}
        if problems := request_problems(body, version):
            self.rejected.append(f"{record.path}: {'; '.join(problems)}")
            raise self._refuse(400, "invalid_request_error", "; ".join(problems))
        assert isinstance(model, str)
        await asyncio.sleep(plan.first_byte_delay)
        if model == "hang":
            await asyncio.Event().wait()  # never set: only the client leaving ends this
        if failure_spec := _ERROR_MODELS.get(model):
            status, kind, message = failure_spec
            headers = [(b"retry-after", b"1")] if model == "fail-429" else []
            details = {"details": _DETAILS[model]} if model in _DETAILS else {}
            raise _ApiError(status, error_body(status, kind, message, **details), headers)
        stream = body.get("stream") is True
        if plan.fail_after is not None and not stream:
            exchange.abort()
            return
        reply = _Reply(model, body, plan.chunks)
        if not stream:
            await exchange.json(200, reply.message())
            return
        error_after = {"overloaded-mid-stream": 3, "overloaded-first": 0}.get(model)
        if model == "overloaded-mid-stream":
            # Paced, so the events before the error reach the gateway before it does.
            plan = dataclasses.replace(plan, delay=max(plan.delay, 0.05))
        await exchange.stream(reply.events(error_after), plan)
