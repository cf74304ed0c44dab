"""The live state of one gateway process: settings, current snapshot, providers, metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .collector import Collector
from .limits import create_limiter
from .providers.pool import ProviderPool
from .proxy import Proxy
from .resources import Resource
from .routing import EMPTY, BuildCache, Snapshot, build
from .settings import Settings
from .telemetry.metrics import Metrics
from .telemetry.tracing import Tracing, otlp_provider, wanted

if TYPE_CHECKING:
    from .auth.oidc import OIDCVerifier

log = logging.getLogger(__name__)

KINDS = ("LLMProvider", "LLMModel", "AccessPolicy", "APIKey", "Secret")


def oidc_verifier(settings: Settings) -> OIDCVerifier | None:
    if not settings.oidc_issuers:
        return None
    # Imported only when OIDC is on: jwt and cryptography weigh 8 MiB of RSS, and the
    # 1,000-open-streams memory target has little room (bench/README.md).
    from .auth.oidc import OIDCSettings, OIDCVerifier  # noqa: PLC0415

    return OIDCVerifier(
        OIDCSettings(
            issuers=settings.oidc_issuers,
            audience=settings.oidc_audience,
            username_claim=settings.oidc_username_claim,
            groups_claims=settings.oidc_groups_claims,
            leeway=settings.oidc_leeway,
        )
    )


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(
            enabled=settings.metrics_port != 0, per_user=settings.metrics_per_user
        )
        self.verifier = oidc_verifier(settings)
        self.limiter = create_limiter(
            self.metrics,
            settings.redis_url or None,
            "deny" if settings.limits_on_redis_error == "deny" else "allow",
        )
        self.tracing = Tracing(otlp_provider() if wanted(settings.otel) else None)
        self.pool = ProviderPool()
        self.proxy = Proxy(self.pool, self.metrics)
        self.snapshot: Snapshot = EMPTY  # replaced whole, never mutated: requests read it once
        self.build_cache = BuildCache()  # for apply's builds only, which run one at a time
        self.collector = Collector()
        self.ready = asyncio.Event()

    async def apply(self, resources: list[Resource], invalid: dict[str, int]) -> None:
        """Build a snapshot off the loop, then swap it in with one assignment."""
        generation = self.snapshot.generation + 1
        with self.collector.paused():
            snapshot, left = await asyncio.to_thread(
                build,
                resources,
                self.pool,
                generation,
                keys_from_secrets=self.settings.source == "files",
                cache=self.build_cache,
            )
        self.snapshot = snapshot
        self.collector.settle()
        self.pool.retire(left)
        self.metrics.generation.set(generation)
        for kind in KINDS:
            self.metrics.resources.labels(kind).set(snapshot.resource_counts.get(kind, 0))
            self.metrics.invalid.labels(kind).set(invalid.get(kind, 0))
        log.info(
            "configuration generation %d: %d model ids, %d API keys, %d policies, %d problems",
            generation,
            len(snapshot.models),
            len(snapshot.keys),
            len(snapshot.policies),
            len(snapshot.problems),
        )

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.limiter.aclose()
        if self.verifier is not None:
            await self.verifier.aclose()
        await self.tracing.shutdown()
