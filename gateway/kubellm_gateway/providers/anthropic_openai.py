"""Anthropic clients on OpenAI-shaped backends: Messages in, Chat Completions out, and back.

The request is mapped field by field (what OpenAI cannot honour is a 400 naming it),
the `chat.completion` becomes a `message`, and the chunk stream becomes the full
Messages event sequence: message_start, content_block_start/delta/stop for each text
or tool_use block, message_delta with stop_reason and usage, message_stop.
tests/golden/anthropic/ shows each rule as a pair.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import APIError, bad_request
from . import anthropic_wire as wire
from .sse import DONE

# Fields without a counterpart that change nothing a client can check: prompt caching
# (OpenAI caches on its own), thinking (an OpenAI model reasons, or not, on its own),
# and Anthropic's capacity and placement choices.
_IGNORED = frozenset(
    {"cache_control", "thinking", "service_tier", "inference_geo", "speed", "diagnostics"}
)
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "metadata",
        "stream",
        "output_config",
    }
)
# Blocks of earlier assistant turns with no OpenAI counterpart and no effect on the answer.
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def _unsupported(where: str, what: str) -> APIError:
    return bad_request(f"`{where}`: {what} cannot be sent to this model (an OpenAI API).", where)


def _text_of(content: Any, where: str) -> str:
    """The text of a system prompt or a tool result: a string or text blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"`{where}` must be a string or a list of blocks.", where)
    texts = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind != "text":
            raise _unsupported(f"{where}[{i}]", f"a block of type {kind!r} here")
        texts.append(str(block.get("text") or ""))
    return "\n\n".join(texts)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = wire.fields(block.get("source"))
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif kind == "url":
        url = str(source.get("url"))
    else:
        raise _unsupported(where, f"an image from a {kind!r} source")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_turn(content: Any, where: str) -> list[dict[str, Any]]:
    """Tool results first, as `tool` messages (OpenAI wants them right after the calls),
    then what the user wrote."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise bad_request(f"`{where}` must be a string or a list of blocks.", where)
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text") or "")})
        elif kind == "image":
            parts.append(_image(block, f"{where}[{i}]"))
        elif kind == "tool_result":
            result = block.get("content")
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id"),
                    "content": _text_of(
                        result if result is not None else "", f"{where}[{i}].content"
                    ),
                }
            )
        else:
            raise _unsupported(f"{where}[{i}]", f"a block of type {kind!r}")
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_turn(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise bad_request(f"`{where}` must be a string or a list of blocks.", where)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind not in _DROPPED_BLOCKS:
            raise _unsupported(f"{where}[{i}]", f"a block of type {kind!r}")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        out.append({"role": "system", "content": _text_of(system, "system")})
    for i, message in enumerate(body["messages"]):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            out.extend(_user_turn(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            out.append(_assistant_turn(message.get("content"), f"{where}.content"))
        else:
            raise bad_request(f"`{where}.role` must be user or assistant.", where)
    return out


def _tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise _unsupported(where, f"the Anthropic server tool {kind!r}")
    function: dict[str, Any] = {"name": tool.get("name")}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        raise bad_request("`tool_choice.type` must be auto, any, tool or none.", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request for a Messages request, or a 400 naming what OpenAI cannot honour."""
    for field, value in body.items():
        if field not in _MAPPED and field not in _IGNORED and value is not None:
            raise _unsupported(field, "this parameter")
    out: dict[str, Any] = {"model": body["model"], "messages": _messages(body)}
    out["max_completion_tokens"] = body["max_tokens"]
    if body.get("stream") is True:
        out["stream"] = True
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    for field in ("temperature", "top_p"):
        if body.get(field) is not None:
            out[field] = body[field]
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], out)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id") is not None:
        out["user"] = str(metadata["user_id"])
    output = body.get("output_config")
    if isinstance(output, dict) and isinstance(output.get("format"), dict):
        # output_config.effort has no counterpart every OpenAI model takes: ignored.
        schema = output["format"].get("schema")
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
    return out


