"""The live state of one gateway process: settings, current snapshot, providers, metrics."""

from __future__ import annotations

import asyncio
import logging

from .providers.pool import ProviderPool
from .proxy import Proxy
from .resources import Resource
from .routing import EMPTY, Snapshot, build
from .settings import Settings
from .telemetry.metrics import Metrics

log = logging.getLogger(__name__)

KINDS = ("LLMProvider", "LLMModel", "AccessPolicy", "APIKey", "Secret")


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(enabled=settings.metrics_port != 0)
        self.pool = ProviderPool()
        self.proxy = Proxy(self.pool, self.metrics)
        self.snapshot: Snapshot = EMPTY  # replaced whole, never mutated: requests read it once
        self.ready = asyncio.Event()

    async def apply(self, resources: list[Resource], invalid: dict[str, int]) -> None:
        """Build a snapshot off the loop, then swap it in with one assignment."""
        generation = self.snapshot.generation + 1
        snapshot, left = await asyncio.to_thread(
            build,
            resources,
            self.pool,
            generation,
            keys_from_secrets=self.settings.source == "files",
        )
        self.snapshot = snapshot
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
