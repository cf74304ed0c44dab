"""Reconciliation: from what changed to status written, keys minted and Events posted.

kopf calls `on_event` for every watch event of the four kinds and of Secrets, after its
indices (the operator's picture of the cluster) took the event in. The changed object and
every object that depends on it are re-evaluated from scratch against the live indices,
one reconciliation per object at a time; status is written only when it changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, cast

import kopf

from . import apikeys, conditions
from .apikeys import SecretInfo
from .evaluation import Body, Key, World, dependents, evaluate, key_of, mint_reason, model_ids
from .kubeapi import Cluster, Conflict

log = logging.getLogger(__name__)

INDICES: Final = {
    "LLMProvider": "kubellm_providers",
    "LLMModel": "kubellm_models",
    "AccessPolicy": "kubellm_policies",
    "APIKey": "kubellm_apikeys",
    "Secret": "kubellm_secrets",
}
CLAIMS: Final = "kubellm_model_claims"  # model id -> the LLMModels naming it
# A far expiry is re-checked daily rather than trusted to one long timer across clock changes.
MAX_TIMER: Final = 86400.0
RETRY_DELAYS: Final = (1.0, 2.0, 5.0, 10.0, 30.0)


class _Latest(Mapping[Key, Any]):
    """A kopf index (key -> store of values) seen as key -> the one value its object gave."""

    def __init__(self, index: kopf.Index[Key, Any]) -> None:
        self._index = index

    def __getitem__(self, key: Key) -> Any:
        return next(iter(self._index[key]))

    def __iter__(self) -> Iterator[Key]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class Reconciler:
    def __init__(self, cluster: Cluster, clock: Callable[[], datetime] | None = None) -> None:
        self.cluster = cluster
        self.clock = clock or (lambda: datetime.now(UTC))
        self._indices: Mapping[str, kopf.Index[Any, Any]] = {}
        self._locks: dict[tuple[str, Key], asyncio.Lock] = {}
        self._timers: dict[tuple[str, Key], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: dict[tuple[str, Key], int] = {}
        # Secrets this operator wrote whose watch event has not arrived yet: without them a
        # key minted a moment ago would look missing, and be minted again.
        self._written: dict[Key, tuple[str, SecretInfo]] = {}
        # Likewise the status of APIKeys just given a key, until their own event arrives.
        self._minted: dict[Key, dict[str, Any]] = {}
        self._model_ids: dict[Key, set[str]] = {}
        self._parsed: dict[Key, tuple[str | None, Any]] = {}  # see World.parsed
        # The conditions last written per object: only this operator writes them, and the
        # indices may not show the write yet when the next reconciliation starts.
        self._conditions: dict[tuple[str, Key], list[dict[str, Any]]] = {}
        self._discovery: dict[Key, conditions.Verdict] = {}  # see World.discovery

    # --- the picture of the cluster -------------------------------------------------------

    def world(self) -> World:
        def latest(kind: str) -> Mapping[Key, Any]:
            index = self._indices.get(INDICES[kind])
            return _Latest(index) if index is not None else {}

        secrets: Mapping[Key, SecretInfo] = latest("Secret")
        return World(
            providers=latest("LLMProvider"),
            models=latest("LLMModel"),
            policies=latest("AccessPolicy"),
            apikeys=latest("APIKey"),
            secrets=ChainMap({k: info for k, (_, info) in self._written.items()}, secrets)  # type: ignore[arg-type]
            if self._written
            else secrets,
            claims=self._indices.get(CLAIMS, {}),
            discovery=self._discovery,
            parsed=self._parsed,
        )

    def set_discovery(self, key: Key, outcome: conditions.Verdict | None) -> bool:
        """Record how an LLMProvider's latest deployment discovery went (None: discovery
        stopped). True if that changed: the provider is then due for reconciliation."""
        if self._discovery.get(key) == outcome:
            return False
        if outcome is None:
            del self._discovery[key]
        else:
            self._discovery[key] = outcome
        return True

    # --- kopf entry points ----------------------------------------------------------------

    async def on_event(self, kind: str, event: Mapping[str, Any], **kwargs: Any) -> None:
        self._indices = {n: kwargs[n] for n in (*INDICES.values(), CLAIMS) if n in kwargs}
        body = event.get("object") or {}
        if not body.get("metadata", {}).get("name"):
            return
        key = key_of(body)
        deleted = event.get("type") == "DELETED"
        if kind == "Secret":
            written = self._written.get(key)
            version = body["metadata"].get("resourceVersion")
            if written is not None and (deleted or version == written[0]):
                del self._written[key]  # the index has caught up with our write
        affected_ids: set[str] = set()
        if kind == "LLMModel":
            affected_ids = self._model_ids.pop(key, set())
            if not deleted:
                self._model_ids[key] = model_ids(body)
                affected_ids |= self._model_ids[key]
        if deleted:
            self._forget(kind, key)
        elif kind != "Secret":
            await self.reconcile(kind, key)
        for dependent_kind, dependent_key in dependents(kind, key, self.world(), affected_ids):
            await self.reconcile(dependent_kind, dependent_key)

    def _forget(self, kind: str, key: Key) -> None:
        timer = self._timers.pop((kind, key), None)
        if timer is not None:
            timer.cancel()
        self._locks.pop((kind, key), None)
        self._failures.pop((kind, key), None)
        self._conditions.pop((kind, key), None)
        if kind == "APIKey":
            self._minted.pop(key, None)
        if kind == "LLMModel":
            self._parsed.pop(key, None)
        if kind == "LLMProvider":
            self._discovery.pop(key, None)

    # --- one object -----------------------------------------------------------------------

    async def reconcile(self, kind: str, key: Key) -> None:
        lock = self._locks.setdefault((kind, key), asyncio.Lock())
        async with lock:
            try:
                await self._reconcile(kind, key)
            except Exception:
                attempt = self._failures.get((kind, key), 0)
                self._failures[(kind, key)] = attempt + 1
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                log.exception("%s %s/%s: reconciliation failed; retry in %ss", kind, *key, delay)
                self._later(kind, key, delay)
            else:
                self._failures.pop((kind, key), None)

    async def _reconcile(self, kind: str, key: Key) -> None:
        world = self.world()
        body = world.of_kind(kind).get(key)
        if body is None:
            return
        status: dict[str, Any] = {}
        if kind == "APIKey":
            body = self._with_minted(key, body)
            minted = await self._mint_if_due(body, world)
            if minted is not None:
                self._minted[key] = minted
                status.update(minted)
                body = {**body, "status": {**(body.get("status") or {}), **minted}}
                world = self.world()
            self._schedule_expiry(key, body)
        now = self.clock()
        old = (body.get("status") or {}).get("conditions") or []
        written = self._conditions.get((kind, key))
        if written is not None:
            if conditions.same(old, written):
                del self._conditions[(kind, key)]  # the index has caught up with our write
            else:
                old = written
        generation = body["metadata"].get("generation")
        verdicts = evaluate(kind, body, world, now)
        new = conditions.merge(old, verdicts, generation, now)
        # Each condition carries observedGeneration, so a new generation is a change too.
        if status or not conditions.same(old, new):
            status.update(observedGeneration=generation, conditions=new)
            if not await self.cluster.patch_status(kind, key[0], key[1], status):
                return
            self._conditions[(kind, key)] = new
            for condition in conditions.transitions(old, new):
                _post(body, condition)

    def _with_minted(self, key: Key, body: Body) -> Body:
        """The APIKey as it is once its latest minted key's status write arrives."""
        minted = self._minted.get(key)
        status = body.get("status") or {}
        if minted is None:
            return body
        if status.get("keyHash") == minted["keyHash"]:
            del self._minted[key]  # the index has caught up
            return body
        return {**body, "status": {**status, **minted}}

    async def _mint_if_due(self, body: Body, world: World) -> dict[str, Any] | None:
        reason = mint_reason(body, world)
        if reason is None:
            return None
        namespace = key_of(body)[0]
        key = apikeys.mint()
        secret = apikeys.secret_body(body, key)
        name = secret["metadata"]["name"]
        if world.secrets.get((namespace, name)) is None:
            try:
                version = await self.cluster.create_secret(secret)
            except Conflict:
                # There after all: its event is on the way, and with it whose it is.
                log.info("APIKey %s/%s: Secret %s appeared meanwhile", namespace, name, name)
                return None
        else:
            version = await self.cluster.patch_secret(namespace, name, {"data": secret["data"]})
        self._written[(namespace, name)] = (version, apikeys.secret_info(secret))
        rotated = bool((body.get("status") or {}).get("keyHash"))
        prefix = apikeys.key_prefix(key)
        kopf.event(
            _as_body(body),
            type="Normal",
            reason="KeyRotated" if rotated else "KeyMinted",
            message=f"new key {prefix}... in Secret {name}: {reason}",
        )
        log.info(
            "APIKey %s/%s: new key %s... (%s)", namespace, body["metadata"]["name"], prefix, reason
        )
        return {
            "keyHash": apikeys.key_hash(key),
            "keyPrefix": prefix,
            "rotation": apikeys.rotation_requested(body)
            or (body.get("status") or {}).get("rotation"),
        }

    # --- timers ---------------------------------------------------------------------------

    def _schedule_expiry(self, key: Key, body: Body) -> None:
        timer = self._timers.pop(("APIKey", key), None)
        if timer is not None:
            timer.cancel()
        expires = (body.get("spec") or {}).get("expiresAt")
        if not isinstance(expires, str):
            return
        try:
            at = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            return  # reported as InvalidSpec
        delay = (at - self.clock()).total_seconds()
        if delay > 0:
            # A little after the instant, so the evaluation sees it passed.
            self._later("APIKey", key, min(delay + 0.05, MAX_TIMER))

    def _later(self, kind: str, key: Key, delay: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop((kind, key), None)
            task = loop.create_task(self.reconcile(kind, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        previous = self._timers.pop((kind, key), None)
        if previous is not None:
            previous.cancel()
        self._timers[(kind, key)] = loop.call_later(delay, fire)


def _as_body(body: Body) -> kopf.Body:
    return kopf.Body(cast("kopf.RawBody", dict(body)))


def _post(body: Body, condition: Mapping[str, Any]) -> None:
    kopf.event(
        _as_body(body),
        type="Normal" if condition["status"] == "True" else "Warning",
        reason=condition["reason"],
        message=f"{condition['type']} is {condition['status']}: {condition['message']}"[:1024],
    )
