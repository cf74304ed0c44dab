"""The Anthropic Messages request for an OpenAI chat request, field by field.

Every field is mapped, knowingly ignored, or refused with a 400 that names it: a
request is never answered as if a parameter had been honoured when it was dropped.
tests/golden/anthropic/ shows each rule as a request pair.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..errors import APIError, bad_request

# Fields without a counterpart that change nothing about the answer: store and
# metadata (OpenAI's stored completions), service_tier and the prompt_cache_* hints
# (OpenAI's capacity and caching), and stream_options (usage is always asked for).
_IGNORED = frozenset(
    {
        "stream_options",
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
    }
)
# Fields Anthropic cannot honour, accepted only at the value that asks for nothing.
_NEUTRAL: dict[str, Any] = {
    "n": 1,
    "logprobs": False,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logit_bias": {},
    "modalities": ["text"],
}
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "response_format",
    }
)
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)


def _unsupported(field: str, why: str = "") -> APIError:
    return bad_request(f"`{field}` is not supported on Anthropic models{why}.", field)


def _check_fields(body: dict[str, Any]) -> None:
    for field, value in body.items():
        if field in _MAPPED or field in _IGNORED or value is None:
            continue
        if field in _NEUTRAL and value == _NEUTRAL[field]:
            continue
        raise _unsupported(field)


def _text(content: Any, where: str) -> str:
    """A system, developer or tool message's text: a string or text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise bad_request(f"`{where}[{i}]` must be a text part here.", where)
            texts.append(str(part.get("text") or ""))
        return "".join(texts)
    raise bad_request(f"`{where}` must be a string or a list of text parts.", where)


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise bad_request(f"`{where}.image_url.url` must be a string.", where)
    if match := _DATA_URL.fullmatch(url):
        media_type, data = match.groups()
        if media_type not in _IMAGE_TYPES:
            raise bad_request(
                f"`{where}`: Anthropic takes {', '.join(sorted(_IMAGE_TYPES))} images, "
                f"not {media_type}.",
                where,
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_request(f"`{where}`: an image must be a base64 data URL or an http(s) URL.", where)


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise bad_request(f"`{where}` must be a string or a list of content parts.", where)
    blocks = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "image_url":
            blocks.append(_image(part, f"{where}[{i}]"))
        else:
            raise bad_request(
                f"`{where}[{i}]`: content parts of type {kind!r} are not supported on "
                "Anthropic models (text and image_url are).",
                where,
            )
    return blocks


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or call.get("type", "function") != "function":
        raise bad_request(f"`{where}` must be a function tool call.", where)
    arguments = function.get("arguments") or "{}"
    try:
        tool_input = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        tool_input = None
    if not isinstance(tool_input, dict):
        raise bad_request(
            f"`{where}.function.arguments` must be a JSON object: Anthropic keeps tool input "
            "as an object.",
            where,
        )
    return {
        "type": "tool_use",
        "id": call.get("id"),
        "name": function.get("name"),
        "input": tool_input,
    }


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    content = message.get("content")
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        # A refusal part is an earlier answer's text as much as a text part is.
        text = "".join(
            str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict)
        )
    else:
        text = ""
    if text:  # Anthropic refuses empty text blocks
        blocks.append({"type": "text", "text": text})
    for i, call in enumerate(message.get("tool_calls") or ()):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{i}]"))
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise bad_request(f"`{where}.tool_call_id` is required.", where)
    return {
        "type": "tool_result",
        "tool_use_id": call_id,
        "content": _text(message.get("content"), f"{where}.content"),
    }


def _conversation(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """The `system` text and the turns: consecutive same-role messages share one turn."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.append(_text(message.get("content"), f"{where}.content"))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), f"{where}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            # Tool results answer the assistant's tool_use blocks from a user turn.
            role, blocks = "user", [_tool_result(message, where)]
        else:
            raise bad_request(
                f"`{where}.role` {role!r} is not supported on Anthropic models "
                "(system, developer, user, assistant and tool are).",
                where,
            )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # a lone text block reads better, and is the same, as a string
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return "\n\n".join(system), turns


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad_request(f"`{field}` must be a positive integer.", field)
        return value
    return default


def _stop_sequences(stop: Any) -> list[str]:
    sequences = [stop] if isinstance(stop, str) else stop
    if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
        raise bad_request("`stop` must be a string or a list of strings.", "stop")
    if any(not s.strip() for s in sequences):
        raise bad_request("`stop`: Anthropic refuses stop sequences of only whitespace.", "stop")
    return sequences


def _tool(tool: Any, where: str) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function":
        raise bad_request(
            f"`{where}`: only function tools are supported on Anthropic models.", where
        )
    out: dict[str, Any] = {"name": function.get("name")}
    if function.get("description") is not None:
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    if function.get("strict") is not None:
        out["strict"] = function["strict"]
    return out


def _tool_choice(choice: Any, parallel: Any, has_tools: bool) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = None
    elif choice in ("auto", "none"):
        out = {"type": choice}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise bad_request(
            "`tool_choice` must be auto, none, required or a named function.", "tool_choice"
        )
    if parallel is False and has_tools:
        out = out or {"type": "auto"}
        if out["type"] != "none":  # nothing to run in parallel when no tool runs
            out["disable_parallel_tool_use"] = True
    return out


def _output_format(response_format: Any) -> dict[str, Any] | None:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request(
                "`response_format.json_schema.schema` is required.", "response_format"
            )
        return {"format": {"type": "json_schema", "schema": schema}}
    if kind == "json_object":
        raise _unsupported(
            "response_format", ' with type "json_object": send a json_schema instead'
        )
    raise bad_request("`response_format.type` must be text or json_schema.", "response_format")


def messages_request(
    body: dict[str, Any], model: str, stream: bool, default_max_tokens: int
) -> dict[str, Any]:
    """The Messages request for `body`, or a 400 naming what Anthropic cannot honour."""
    _check_fields(body)
    system, turns = _conversation(body["messages"])
    out: dict[str, Any] = {"model": model}
    if system:
        out["system"] = system
    out["messages"] = turns
    out["max_tokens"] = _max_tokens(body, default_max_tokens)
    if stream:
        out["stream"] = True
    if body.get("stop") is not None and (stop := _stop_sequences(body["stop"])):
        out["stop_sequences"] = stop
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise bad_request("`temperature` must be a number.", "temperature")
        if not 0 <= temperature <= 1:
            raise bad_request(
                f"`temperature` {temperature}: Anthropic models take 0 to 1.", "temperature"
            )
        out["temperature"] = temperature
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise bad_request("`tools` must be a list.", "tools")
        out["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"), bool(tools))
    if choice is not None:
        out["tool_choice"] = choice
    user = body.get("safety_identifier") or body.get("user")
    if user is not None:
        out["metadata"] = {"user_id": str(user)}
    if body.get("response_format") is not None and (
        output := _output_format(body["response_format"])
    ):
        out["output_config"] = output
    return out
