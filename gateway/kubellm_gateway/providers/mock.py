"""The Mock provider: deterministic OpenAI-shaped answers with no network.

For demos, tests of everything around the upstream, and benchmarks: replies
word by word after an optional latency, at an optional tokens-per-second rate,
and counts usage the way a real backend does (whitespace-separated words).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..resources import LLMProviderSpec
from .base import Exchange, Headers, Operation, Provider

EMBEDDING_DIMENSIONS = 16


def count_words(value: Any) -> int:
    """Words in a prompt: strings, lists of strings or content parts, message lists."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(item) for item in value)
    if isinstance(value, dict):
        if "content" in value:
            return count_words(value["content"])
        if value.get("type") == "text":
            return count_words(value.get("text"))
    return 0


def last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()[: EMBEDDING_DIMENSIONS * 2]
    return [round(v / 32768 - 1, 6) for v in struct.unpack(f">{EMBEDDING_DIMENSIONS}H", digest)]


class MockExchange(Exchange):
    def __init__(self, op: Operation, body: dict[str, Any], model: str, spec: LLMProviderSpec):
        self._op = op
        self._body = body
        self._model = model
        settings = spec.mock
        self._rate = settings.tokensPerSecond if settings is not None else 0.0
        self._id = os.urandom(8).hex()
        self._created = int(time.time())
        if op is Operation.chat:
            prompt = body.get("messages")
            fixed = settings.text if settings is not None else None
            text = fixed or f"Mock reply from {model}: {last_user_text(prompt)}".strip()
        else:
            prompt = body.get("prompt") if op is Operation.completions else body.get("input")
            fixed = settings.text if settings is not None else None
            text = fixed or f"Mock completion from {model}."
        self._prompt_tokens = count_words(prompt)
        self._words = text.split()
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        self._finish = "stop"
        if isinstance(max_tokens, int) and 0 < max_tokens < len(self._words):
            self._words = self._words[:max_tokens]
            self._finish = "length"

    def _usage(self) -> dict[str, int]:
        completion = len(self._words)
        return {
            "prompt_tokens": self._prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self._prompt_tokens + completion,
        }

    def _head(self, obj: str) -> dict[str, Any]:
        prefix = "chatcmpl-" if self._op is Operation.chat else "cmpl-"
        return {
            "id": prefix + self._id,
            "object": obj,
            "created": self._created,
            "model": self._model,
        }

    async def read(self) -> bytes:
        if self._rate > 0:
            await asyncio.sleep(len(self._words) / self._rate)
        if self._op is Operation.embeddings:
            return orjson.dumps(self._embeddings())
        text = " ".join(self._words)
        if self._op is Operation.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": self._finish,
            }
            head = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": self._finish}
            head = self._head("text_completion")
        return orjson.dumps({**head, "choices": [choice], "usage": self._usage()})

    def _embeddings(self) -> dict[str, Any]:
        inputs = self._body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": embedding(str(item))}
                for i, item in enumerate(items)
            ],
            "model": self._model,
            "usage": {"prompt_tokens": self._prompt_tokens, "total_tokens": self._prompt_tokens},
        }

    def _chunk(self, text: str | None, finish: str | None, first: bool) -> bytes:
        if self._op is Operation.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
            head = self._head("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None}
            head = self._head("text_completion")
        choice["finish_reason"] = finish
        return orjson.dumps({**head, "choices": [choice], "usage": None})

    async def batches(self) -> AsyncIterator[list[bytes]]:
        pause = 1 / self._rate if self._rate > 0 else 0.0
        if self._op is Operation.chat:
            yield [self._chunk(None, None, first=True)]
        for i, word in enumerate(self._words):
            if pause:
                await asyncio.sleep(pause)
            yield [self._chunk(word if i == 0 else " " + word, None, first=False)]
        final = self._chunk(None, self._finish, first=False)
        usage = orjson.dumps(
            {**self._head(self._chunk_object()), "choices": [], "usage": self._usage()}
        )
        yield [final, usage, b"[DONE]"]

    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self._op is Operation.chat else "text_completion"

    async def aclose(self) -> None:
        return None


class MockProvider(Provider):
    async def open(
        self, op: Operation, body: dict[str, Any], model: str, stream: bool, forward: Headers
    ) -> Exchange:
        settings = self.spec.mock
        if settings is not None and settings.latency > 0:
            await asyncio.sleep(settings.latency)
        return MockExchange(op, body, model, self.spec)
