"""An ASGI app served by uvicorn on 127.0.0.1 from a daemon thread, for small fakes."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from tests.support.gateway import free_port
from tests.support.tls import PKI

Message = dict[str, Any]
App = Callable[[Message, Callable[..., Any], Callable[..., Any]], Awaitable[None]]


async def read_all(receive: Callable[..., Any]) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


class ThreadedServer:
    def __init__(self, app: App, tls: PKI | None = None, client_certs: bool = False) -> None:
        """With `tls`, served over HTTPS with its server certificate; `client_certs` then
        also requires a client certificate from its CA."""
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        ssl_options: dict[str, Any] = {}
        if tls is not None:
            ssl_options = {"ssl_certfile": str(tls.server_cert), "ssl_keyfile": str(tls.server_key)}
            if client_certs:
                ssl_options |= {"ssl_ca_certs": str(tls.ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            **ssl_options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._server.serve(),), daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        while not self._server.started:
            self._thread.join(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)
