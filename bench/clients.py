"""Which HTTP client should the gateway call upstreams with? CPU per request, side by side.

    python -m bench.clients [--requests 4000] [--rounds 3]

Starts bench.upstream, then drives it from this process with 64 concurrent requests through
httpx2's AsyncClient and through aiohttp's ClientSession (each with an uncapped pool, bodies
read to the end, streams read chunk by chunk as the gateway relays them), alternating between
the two for several rounds; prints the median CPU time per request of this process.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx2
import uvloop

from bench import processes

CONCURRENCY = 64
Request = Callable[[], Awaitable[None]]


async def _measure(one: Request, count: int) -> float:
    """CPU seconds per request of this process over `count` requests."""
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            await one()

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return (time.process_time() - started) / count


async def _httpx2(url: str, body: bytes, count: int) -> float:
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=CONCURRENCY)
    async with httpx2.AsyncClient(limits=limits) as client:

        async def one() -> None:
            async with client.stream("POST", url, content=body) as response:
                async for _ in response.aiter_raw():
                    pass

        await _measure(one, count // 4)  # warm the pool
        return await _measure(one, count)


async def _aiohttp(url: str, body: bytes, count: int) -> float:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.post(url, data=body) as response:
                async for _ in response.content.iter_any():
                    pass

        await _measure(one, count // 4)
        return await _measure(one, count)


CLIENTS = {"httpx2": _httpx2, "aiohttp": _aiohttp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    log = Path(tempfile.mkdtemp(prefix="kubellm-bench-")) / "upstream.log"
    upstream = processes.spawn([sys.executable, "-m", "bench.upstream", "--port", str(port)], log)
    try:
        processes.wait_ready("upstream", upstream, port, log, timeout=20)
        results: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.rounds):
            for stream in (False, True):
                body = b'{"model":"m","messages":[],"stream":%s}' % (
                    b"true" if stream else b"false"
                )
                for name, run in CLIENTS.items():
                    cpu = uvloop.run(run(url, body, args.requests))
                    results.setdefault((name, stream), []).append(cpu)
    finally:
        processes.stop(upstream)
    print("| client | plain CPU ms/req | stream CPU ms/req |\n|---|--:|--:|")
    for name in CLIENTS:
        plain, streamed = (statistics.median(results[name, s]) * 1e3 for s in (False, True))
        print(f"| {name} | {plain:.3f} | {streamed:.3f} |")


if __name__ == "__main__":
    main()
