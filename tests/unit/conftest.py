"""Builders shared by the unit tests: parsed resources, Mock providers, routes, model entries."""

from __future__ import annotations

from typing import Any

from kubellm_gateway.providers.base import Operation
from kubellm_gateway.providers.mock import MockProvider
from kubellm_gateway.resources import LLMProviderSpec, Pricing, Resource, parse_resource
from kubellm_gateway.routing import ModelEntry, Route


def with_meta(doc: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """`doc` with extra metadata (namespace, creationTimestamp, labels...)."""
    return {**doc, "metadata": {**doc["metadata"], **metadata}}


def parse_all(*docs: dict[str, Any] | list[dict[str, Any]]) -> list[Resource]:
    """Manifest dicts (or lists of them, as tests/support/manifests.py builds) as resources."""
    flat: list[dict[str, Any]] = []
    for doc in docs:
        flat.extend(doc if isinstance(doc, list) else [doc])
    resources = [parse_resource(doc) for doc in flat]
    assert all(r is not None for r in resources)
    return [r for r in resources if r is not None]


def mock_provider(
    name: str = "default/mock",
    *,
    attempts: int = 2,
    initial_backoff: float = 0.25,
    max_backoff: float = 10.0,
) -> MockProvider:
    spec = LLMProviderSpec.model_validate(
        {
            "type": "Mock",
            "retry": {
                "attempts": attempts,
                "initialBackoff": initial_backoff,
                "maxBackoff": max_backoff,
            },
        }
    )
    return MockProvider(name, spec)


def route(name: str, *, weight: int = 1, attempts: int = 2) -> Route:
    return Route(mock_provider(name, attempts=attempts), f"{name}-model", weight)


def model_entry(
    *tiers: tuple[Route, ...],
    pricing: Pricing | None = None,
    capabilities: frozenset[Operation] = frozenset(),
) -> ModelEntry:
    return ModelEntry(
        id="chat",
        namespace="default",
        name="chat",
        labels={},
        capabilities=capabilities,
        tiers=tiers,
        pricing=pricing,
        created=0,
    )
