"""routing.build with a BuildCache: through edits, deletes and adds, every snapshot equals a
cold build of the same resources, and what did not change is reused (Mock: no network)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from kubellm_gateway.providers.pool import ProviderPool
from kubellm_gateway.resources import Resource, parse_resource
from kubellm_gateway.routing import BuildCache, Principal, Snapshot, build
from tests.support.gateway import new_key
from tests.support.manifests import api_key, backend, model, policy, provider, secret
from tests.unit.conftest import with_meta

# Principals without keys (as OIDC users are): granted through Snapshot.grant.
PROBES = [
    Principal("alice", frozenset({"g1"}), auth="oidc"),
    Principal("u", frozenset({"g2", "g9"}), auth="oidc"),
    Principal("nobody", frozenset(), auth="oidc"),
]


class World:
    """Resources as a source holds them: the same object until that resource changes."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Resource] = {}

    def put(self, *docs: dict[str, Any] | list[dict[str, Any]]) -> None:
        for doc in docs:
            for one in doc if isinstance(doc, list) else [doc]:
                resource = parse_resource(one)
                assert resource is not None
                meta = resource.metadata
                self.objects[resource.kind, meta.namespace, meta.name] = resource

    def delete(self, kind: str, name: str, namespace: str = "default") -> None:
        del self.objects[kind, namespace, name]

    def resources(self) -> list[Resource]:
        return list(self.objects.values())


def assert_same(incremental: Snapshot, cold: Snapshot) -> None:
    for f in dataclasses.fields(Snapshot):
        if f.name not in ("access", "_memo"):
            assert getattr(incremental, f.name) == getattr(cold, f.name), f.name
    assert incremental.access.policies == cold.access.policies
    assert incremental.access.granted == cold.access.granted
    for principal in PROBES:
        assert incremental.grant(principal) == cold.grant(principal)


def hashed(name: str, **spec: Any) -> list[dict[str, Any]]:
    """An APIKey with its Secret and the hash the operator publishes: known either way."""
    key = new_key()
    found, doc = api_key(name, key, **spec)
    return [
        found,
        {**doc, "status": {"keyHash": "sha256:" + hashlib.sha256(key.encode()).hexdigest()}},
    ]


def gold(name: str, **spec: Any) -> dict[str, Any]:
    return model(name, [backend("mock", name)], labels={"tier": "gold"}, **spec)


def start(world: World) -> None:
    world.put(
        provider("mock", "Mock"),
        provider("other", "Mock"),
        gold("a", aliases=["a-latest"]),
        model("b", [backend("other", "b"), backend("mock", "b", priority=1)]),
        model("c", [backend("missing", "c")], labels={"tier": "tin"}),
        gold("d", disabled=True),
        api_key("k1", new_key(), groups=["g1"]),
        hashed("k2", groups=["g2"]),
        api_key("k3", new_key(), user="u"),
        policy("p1", [("Group", "g1")], models=["a*"]),
        policy("p2", [("Group", "g2")], modelSelector={"matchLabels": {"tier": "gold"}}),
        policy("p3", [("APIKey", "k3")], models=["*"]),
        policy(
            "p4",
            [("User", "u")],
            modelSelector={
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]
            },
        ),
    )


def shared_key(world: World) -> None:
    key = new_key()
    world.put(api_key("k5", key), api_key("k6", key))


def hashed_key(world: World) -> None:
    world.put(hashed("k7", groups=["g1"])[1])  # without its Secret


def clear(world: World) -> None:
    for kind, namespace, name in list(world.objects):
        if kind != "LLMProvider":
            world.delete(kind, name, namespace)


def many_models(world: World) -> None:
    world.put(*(gold(f"bulk{i}") for i in range(40)))


