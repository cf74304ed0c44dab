"""`kubellm-gateway`: every flag also settable as a `KUBELLM_*` environment variable."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
import uvloop
from prometheus_client import start_http_server

from .app import create_app
from .runtime import Runtime
from .settings import Settings


def _flag(
    parser: argparse.ArgumentParser, name: str, kind: type, default: object, doc: str
) -> None:
    """`--name`, defaulting to $KUBELLM_NAME: the variable is derived, never forgotten."""
    variable = "KUBELLM_" + name.upper().replace("-", "_")

    def convert(text: str) -> object:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a valid {kind.__name__} (from --{name} or {variable})"
            ) from None

    # A string default goes through `convert` only when the flag is absent, so a flag
    # always beats a bad variable and a bad variable is reported by name.
    parser.add_argument(
        f"--{name}",
        type=convert,
        default=os.environ.get(variable, default),
        help=f"{doc} [{variable}; default {default}]",
    )


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="kubellm-gateway",
        description="OpenAI-compatible LLM gateway serving a folder of kubellm manifests.",
    )
    d = Settings(manifests=Path())
    _flag(parser, "manifests", str, "", "folder of kubellm manifests (required)")
    _flag(parser, "host", str, d.host, "address to listen on")
    _flag(parser, "port", int, d.port, "API port")
    _flag(parser, "metrics-port", int, d.metrics_port, "Prometheus /metrics port; 0 disables")
    _flag(parser, "max-body-bytes", int, d.max_body_bytes, "larger request bodies get 413")
    _flag(parser, "reload-interval", float, d.reload_interval, "seconds between folder scans")
    _flag(parser, "log-level", str, d.log_level, "debug, info, warning or error")
    args = parser.parse_args(argv)
    if not args.manifests:
        parser.error("--manifests (or KUBELLM_MANIFESTS) is required: a folder of manifests")
    manifests = Path(args.manifests)
    if not manifests.is_dir():
        parser.error(f"--manifests {manifests}: not a folder")
    if args.log_level not in ("debug", "info", "warning", "error"):
        parser.error(f"--log-level {args.log_level}: expected debug, info, warning or error")
    return Settings(
        manifests=manifests,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        max_body_bytes=args.max_body_bytes,
        reload_interval=args.reload_interval,
        log_level=args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    runtime = Runtime(settings)
    if settings.metrics_port:
        start_http_server(
            settings.metrics_port, addr=settings.host, registry=runtime.metrics.registry
        )
    config = uvicorn.Config(
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        loop="none",  # we install uvloop ourselves, below
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        # One worker per pod; scale with replicas (PROTOCOLS.md, "Speed").
        workers=None,
    )
    uvloop.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
