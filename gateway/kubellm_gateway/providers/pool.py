"""Live providers, reused across snapshots while their spec and credentials stay the same.

Rebuilding a snapshot must not drop warm connection pools, and a provider that
leaves the configuration is closed only once its last in-flight request ends.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import assert_never

from ..resources import LLMProvider, ProviderType
from .base import Provider
from .mock import MockProvider
from .openai_anthropic import AnthropicProvider
from .openai_azure import AzureOpenAIProvider
from .openai_openai import OpenAIProvider


def create(name: str, resource: LLMProvider, secret: str | None) -> Provider:
    """The live provider for a resource; `secret` is its API key or Entra ID client secret."""
    spec = resource.spec
    match spec.type:
        case ProviderType.OpenAI:
            return OpenAIProvider(name, spec, secret)
        case ProviderType.AzureOpenAI:
            return AzureOpenAIProvider(name, spec, secret)
        case ProviderType.Anthropic:
            return AnthropicProvider(name, spec, secret)
        case ProviderType.Mock:
            return MockProvider(name, spec)
        case _:  # mypy proves this unreachable: a new type must be handled above
            assert_never(spec.type)


class ProviderPool:
    def __init__(self) -> None:
        self._live: dict[str, tuple[str, Provider]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def sync(
        self, wanted: dict[str, tuple[LLMProvider, str | None]]
    ) -> tuple[dict[str, Provider], list[Provider]]:
        """The providers for a new build (name -> provider), and those it leaves behind.

        A provider is new only if its spec or key changed. Safe to call from a
        builder thread: it creates objects and never touches an event loop.
        """
        live: dict[str, tuple[str, Provider]] = {}
        left: list[Provider] = []
        for name, (resource, api_key) in wanted.items():
            key_digest = hashlib.sha256((api_key or "").encode()).hexdigest()
            fingerprint = resource.spec.model_dump_json() + key_digest
            current = self._live.get(name)
            if current is not None and current[0] == fingerprint:
                live[name] = current
                continue
            live[name] = (fingerprint, create(name, resource, api_key))
            if current is not None:
                left.append(current[1])
        left.extend(p for name, (_, p) in self._live.items() if name not in live)
        self._live = live
        return {name: p for name, (_, p) in live.items()}, left

    def retire(self, providers: list[Provider]) -> None:
        """Mark providers gone; each closes when its last in-flight request ends."""
        for provider in providers:
            provider.retired = True
            self.release_if_idle(provider)

    def release_if_idle(self, provider: Provider) -> None:
        if provider.retired and provider.inflight == 0:
            task = asyncio.get_running_loop().create_task(provider.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        for _, provider in self._live.values():
            await provider.aclose()
        self._live.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
