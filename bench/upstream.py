"""A fast fake OpenAI upstream: canned chat completions, plain or streamed.

    python -m bench.upstream --port P [--chunk-delay S]

Answers POST .../chat/completions with a small fixed `chat.completion`, or with `stream: true`
20 `chat.completion.chunk` events (plus a usage chunk when `stream_options.include_usage` is
set) and `data: [DONE]`. `--chunk-delay` sleeps between chunks so streams stay open (for the
open-streams memory scenario). GET /readyz answers 200. Responses are built once per model and
cached: the upstream shares the CPUs with what is being measured, so it must stay cheap.
"""

import argparse
import asyncio
import functools
import time

import orjson
import uvloop
from aiohttp import web

from bench.serving import Handler, serve

CHUNKS = 20
USAGE = {"prompt_tokens": 5, "completion_tokens": CHUNKS, "total_tokens": 5 + CHUNKS}
_CREATED = int(time.time())


@functools.lru_cache(maxsize=64)
def completion_body(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    )


@functools.lru_cache(maxsize=64)
def stream_events(model: str, include_usage: bool) -> tuple[bytes, ...]:
    def event(choices: list[dict[str, object]], **extra: object) -> bytes:
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "choices": choices,
            **extra,
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    events = []
    for i in range(CHUNKS):
        delta: dict[str, str] = {"content": f"tok{i} "}
        if i == 0:
            delta["role"] = "assistant"
        last = i == CHUNKS - 1
        events.append(
            event([{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}])
        )
    if include_usage:
        events.append(event([], usage=USAGE))
    events.append(b"data: [DONE]\n\n")
    return tuple(events)


def make_handler(chunk_delay: float) -> Handler:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/readyz":
            return web.Response(text="ok")
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return web.Response(status=404)
        try:
            payload = orjson.loads(await request.read())
            model = str(payload["model"])
            stream_options = payload.get("stream_options") or {}
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.Response(status=400, text="expected a chat completion request")
        if not payload.get("stream"):
            return web.Response(body=completion_body(model), content_type="application/json")

        events = stream_events(model, bool(stream_options.get("include_usage")))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for i, data in enumerate(events):
            if chunk_delay and 0 < i < CHUNKS:
                await asyncio.sleep(chunk_delay)
            await response.write(data)
        await response.write_eof()
        return response

    return handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds to sleep between stream chunks"
    )
    args = parser.parse_args()
    uvloop.run(serve(make_handler(args.chunk_delay), args.host, args.port))


if __name__ == "__main__":
    main()
