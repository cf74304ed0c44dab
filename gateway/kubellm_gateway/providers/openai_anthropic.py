"""OpenAI clients on Anthropic: Chat Completions in, the Messages API out, and back.

`AnthropicProvider` also serves Anthropic clients (`Operation.messages`): their body
goes upstream with only `model` replaced and the answer comes back as Anthropic sent
it. For chat, the request is mapped field by field (a field Anthropic cannot honour is
a 400 naming it, never dropped in silence), and the answer and its event stream are
mapped back into OpenAI's shapes as they arrive.

Every request carries `x-api-key` and the provider's pinned `anthropic-version`, never
`Authorization`: the anthropic SDK 2.x sends bearer tokens and a newer version by
default, and a gateway must not inherit whichever its clients use.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..errors import bad_request
from ..resources import AnthropicSettings, LLMProviderSpec
from . import anthropic_wire as wire
from .anthropic_request import messages_request
from .base import Exchange, FailureReason, Headers, Operation, UpstreamFailure
from .http import HTTPProvider

# What a malformed upstream body raises in translation (JSONDecodeError is a ValueError):
# a protocol failure of the upstream, not a gateway bug.
_UNREADABLE = (ValueError, TypeError, AttributeError)


def usage(anthropic: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage from Anthropic's: cache reads are the cached part of the prompt."""
    prompt = wire.prompt_tokens(anthropic)
    completion = int(anthropic.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": int(anthropic.get("cache_read_input_tokens") or 0)
        },
    }


def _arguments(tool_input: Any) -> str:
    return orjson.dumps(tool_input if tool_input is not None else {}).decode()


def chat_response(message: dict[str, Any], created: int) -> dict[str, Any]:
    """A `chat.completion` for an Anthropic `message`. Thinking blocks have no place in it."""
    text: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            function = {"name": block.get("name"), "arguments": _arguments(block.get("input"))}
            tool_calls.append({"id": block.get("id"), "type": "function", "function": function})
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) if text or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    stop_reason = message.get("stop_reason")
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": wire.FINISH_REASONS.get(str(stop_reason), "stop"),
            }
        ],
        "usage": usage(message.get("usage") or {}),
    }


def stream_failure(payload: dict[str, Any]) -> UpstreamFailure:
    """An `error` stream event, as the failure it is (before the first byte: retryable)."""
    error = wire.fields(payload.get("error"))
    kind = str(error.get("type") or "api_error")
    message = str(error.get("message") or "the upstream stream reported an error")
    return UpstreamFailure(
        FailureReason.status,
        message,
        status=wire.status_of(kind),
        error={"message": message, "type": kind, "param": None, "code": None},
    )


