"""Legacy `/v1/completions` clients on chat-only backends: convert there and back."""

from __future__ import annotations

from typing import Any

from ..errors import bad_request

# Fields that mean the same in both APIs and pass through as they are.
_SHARED = (
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "stream",
    "stream_options",
    "user",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "metadata",
    "service_tier",
)


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """A chat request equivalent to a completions request, or a 400 saying why not."""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise bad_request(
                "This model serves chat only: `prompt` must be one string here.", "prompt"
            )
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad_request("`prompt` must be a string.", "prompt")
    if body.get("echo"):
        raise bad_request("`echo` is not supported on chat-only models.", "echo")
    if body.get("suffix"):
        raise bad_request("`suffix` is not supported on chat-only models.", "suffix")
    if body.get("logprobs") is not None:
        raise bad_request("`logprobs` is not supported on chat-only models.", "logprobs")
    if (body.get("best_of") or 1) != 1:
        raise bad_request("`best_of` is not supported on chat-only models.", "best_of")
    out: dict[str, Any] = {
        "model": body["model"],
        "messages": [{"role": "user", "content": prompt}],
    }
    for key in _SHARED:
        if key in body:
            out[key] = body[key]
    return out


def _head(chat: dict[str, Any]) -> dict[str, Any]:
    chat_id = str(chat.get("id", ""))
    return {
        "id": "cmpl-" + chat_id.removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": chat.get("created", 0),
        "model": chat.get("model", ""),
    }


def completion_response(chat: dict[str, Any]) -> dict[str, Any]:
    choices = [
        {
            "index": c.get("index", 0),
            "text": (c.get("message") or {}).get("content") or "",
            "logprobs": None,
            "finish_reason": c.get("finish_reason"),
        }
        for c in chat.get("choices") or ()
    ]
    out = {**_head(chat), "choices": choices}
    if "usage" in chat:
        out["usage"] = chat["usage"]
    return out


def completion_chunk(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """The completions chunk for a chat chunk; None for chunks that carry nothing."""
    choices = []
    for c in chunk.get("choices") or ():
        text = (c.get("delta") or {}).get("content")
        finish = c.get("finish_reason")
        if text or finish:
            choices.append(
                {
                    "index": c.get("index", 0),
                    "text": text or "",
                    "logprobs": None,
                    "finish_reason": finish,
                }
            )
    usage = chunk.get("usage")
    if not choices and usage is None:
        return None
    out = {**_head(chunk), "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out
