"""Run an aiohttp low-level server until SIGINT/SIGTERM (shared by the upstream and bare proxy)."""

import asyncio
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


async def serve(handler: Handler, host: str, port: int) -> None:
    # No access log: formatting a log line per request would be most of the floor's CPU.
    runner = web.ServerRunner(web.Server(handler, access_log=None), shutdown_timeout=1.0)
    await runner.setup()
    try:
        # A deep backlog: the open-streams scenario connects hundreds of clients at once.
        await web.TCPSite(runner, host, port, backlog=4096).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