class ChunkStream:
    """Anthropic stream events to `chat.completion.chunk` payloads, for one exchange.

    Tool calls are numbered in the order they start: Anthropic numbers content
    blocks, and a text block between two tool calls must not shift the second one's
    OpenAI `index`. `ping`, thinking and unknown events carry nothing for OpenAI.
    """

    __slots__ = ("_created", "_done", "_head", "_silent", "_tools", "_usage")

    def __init__(self, created: int) -> None:
        self._created = created
        self._head: dict[str, Any] = {}
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._silent: set[int] = set()  # tool blocks with no arguments yet
        self._usage: dict[str, Any] = {}
        self._done = False

    def __call__(self, payloads: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for payload in payloads:
            if self._done:
                break
            event = orjson.loads(payload)
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if kind == "content_block_delta":
                self._delta(event, out)
            elif kind == "content_block_start":
                self._block(event, out)
            elif kind == "content_block_stop":
                self._block_end(event, out)
            elif kind == "message_start":
                self._start(event, out)
            elif kind == "message_delta":
                self._stop(event, out)
            elif kind == "message_stop":
                self._done = True
                out.append(orjson.dumps({**self._head, "choices": [], "usage": usage(self._usage)}))
                out.append(b"[DONE]")
            elif kind == "error":
                raise stream_failure(event)
        return out

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return orjson.dumps({**self._head, "choices": [choice], "usage": None})

    def _start(self, event: dict[str, Any], out: list[bytes]) -> None:
        message = event.get("message") or {}
        self._head = {
            "id": message.get("id"),
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": message.get("model"),
        }
        self._usage = dict(message.get("usage") or {})
        out.append(self._chunk({"role": "assistant", "content": ""}))

    def _block(self, event: dict[str, Any], out: list[bytes]) -> None:
        block = event.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            block_index = int(event.get("index") or 0)
            index = self._tools[block_index] = len(self._tools)
            self._silent.add(block_index)
            call = {
                "index": index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            out.append(self._chunk({"tool_calls": [call]}))
        elif kind == "text" and block.get("text"):
            out.append(self._chunk({"content": block["text"]}))

    def _delta(self, event: dict[str, Any], out: list[bytes]) -> None:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            out.append(self._chunk({"content": delta.get("text") or ""}))
        elif kind == "input_json_delta" and delta.get("partial_json"):
            block_index = int(event.get("index") or 0)
            self._silent.discard(block_index)
            self._arguments(block_index, str(delta["partial_json"]), out)

    def _block_end(self, event: dict[str, Any], out: list[bytes]) -> None:
        # A tool without parameters streams no input at all; OpenAI clients parse "{}".
        block_index = int(event.get("index") or 0)
        if block_index in self._silent:
            self._silent.discard(block_index)
            self._arguments(block_index, "{}", out)

    def _arguments(self, block_index: int, fragment: str, out: list[bytes]) -> None:
        index = self._tools.get(block_index)
        if index is not None:
            call = {"index": index, "function": {"arguments": fragment}}
            out.append(self._chunk({"tool_calls": [call]}))

    def _stop(self, event: dict[str, Any], out: list[bytes]) -> None:
        # Counts on message_delta are cumulative: they replace, never add.
        self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        stop_reason = (event.get("delta") or {}).get("stop_reason")
        if stop_reason is not None:
            out.append(self._chunk({}, wire.FINISH_REASONS.get(stop_reason, "stop")))


class ChatExchange(Exchange):
    """An Anthropic exchange read as OpenAI chat: the message and stream translated."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Exchange) -> None:
        self._inner = inner

    async def read(self) -> bytes:
        data = await self._inner.read()
        try:
            message = orjson.loads(data)
            if not isinstance(message, dict):
                raise TypeError("not a message object")
            return orjson.dumps(chat_response(message, int(time.time())))
        except _UNREADABLE as exc:
            raise UpstreamFailure(FailureReason.protocol, f"unreadable message: {exc}") from None

    async def batches(self) -> AsyncIterator[list[bytes]]:
        translate = ChunkStream(int(time.time()))
        async for batch in self._inner.batches():
            try:
                chunks = translate(batch)
            except _UNREADABLE as exc:
                raise UpstreamFailure(FailureReason.protocol, f"unreadable event: {exc}") from None
            if chunks:
                yield chunks

    async def aclose(self) -> None:
        await self._inner.aclose()


class MessagesExchange(Exchange):
    """An Anthropic exchange for Anthropic clients: payloads as they come, except that an
    `error` as the very first event is a failed attempt (so it can fall back), as a 529
    status would have been."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Exchange) -> None:
        self._inner = inner

    async def read(self) -> bytes:
        return await self._inner.read()

    async def batches(self) -> AsyncIterator[list[bytes]]:
        first = True
        async for batch in self._inner.batches():
            if first and batch and wire.event_type(batch[0]) == b"error":
                try:
                    event = orjson.loads(batch[0])
                except orjson.JSONDecodeError:
                    event = {}
                raise stream_failure(wire.fields(event))
            first = False
            yield batch

    async def aclose(self) -> None:
        await self._inner.aclose()


def openai_failure(failure: UpstreamFailure) -> UpstreamFailure:
    """Anthropic's error in OpenAI's shape; a spend limit is final for this backend."""
    error = failure.error or {}
    details = wire.fields(error.get("details"))
    code = details.get("error_code") if isinstance(details.get("error_code"), str) else None
    spent = failure.status == 429 and code is not None and code.endswith("spend_limit_reached")
    return UpstreamFailure(
        failure.reason,
        failure.message,
        status=failure.status,
        retry_after=failure.retry_after,
        error={"message": failure.message, "type": error.get("type"), "param": None, "code": code}
        if failure.error is not None
        else None,
        final=spent,
    )


class AnthropicProvider(HTTPProvider):
    operations = frozenset({Operation.chat, Operation.messages})

    def __init__(self, name: str, spec: LLMProviderSpec, api_key: str | None) -> None:
        super().__init__(name, spec, api_key)
        settings = spec.anthropic or AnthropicSettings()
        self._version = settings.version
        self._max_tokens = settings.defaultMaxTokens

    def url(self, op: Operation, model: str) -> str:
        return self.spec.base_url + "/v1/messages"

    def headers(self, forward: Headers) -> dict[str, str]:
        headers = {
            **forward,
            "content-type": "application/json",
            "anthropic-version": self._version,
        }
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def payload(self, op: Operation, body: dict[str, Any], model: str, stream: bool) -> bytes:
        if op is Operation.messages:
            return orjson.dumps({**body, "model": model})
        return orjson.dumps(messages_request(body, model, stream, self._max_tokens))

    async def open(
        self, op: Operation, body: dict[str, Any], model: str, stream: bool, forward: Headers
    ) -> Exchange:
        if op not in self.operations:
            raise bad_request(
                f"Anthropic has no {op.value} API: the model must not list `{op.value}` "
                "among its capabilities."
            )
        try:
            exchange = await super().open(op, body, model, stream, forward)
        except UpstreamFailure as failure:
            raise openai_failure(failure) from None
        if op is Operation.messages:
            return MessagesExchange(exchange) if stream else exchange
        return ChatExchange(exchange)