def usage(openai: dict[str, Any]) -> dict[str, int]:
    """Anthropic usage from OpenAI's: cached prompt tokens are cache reads, apart."""
    details = openai.get("prompt_tokens_details")
    cached = int((details or {}).get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return {
        "input_tokens": int(openai.get("prompt_tokens") or 0) - cached,
        "output_tokens": int(openai.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def message_id(chat_id: Any) -> str:
    return "msg_" + str(chat_id or "").removeprefix("chatcmpl-")


def _tool_input(arguments: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise APIError(
            502,
            "The upstream model returned tool arguments that are not a JSON object.",
            type="server_error",
            code="upstream_error",
        )
    return value


def message_response(chat: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic `message` for a `chat.completion` (its first choice)."""
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = reply.get("content") or reply.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    for call in reply.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _tool_input(function.get("arguments")),
            }
        )
    return {
        "id": message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": chat.get("model"),
        "content": content,
        "stop_reason": wire.STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": usage(chat.get("usage") or {}),
    }


def _event(payload: dict[str, Any]) -> bytes:
    return wire.event(str(payload["type"]).encode(), orjson.dumps(payload))


class EventStream:
    """OpenAI chunk payloads to Anthropic stream events, for one request.

    Blocks open and close in order: text arriving while a tool call is open closes
    it and opens a text block, and a new tool call closes whatever is open.
    `usage` is the last OpenAI usage seen, for accounting.
    """

    __slots__ = ("_current", "_next", "_started", "_stop", "_tools", "usage")

    def __init__(self) -> None:
        self._started = False
        self._current: tuple[str, int] | None = None  # the open block: kind, index
        self._next = 0  # the index of the next block
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> block index
        self._stop: str | None = None
        self.usage: dict[str, Any] | None = None

    def __call__(self, payloads: list[bytes]) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        for payload in payloads:
            if payload == DONE:
                self._finish(parts)
                return b"".join(parts), True
            chunk = orjson.loads(payload)
            if not isinstance(chunk, dict):
                continue
            if not self._started:
                self._start(chunk, parts)
            if isinstance(chunk.get("usage"), dict):
                self.usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._choice(choice, parts)
        return b"".join(parts), False

    def _start(self, chunk: dict[str, Any], parts: list[bytes]) -> None:
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or "",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # OpenAI counts the prompt at the end: message_delta carries it.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        parts.append(_event({"type": "message_start", "message": message}))

    def _choice(self, choice: dict[str, Any], parts: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        text = delta.get("content") or delta.get("refusal")
        if text:
            self._text(str(text), parts)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._tool(call, parts)
        finish = choice.get("finish_reason")
        if finish:
            self._stop = wire.STOP_REASONS.get(finish, "end_turn")
            self._close(parts)

    def _open(self, kind: str, block: dict[str, Any], parts: list[bytes]) -> int:
        self._close(parts)
        index = self._next
        self._next += 1
        self._current = (kind, index)
        parts.append(
            _event({"type": "content_block_start", "index": index, "content_block": block})
        )
        return index

    def _close(self, parts: list[bytes]) -> None:
        if self._current is not None:
            parts.append(_event({"type": "content_block_stop", "index": self._current[1]}))
            self._current = None

    def _text(self, text: str, parts: list[bytes]) -> None:
        if self._current is not None and self._current[0] == "text":
            index = self._current[1]
        else:
            index = self._open("text", {"type": "text", "text": ""}, parts)
        delta = {"type": "text_delta", "text": text}
        parts.append(_event({"type": "content_block_delta", "index": index, "delta": delta}))

    def _tool(self, call: dict[str, Any], parts: list[bytes]) -> None:
        function = call.get("function") or {}
        index = self._tools.get(call.get("index", 0))
        if index is None:
            block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
            index = self._open("tool", {**block, "input": {}}, parts)
            self._tools[call.get("index", 0)] = index
        if arguments := function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": arguments}
            parts.append(_event({"type": "content_block_delta", "index": index, "delta": delta}))

    def _finish(self, parts: list[bytes]) -> None:
        if not self._started:
            self._start({}, parts)
        self._close(parts)
        delta = {"stop_reason": self._stop or "end_turn", "stop_sequence": None}
        # Anthropic's counts on message_delta are totals, input included once known.
        counts = usage(self.usage or {})
        parts.append(_event({"type": "message_delta", "delta": delta, "usage": counts}))
        parts.append(_event({"type": "message_stop"}))
