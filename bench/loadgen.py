"""Closed-loop load generator for one target, run in its own process; prints one JSON object.

Load mode: C workers each send a request, wait for the whole answer, and send the next, for
`--warmup` + `--duration` seconds (or until `--max-requests` have been sent). Only requests
that complete inside the measured window count; the CPU time of `--cpu-pid` process trees is
sampled at the window's two edges, so CPU and request counts cover the same interval.

    python -m bench.loadgen --url URL --api-key K --model M [--stream] -c 64 --duration 5

Hold mode (`--hold N`): open N streams, at most `--open-concurrency` connecting at once; once
all have delivered their first event, sample the RSS of `--rss-pid` process trees while they
are all still open, then let them finish.
"""

import argparse
import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import uvloop

from bench.procfs import cpu_seconds, rss_bytes
from bench.upstream import CHUNKS


class BadResponse(Exception):
    pass


@dataclass(frozen=True)
class Target:
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool


def make_target(url: str, api_key: str, model: str, stream: bool) -> Target:
    request = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    return Target(
        url=url,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        body=orjson.dumps(request),
        stream=stream,
    )


def validate(body: bytes, stream: bool) -> None:
    if stream:
        if body.count(b"data:") < CHUNKS + 1 or not body.rstrip().endswith(b"data: [DONE]"):
            raise BadResponse(f"incomplete stream: ...{body[-120:]!r}")
        return
    answer = orjson.loads(body)
    if answer.get("object") != "chat.completion" or not answer.get("choices"):
        raise BadResponse(f"not a chat completion: {body[:120]!r}")


async def fetch(
    session: aiohttp.ClientSession, target: Target, on_first: Callable[[], None]
) -> None:
    """One request, read to the end and validated; `on_first` is called when the first event
    (streams: the first `data:`) or the first body byte (plain) has arrived."""
    first_marker = b"data:" if target.stream else b""
    async with session.post(target.url, data=target.body, headers=target.headers) as response:
        if response.status != 200:
            raise BadResponse(f"HTTP {response.status}: {(await response.read())[:120]!r}")
        body = bytearray()
        seen_first = False
        async for chunk in response.content.iter_any():
            body += chunk
            if not seen_first and first_marker in body:
                seen_first = True
                on_first()
    validate(bytes(body), target.stream)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, q in (0, 1]."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summary_ms(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        f"p{int(q * 100)}": None if (v := percentile(ordered, q)) is None else round(v * 1e3, 4)
        for q in (0.5, 0.99)
    }


@dataclass
class Errors:
    count: int = 0
    samples: list[str] = field(default_factory=list)

    def add(self, error: BaseException) -> None:
        self.count += 1
        text = f"{type(error).__name__}: {error}"[:300]
        if len(self.samples) < 5 and text not in self.samples:
            self.samples.append(text)


async def run_load(
    session: aiohttp.ClientSession, target: Target, args: argparse.Namespace
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    window_start, window_end = math.inf, math.inf
    stop_sending_at = loop.time() + args.warmup + args.duration
    remaining = args.max_requests
    latencies: list[float] = []
    ttfbs: list[float] = []
    errors = Errors()
    cpu_at_start: dict[int, float] = {}
    cpu_at_end: dict[int, float] = {}

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and loop.time() < stop_sending_at:
            remaining -= 1
            started = time.perf_counter()
            first = started

            def on_first() -> None:
                nonlocal first
                first = time.perf_counter()

            try:
                await fetch(session, target, on_first)
            except (aiohttp.ClientError, TimeoutError, BadResponse, ValueError) as error:
                errors.add(error)
                continue
            done = time.perf_counter()
            if window_start <= done <= window_end:
                latencies.append(done - started)
                ttfbs.append(first - started)

    async def window() -> None:
        nonlocal window_start
        await asyncio.sleep(args.warmup)
        cpu_at_start.update((pid, cpu_seconds(pid)) for pid in args.cpu_pid)
        window_start = time.perf_counter()
        await asyncio.sleep(args.duration)
        close_window()

    def close_window() -> None:
        nonlocal window_end
        if window_end == math.inf:
            window_end = time.perf_counter()
            cpu_at_end.update((pid, cpu_seconds(pid)) for pid in args.cpu_pid)

    workers = asyncio.gather(*(worker() for _ in range(args.concurrency)))
    timer = asyncio.ensure_future(window())
    try:
        # Workers stop on their own after the deadline; the slack covers their last request.
        await asyncio.wait_for(workers, args.warmup + args.duration + args.timeout)
    finally:
        timer.cancel()
    close_window()  # in case the request budget ran out before the window's planned end
    elapsed = window_end - window_start if window_start != math.inf else 0.0
    return {
        "mode": "load",
        "concurrency": args.concurrency,
        "stream": target.stream,
        "window_s": round(elapsed, 4),
        "count": len(latencies),
        "errors": errors.count,
        "error_samples": errors.samples,
        "rps": round(len(latencies) / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": summary_ms(latencies),
        "ttfb_ms": summary_ms(ttfbs),
        "cpu_s": {
            str(pid): round(cpu_at_end[pid] - cpu_at_start[pid], 4)
            for pid in args.cpu_pid
            if pid in cpu_at_start
        },
    }


async def run_hold(
    session: aiohttp.ClientSession, target: Target, args: argparse.Namespace
) -> dict[str, Any]:
    opening = asyncio.Semaphore(args.open_concurrency)
    all_open = asyncio.Event()
    opened = finished = 0
    errors = Errors()

    async def one_stream() -> None:
        nonlocal opened, finished
        await opening.acquire()
        holding_slot = True

        def on_first() -> None:
            nonlocal opened, holding_slot
            opened += 1
            holding_slot = False
            opening.release()  # this one is open: let the next one connect
            if opened == args.hold:
                all_open.set()

        try:
            await fetch(session, target, on_first)
        except (aiohttp.ClientError, TimeoutError, BadResponse, ValueError) as error:
            errors.add(error)
        finally:
            finished += 1
            if holding_slot:
                opening.release()

    streams = [asyncio.ensure_future(one_stream()) for _ in range(args.hold)]
    try:
        # On timeout measure anyway: the result says how many were open.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_open.wait(), args.timeout)
        # Two samples half a second apart, keeping the larger: the open streams still emit chunks.
        rss: dict[str, int] = {}
        open_at_sample = opened - finished
        for _ in range(2):
            for pid in args.rss_pid:
                rss[str(pid)] = max(rss.get(str(pid), 0), rss_bytes(pid))
            await asyncio.sleep(0.5)
        open_at_sample = min(open_at_sample, opened - finished)
        await asyncio.wait(streams, timeout=args.timeout)
    finally:
        for stream in streams:
            stream.cancel()
    return {
        "mode": "hold",
        "streams": args.hold,
        "opened": opened,
        "open_at_sample": open_at_sample,
        "errors": errors.count,
        "error_samples": errors.samples,
        "rss_bytes": rss,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    target = make_target(args.url, args.api_key, args.model, args.stream or args.hold > 0)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if args.hold:
            return await run_hold(session, target, args)
        return await run_load(session, target, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="full chat completions URL")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds, not measured")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--cpu-pid", type=int, action="append", default=[])
    parser.add_argument("--hold", type=int, default=0, help="streams to hold open (hold mode)")
    parser.add_argument("--open-concurrency", type=int, default=100)
    parser.add_argument("--rss-pid", type=int, action="append", default=[])
    args = parser.parse_args()
    print(orjson.dumps(uvloop.run(main_async(args))).decode(), flush=True)


if __name__ == "__main__":
    main()
