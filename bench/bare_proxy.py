"""The floor: the least a Python (aiohttp) proxy can do per request on this machine.

    python -m bench.bare_proxy --port P --upstream http://127.0.0.1:U

Forwards method, path, body and the few headers that matter to one upstream over a pooled
client session, and relays the answer: buffered when plain, chunk by chunk when it is an
event stream. No auth, no routing, no parsing, no logging.
"""

import argparse

import aiohttp
import uvloop
from aiohttp import web

from bench.serving import Handler, serve

FORWARDED_HEADERS = ("Content-Type", "Authorization", "Accept")


def make_handler(session: aiohttp.ClientSession, upstream: str) -> Handler:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        headers = {
            name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers
        }
        async with session.request(
            request.method, upstream + request.path_qs, data=await request.read(), headers=headers
        ) as upstream_response:
            content_type = upstream_response.headers.get("Content-Type", "application/octet-stream")
            if not content_type.startswith("text/event-stream"):
                body = await upstream_response.read()
                return web.Response(
                    status=upstream_response.status,
                    body=body,
                    headers={"Content-Type": content_type},
                )
            response = web.StreamResponse(
                status=upstream_response.status,
                headers={"Content-Type": content_type, "Cache-Control": "no-cache"},
            )
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    return handle


async def run(host: str, port: int, upstream: str) -> None:
    # limit=0: no pool cap, so 1,000 open streams need no queueing for an upstream connection.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await serve(make_handler(session, upstream.rstrip("/")), host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8001")
    args = parser.parse_args()
    uvloop.run(run(args.host, args.port, args.upstream))


if __name__ == "__main__":
    main()
