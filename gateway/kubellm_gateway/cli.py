"""`kubellm-gateway`: every flag also settable as a `KUBELLM_*` environment variable."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import uvicorn
import uvloop
from prometheus_client import start_http_server
from pydantic import TypeAdapter, ValidationError

from .app import create_app
from .resources import DNSLabel
from .runtime import Runtime
from .settings import Settings
from .telemetry import logs

log = logging.getLogger(__name__)
_NAMESPACE: TypeAdapter[str] = TypeAdapter(DNSLabel)
GIL_SWITCH_INTERVAL = 0.0001  # seconds; see main()


def _flag(
    parser: argparse.ArgumentParser,
    name: str,
    kind: Callable[[str], object],
    default: object,
    doc: str,
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


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


def _listed(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="kubellm-gateway",
        description="OpenAI-compatible LLM gateway serving the kubellm resources of a "
        "Kubernetes cluster or of a folder of manifests.",
    )
    d = Settings(manifests=Path())
    # Inside a pod the cluster is the natural source; elsewhere, a folder.
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    _flag(
        parser,
        "source",
        str,
        "kubernetes" if in_pod else "files",
        "where resources come from: kubernetes or files (default kubernetes inside a pod)",
    )
    _flag(parser, "manifests", str, "", "folder of kubellm manifests (required with files)")
    _flag(parser, "namespaces", str, "", "comma-separated namespaces to follow; empty: all")
    _flag(parser, "kubeconfig", str, "", "kubeconfig file; empty: in-cluster or the default")
    _flag(parser, "host", str, d.host, "address to listen on")
    _flag(parser, "port", int, d.port, "API port")
    _flag(parser, "metrics-port", int, d.metrics_port, "Prometheus /metrics port; 0 disables")
    _flag(parser, "max-body-bytes", int, d.max_body_bytes, "larger request bodies get 413")
    _flag(parser, "reload-interval", float, d.reload_interval, "seconds between folder scans")
    _flag(parser, "log-level", str, d.log_level, "debug, info, warning or error")
    _flag(
        parser,
        "shutdown-delay",
        int,
        d.shutdown_delay,
        "seconds after SIGTERM still serving with /readyz at 503, before the listener closes",
    )
    _flag(
        parser,
        "shutdown-grace",
        int,
        d.shutdown_grace,
        "seconds requests in flight may take to finish after the listener closes",
    )
    _flag(parser, "oidc-issuer", str, "", "OIDC issuer URLs, comma-separated; empty: no OIDC")
    _flag(parser, "oidc-audience", str, "", "the audience tokens must carry (with issuers)")
    _flag(parser, "oidc-username-claim", str, d.oidc_username_claim, "claim naming the user")
    _flag(
        parser,
        "oidc-groups-claim",
        str,
        ",".join(d.oidc_groups_claims),
        "dotted claim paths holding groups, comma-separated (e.g. realm_access.roles)",
    )
    _flag(parser, "oidc-leeway", float, d.oidc_leeway, "seconds of clock skew tolerated")
    _flag(parser, "redis-url", str, d.redis_url, "Redis for limits across replicas")
    _flag(
        parser,
        "limits-on-redis-error",
        str,
        d.limits_on_redis_error,
        "allow or deny requests while Redis is unreachable",
    )
    _flag(parser, "otel", boolean, d.otel, "export traces by OTLP (or set OTEL_* variables)")
    _flag(parser, "metrics-per-user", boolean, d.metrics_per_user, "add a user label")
    _flag(parser, "log-format", str, d.log_format, "text or json")
    _flag(parser, "access-log", boolean, d.access_log, "one line per request")
    args = parser.parse_args(argv)
    if args.source not in ("files", "kubernetes"):
        parser.error(f"--source {args.source}: expected kubernetes or files")
    manifests = Path(args.manifests)
    if args.source == "files":
        if not args.manifests:
            parser.error("--manifests (or KUBELLM_MANIFESTS) is required: a folder of manifests")
        if not manifests.is_dir():
            parser.error(f"--manifests {manifests}: not a folder")
    namespaces = tuple(n.strip() for n in args.namespaces.split(",") if n.strip())
    for namespace in namespaces:
        try:
            _NAMESPACE.validate_python(namespace)
        except ValidationError as exc:
            parser.error(f"--namespaces: {exc.errors()[0]['msg'].removeprefix('Value error, ')}")
    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
    if kubeconfig is not None and not kubeconfig.is_file():
        parser.error(f"--kubeconfig {kubeconfig}: no such file")
    if args.log_level not in ("debug", "info", "warning", "error"):
        parser.error(f"--log-level {args.log_level}: expected debug, info, warning or error")
    for name in ("shutdown_delay", "shutdown_grace"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be 0 or more")
    issuers = _listed(args.oidc_issuer)
    if issuers and not args.oidc_audience:
        parser.error("--oidc-issuer needs --oidc-audience (KUBELLM_OIDC_AUDIENCE)")
    if args.limits_on_redis_error not in ("allow", "deny"):
        parser.error(f"--limits-on-redis-error {args.limits_on_redis_error}: allow or deny")
    if args.log_format not in ("text", "json"):
        parser.error(f"--log-format {args.log_format}: expected text or json")
    return Settings(
        manifests=manifests,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        max_body_bytes=args.max_body_bytes,
        reload_interval=args.reload_interval,
        log_level=args.log_level,
        shutdown_delay=args.shutdown_delay,
        shutdown_grace=args.shutdown_grace,
        source=args.source,
        namespaces=namespaces,
        kubeconfig=kubeconfig,
        oidc_issuers=issuers,
        oidc_audience=args.oidc_audience,
        oidc_username_claim=args.oidc_username_claim,
        oidc_groups_claims=_listed(args.oidc_groups_claim),
        oidc_leeway=args.oidc_leeway,
        redis_url=args.redis_url,
        limits_on_redis_error=args.limits_on_redis_error,
        otel=args.otel,
        metrics_per_user=args.metrics_per_user,
        log_format=args.log_format,
        access_log=args.access_log,
    )


class DrainingServer(uvicorn.Server):
    """uvicorn, with readiness failed before its graceful shutdown starts.

    The first SIGTERM (or SIGINT) sets `stopping`, so /readyz answers 503 while
    requests are still served for `delay` seconds; then uvicorn closes the
    listener and gives requests in flight (streams included) its
    `timeout_graceful_shutdown` to finish before cancelling them. A second signal
    is uvicorn's own: it stops waiting for the delay (twice SIGINT forces exit).
    """

    def __init__(self, config: uvicorn.Config, stopping: threading.Event, delay: int) -> None:
        super().__init__(config)
        self.stopping = stopping
        self.delay = delay
        self.close_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.close_at is not None:
            super().handle_exit(sig, frame)
            return
        self.stopping.set()
        self.close_at = time.monotonic() + self.delay
        log.info(
            "signal %d: readiness failed; closing the listener in %ds, then up to %ds "
            "for requests in flight",
            sig,
            self.delay,
            self.config.timeout_graceful_shutdown,
        )

    async def on_tick(self, counter: int) -> bool:
        if self.close_at is not None and time.monotonic() >= self.close_at:
            self.should_exit = True
        return await super().on_tick(counter)


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    # The serving loop shares the GIL with background threads (the cluster watch, snapshot
    # builds, the span exporter, the metrics server). A request ready to run waits for the
    # switch interval before a busy thread must hand the GIL over: Python's 5 ms default
    # doubled the p99 while a cluster changed 50 times a second, 0.1 ms bounds the wait
    # (bench/README.md, "Propagation: following a cluster"). Without contention nothing
    # switches; with a busy exporter beside a saturated loop it costs some throughput.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    logs.configure(settings.log_level, settings.log_format)
    if not settings.access_log:
        logs.ACCESS.setLevel(logging.WARNING)
    runtime = Runtime(settings)
    if settings.metrics_port:
        start_http_server(
            settings.metrics_port, addr=settings.host, registry=runtime.metrics.registry
        )
    stopping = threading.Event()
    config = uvicorn.Config(
        create_app(runtime, stopping),
        host=settings.host,
        port=settings.port,
        loop="none",  # we install uvloop ourselves, below
        http="httptools",
        lifespan="on",
        access_log=False,  # ours is kubellm.access, with what uvicorn cannot know
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers go through ours: one format for every line
        # One worker per pod; scale with replicas (PROTOCOLS.md, "Speed").
        workers=None,
        timeout_graceful_shutdown=settings.shutdown_grace,
    )
    uvloop.run(DrainingServer(config, stopping, settings.shutdown_delay).serve())


if __name__ == "__main__":
    main()