STEPS: list[tuple[str, Callable[[World], None]]] = [
    ("nothing changes", lambda w: None),
    ("a model is relabeled", lambda w: w.put(model("a", [backend("mock", "a")], labels={}))),
    ("a model is added", lambda w: w.put(gold("e"))),
    ("a model is deleted", lambda w: w.delete("LLMModel", "b")),
    ("a model comes back", lambda w: w.put(model("b", [backend("other", "b")]))),
    ("its provider is replaced", lambda w: w.put(provider("other", "Mock", retry={"attempts": 5}))),
    ("its provider is deleted", lambda w: w.delete("LLMProvider", "other")),
    ("its provider comes back", lambda w: w.put(provider("other", "Mock"))),
    ("the missing provider appears", lambda w: w.put(provider("missing", "Mock"))),
    (
        "an older model takes an id",
        lambda w: w.put(
            with_meta(gold("old", model="e"), creationTimestamp="2020-01-01T00:00:00Z")
        ),
    ),
    ("the older model goes", lambda w: w.delete("LLMModel", "old")),
    ("an alias collides", lambda w: w.put(gold("f", aliases=["a-latest", "f-latest"]))),
    ("a model is disabled", lambda w: w.put(gold("e", disabled=True))),
    ("a model is enabled", lambda w: w.put(gold("d"))),
    ("a policy is edited", lambda w: w.put(policy("p1", [("Group", "g1")], models=["b", "e"]))),
    ("a policy is deleted", lambda w: w.delete("AccessPolicy", "p2")),
    (
        "a policy is added",
        lambda w: w.put(policy("p5", [("Group", "g9"), ("User", "alice")], models=["c"])),
    ),
    (
        "a policy names another group",
        lambda w: w.put(policy("p5", [("Group", "g2")], models=["c"])),
    ),
    ("a key is added", lambda w: w.put(api_key("k4", new_key(), groups=["g1", "g2"]))),
    ("a key is deleted", lambda w: w.delete("APIKey", "k1")),
    ("a key changes groups", lambda w: w.put(hashed("k2", groups=["g9"]))),
    ("a key's Secret changes", lambda w: w.put(secret("k3-key", apiKey=new_key()))),
    ("a key's Secret is deleted", lambda w: w.delete("Secret", "k3-key")),
    ("two keys share one key", shared_key),
    ("one of them goes", lambda w: w.delete("APIKey", "k5")),
    ("many models are added", many_models),
    ("a model among many is relabeled", lambda w: w.put(gold("bulk7", aliases=["seven"]))),
    ("a key known only by its hash", hashed_key),
    ("everything but providers goes", clear),
    ("it all comes back", start),
]


@pytest.mark.parametrize("keys_from_secrets", [True, False])
def test_each_incremental_build_equals_a_cold_build(keys_from_secrets: bool) -> None:
    world, pool, cache = World(), ProviderPool(), BuildCache()
    start(world)
    previous, _ = build(
        world.resources(), pool, 1, keys_from_secrets=keys_from_secrets, cache=cache
    )
    problems = reused = 0
    for generation, (step, change) in enumerate(STEPS, start=2):
        change(world)
        resources = world.resources()
        snapshot, _ = build(
            resources, pool, generation, keys_from_secrets=keys_from_secrets, cache=cache
        )
        # The same pool: providers that did not change are the same objects in both.
        cold, left = build(resources, pool, generation, keys_from_secrets=keys_from_secrets)
        assert left == [], step
        try:
            assert_same(snapshot, cold)
        except AssertionError as exc:
            raise AssertionError(f"after {step!r}: {exc}") from exc
        problems += bool(snapshot.problems)
        reused += any(previous.models.get(i) is m for i, m in snapshot.models.items())
        previous = snapshot
    # Problems were replayed from the cache and entries reused along the way.
    assert problems > 10
    assert reused > 20


def test_unchanged_resources_are_reused_and_changed_ones_are_not() -> None:
    world, pool, cache = World(), ProviderPool(), BuildCache()
    start(world)
    first, _ = build(world.resources(), pool, 1, cache=cache)
    world.put(model("a", [backend("mock", "a")], labels={"tier": "gold", "v": "2"}))
    world.put(provider("other", "Mock", retry={"attempts": 3}))
    second, left = build(world.resources(), pool, 2, cache=cache)
    assert [p.name for p in left] == ["default/other"]
    assert second.models["c"] is first.models["c"]  # untouched: reused
    assert second.models["a"] is not first.models["a"]  # edited
    assert second.models["a"].labels == {"tier": "gold", "v": "2"}
    assert second.models["b"] is not first.models["b"]  # routes to a replaced provider
    assert {r.provider for tier in second.models["b"].tiers for r in tier}.isdisjoint(left)
    assert second.keys == first.keys
    assert all(second.keys[d] is first.keys[d] for d in first.keys)
    # p2 selects gold models; "a" stayed gold, so every policy's models are the same object.
    assert all(n is o for n, o in zip(second.access.granted, first.access.granted, strict=True))


def test_the_cache_holds_only_the_current_resources() -> None:
    world, pool, cache = World(), ProviderPool(), BuildCache()
    start(world)
    build(world.resources(), pool, 1, cache=cache)
    for name in ("a", "b", "c"):
        world.delete("LLMModel", name)
    world.delete("APIKey", "k1")
    build(world.resources(), pool, 2, cache=cache)
    assert cache.last is not None
    current = {id(r) for r in world.resources()}
    held: list[Resource] = [m.resource for m in cache.last.models.values()]
    held += [k.resource for k in cache.last.keys.values()]
    assert len(held) == 2  # k2, k3: "d", the only model left, is disabled
    assert all(id(r) in current for r in held)


def test_keys_known_another_way_are_derived_again() -> None:
    world, pool, cache = World(), ProviderPool(), BuildCache()
    start(world)
    world.put(api_key("k8", new_key())[1])  # without its Secret: refused either way, not alike
    build(world.resources(), pool, 1, keys_from_secrets=True, cache=cache)
    snapshot, _ = build(world.resources(), pool, 2, keys_from_secrets=False, cache=cache)
    assert_same(snapshot, build(world.resources(), pool, 2, keys_from_secrets=False)[0])
    assert len(snapshot.keys) == 1  # only k2 has a published hash
