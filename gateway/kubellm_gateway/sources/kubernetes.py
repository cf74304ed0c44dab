"""The kubernetes source: the gateway follows the cluster's resources live.

kopf runs in standalone mode (no peering) in its own thread and event loop, because
kopf owns the loop it runs in. It lists and watches the four kubellm kinds and Secrets,
read-only: only index and event handlers are registered, and Kubernetes Events are not
posted, so the gateway never writes to the cluster.

Readiness needs the first full list of every kind. kopf processes no event handler
until every resource with an index handler is listed and each listed object indexed,
so the store is filled from index handlers, and an event handler on the LLMModel CRD
(an object that exists wherever the gateway can work at all) fires only once that
gate is open, also when the kinds have no objects. Deletions reach the store through
event handlers (kopf does not call index handlers for them).

Changes are coalesced: the first change after a quiet spell waits `window` seconds for
more, then one snapshot is built from the whole store on the serving loop
(Runtime.apply) and swapped in; rebuilds start at most every `min_interval` seconds. So
50 changes a second cost two rebuilds a second, and a single change is live in `window`
plus one build.

kopf reconnects watches on its own when the API server goes away; meanwhile the last
snapshot keeps serving. Should kopf itself stop on an error, it is started again with
backoff, with a fresh store that is published only after its first full list (so
objects deleted meanwhile go away too).

After a long outage the watch's resourceVersion may be compacted away (410 Gone): kopf
then lists the kind again, and what was deleted meanwhile is just absent from that list,
with no DELETED event (a revoked APIKey would keep working). The gateway tells such a
re-list from the first one (FirstList) and restarts kopf at once the same way, fresh
store and all; the last snapshot serves until the new one is listed. A re-list is seen
by its objects, so one that returns none (every object of the kind in a namespace gone)
shows only if the LLMModel CRD's watch, which always has its one object, expired too;
after an outage it has, like every other watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import kopf

from ..resources import (
    API_GROUP,
    API_KEY_SECRET_LABEL,
    PLURALS,
    VERSION,
    APIKey,
    LLMProvider,
    Resource,
    ResourceError,
    Secret,
    parse_resource,
    resource_key,
)

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, namespace, name)
Apply = Callable[[list[Resource], dict[str, int]], Awaitable[None]]

CRD_RESOURCE: Final = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
SENTINEL_CRD: Final = f"{PLURALS['LLMModel']}.{API_GROUP}"


def _secret_refs(provider: LLMProvider) -> list[tuple[str, str]]:
    """(namespace, name) of every Secret the provider reads."""
    spec = provider.spec
    refs = [spec.apiKeySecretRef]
    if spec.azure is not None and spec.azure.entraID is not None:
        refs.append(spec.azure.entraID.clientSecretRef)
    return [(provider.metadata.namespace, ref.name) for ref in refs if ref is not None]


class ResourceStore:
    """The resources last seen in the cluster, by kind, namespace and name.

    A resource that stops validating keeps its last valid version (the operator reports
    it in status); one that never validated is left out. API-key Secrets (owned by an
    APIKey, or named by one) are dropped on arrival: in a cluster the gateway knows keys
    only by APIKey.status.keyHash and never holds one in memory.
    """

    def __init__(self) -> None:
        self._objects: dict[Key, Resource] = {}
        self._invalid: dict[Key, str] = {}  # key -> reason, logged once per reason
        self._key_secret: dict[Key, tuple[str, str]] = {}  # APIKey -> (namespace, secretName)
        self._key_secrets: Counter[tuple[str, str]] = Counter()  # how many APIKeys name each

    def put(self, body: Mapping[str, Any]) -> bool:
        """Record an added or modified object; whether that changed the store."""
        if body.get("kind") == "Secret" and self._is_key_secret(body):
            return self.delete(body)
        try:
            resource = parse_resource(dict(body))
        except ResourceError as exc:
            key = (exc.kind, exc.namespace, exc.name)
            if self._invalid.get(key) != exc.reason:
                kept = "keeping its last valid version" if key in self._objects else "skipped"
                log.error("%s (%s)", exc, kept)
            self._invalid[key] = exc.reason
            return False
        if resource is None:
            return False
        key = resource_key(resource)
        self._invalid.pop(key, None)
        if isinstance(resource, APIKey):
            secret = (resource.metadata.namespace, resource.spec.secretName)
            self._name_key_secret(key, secret)
            # Whichever of the key and its Secret arrives last, the Secret is not kept.
            self._objects.pop(("Secret", *secret), None)
        previous = self._objects.get(key)
        self._objects[key] = resource
        return previous != resource

    def delete(self, body: Mapping[str, Any]) -> bool:
        """Forget a deleted object; whether the store held it."""
        meta = body.get("metadata") or {}
        key = (
            str(body.get("kind")),
            str(meta.get("namespace") or "default"),
            str(meta.get("name")),
        )
        self._invalid.pop(key, None)
        self._name_key_secret(key, None)
        return self._objects.pop(key, None) is not None

    def _name_key_secret(self, key: Key, secret: tuple[str, str] | None) -> None:
        previous = self._key_secret.pop(key, None)
        if previous is not None:
            self._key_secrets[previous] -= 1
            if not self._key_secrets[previous]:
                del self._key_secrets[previous]
        if secret is not None:
            self._key_secret[key] = secret
            self._key_secrets[secret] += 1

    def _is_key_secret(self, body: Mapping[str, Any]) -> bool:
        meta = body.get("metadata") or {}
        owners = meta.get("ownerReferences") or ()
        if any(
            isinstance(o, Mapping)
            and o.get("kind") == "APIKey"
            and str(o.get("apiVersion", "")).startswith(f"{API_GROUP}/")
            for o in owners
        ):
            return True
        return (meta.get("namespace") or "default", meta.get("name")) in self._key_secrets

    def resources(self) -> tuple[list[Resource], dict[str, int]]:
        """What a snapshot is built from: the kubellm objects, the Secrets providers read,
        and the number of invalid objects per kind."""
        wanted = {
            ref
            for r in self._objects.values()
            if isinstance(r, LLMProvider)
            for ref in _secret_refs(r)
        }
        found = [
            r
            for r in self._objects.values()
            if not isinstance(r, Secret) or (r.metadata.namespace, r.metadata.name) in wanted
        ]
        invalid: dict[str, int] = {}
        for kind, _, _ in self._invalid:
            invalid[kind] = invalid.get(kind, 0) + 1
        return found, invalid


class FirstList:
    """Whether an event of type None (a listed object) comes from the first list of a kopf
    run, or from a re-list after 410 Gone.

    Every object of the first list is indexed before kopf's gate opens, and its event
    handlers run only after that: so each uid indexed before the gate is owed one type-None
    event, and any other is a re-list. kopf may fold a listed object and a quick change to
    it into one event; that uid then stays owed, and a re-list of it goes unnoticed (its
    kind's other objects still tell).
    """

    def __init__(self) -> None:
        self._owed: set[str] = set()
        self._gate_open = False

    def indexed(self, uid: str | None) -> None:
        if not self._gate_open and uid is not None:
            self._owed.add(uid)

    def gate_opened(self) -> None:
        self._gate_open = True

    def relisted(self, uid: str | None) -> bool:
        """For an event of type None: whether it comes from a re-list."""
        if uid is None:  # the API server sets one on every object; never guess a restart
            return False
        if uid in self._owed:
            self._owed.remove(uid)
            return False
        return True


class _NoEssence(kopf.DiffBaseStorage):
    """No diff base: kopf deep-copies every object on every event to diff it for change
    handlers, and the gateway has none (only index and event handlers)."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


class KubernetesSource:
    """kopf in a thread of its own, feeding `apply` on the serving loop."""

    def __init__(
        self,
        apply: Apply,
        namespaces: tuple[str, ...] = (),
        kubeconfig: Path | None = None,
        window: float = 0.1,
        min_interval: float = 0.5,
        restart_backoff: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.apply = apply
        self.namespaces = namespaces  # empty: cluster-wide
        self.kubeconfig = kubeconfig
        self.window = window
        self.min_interval = min_interval
        self.restart_backoff = restart_backoff
        self._stop = threading.Event()
        # The current kopf run's stop flag: set by run() on the way out, and on a re-list.
        self._run_stop = threading.Event()

    async def run(self, ready: asyncio.Event) -> None:
        """Follow the cluster until cancelled; `ready` is set after the first snapshot."""
        if self.kubeconfig is not None:
            # kopf's kubeconfig login reads the standard variable; set before kopf starts.
            os.environ["KUBECONFIG"] = str(self.kubeconfig)
        # kopf reports every handled event at info level: noise at this rate, so only its
        # warnings and errors reach the gateway's log.
        logging.getLogger("kopf").setLevel(
            max(logging.WARNING, logging.getLogger().getEffectiveLevel())
        )
        self._stop.clear()
        thread = threading.Thread(
            target=self._serve,
            args=(asyncio.get_running_loop(), ready),
            name="kubellm-kubernetes-source",
            daemon=True,  # never holds the process up, even if kopf hangs on its way out
        )
        thread.start()
        try:
            await asyncio.Event().wait()
        finally:
            self._stop.set()
            self._run_stop.set()
            await asyncio.to_thread(thread.join, 15)
            if thread.is_alive():
                log.error("kopf did not stop within 15s; leaving it to the process exit")

    def _serve(self, serving_loop: asyncio.AbstractEventLoop, ready: asyncio.Event) -> None:
        delay, longest = self.restart_backoff
        while True:
            # Replaced before _stop is checked, so a stop() from here on reaches this run.
            self._run_stop = threading.Event()
            if self._stop.is_set():
                return
            try:
                if asyncio.run(self._operate(serving_loop, ready, self._run_stop)):
                    continue  # a re-list, already logged: not an error, so no backoff
            except Exception:
                log.exception("kopf stopped on an error; the last configuration keeps serving")
            if self._stop.wait(delay):
                return
            log.warning("restarting kopf")
            delay = min(delay * 2, longest)

    async def _operate(
        self, serving_loop: asyncio.AbstractEventLoop, ready: asyncio.Event, stop: threading.Event
    ) -> bool:
        """One kopf run, until `stop` or an error; whether it stopped on a re-list."""
        store = ResourceStore()
        changed = asyncio.Event()
        listed = asyncio.Event()
        relisted = False

        def restart(what: str) -> None:
            nonlocal relisted
            if stop.is_set():  # stopping already; the rest of a re-list has nothing to add
                return
            log.warning(
                "kopf listed %s again: its watch expired (410 Gone), and a re-list shows no "
                "deletions; restarting kopf with a fresh store, the last configuration "
                "serves until that is listed",
                what,
            )
            relisted = True
            stop.set()

        publisher = asyncio.create_task(
            self._publish(store, changed, listed, serving_loop, ready), name="kubellm-publisher"
        )
        try:
            await kopf.operator(
                registry=self._registry(store, changed, listed, restart),
                settings=self._settings(),
                standalone=True,
                clusterwide=not self.namespaces,
                namespaces=list(self.namespaces),
                stop_flag=stop,
            )
        finally:
            # kopf waits for the flag in an executor thread, and asyncio.run waits for that
            # thread: when kopf ended on an error, the flag is all that ends it.
            stop.set()
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        return relisted

    def _settings(self) -> kopf.OperatorSettings:
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False  # no Kubernetes Events: the gateway never writes
        settings.persistence.diffbase_storage = _NoEssence()
        # Resources are resolved once at start (the CRDs come before the gateway), so kopf
        # needs no watch of all CRDs and namespaces, nor the RBAC for them.
        settings.scanning.disabled = True
        settings.watching.label_selectors["v1", "secrets"] = f"!{API_KEY_SECRET_LABEL}"
        settings.watching.field_selectors[CRD_RESOURCE[0], CRD_RESOURCE[2]] = (
            f"metadata.name={SENTINEL_CRD}"
        )
        return settings

    def _registry(
        self,
        store: ResourceStore,
        changed: asyncio.Event,
        listed: asyncio.Event,
        restart: Callable[[str], None],
    ) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        first_list = FirstList()

        async def put(body: kopf.Body, uid: str | None, **_: Any) -> None:
            first_list.indexed(uid)  # before parsing: an invalid object is owed its event too
            if store.put(body):
                changed.set()

        async def forget(
            type: str | None, body: kopf.Body, uid: str | None, resource: kopf.Resource, **_: Any
        ) -> None:
            if type is None and first_list.relisted(uid):
                restart(resource.plural)
            elif type == "DELETED" and store.delete(body):
                changed.set()

        async def gate_opened(type: str | None, **_: Any) -> None:
            if type is None and listed.is_set():  # the sentinel's first list opened the gate
                restart(f"the CRD {SENTINEL_CRD}")
            if type != "DELETED":
                first_list.gate_opened()
                listed.set()

        resources = [(API_GROUP, VERSION, plural) for plural in PLURALS.values()]
        for group, version, plural in [*resources, ("", "v1", "secrets")]:
            kopf.index(group, version, plural, id=f"store-{plural}", registry=registry)(put)
            kopf.on.event(group, version, plural, id=f"forget-{plural}", registry=registry)(forget)
        kopf.on.event(*CRD_RESOURCE, id="listed", registry=registry)(gate_opened)
        kopf.on.login(registry=registry)(self._login)
        return registry

    def _login(self, **kwargs: Any) -> kopf.ConnectionInfo | None:
        in_pod = self.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST")
        if in_pod:
            return kopf.login_with_service_account(**kwargs)
        info = kopf.login_with_kubeconfig(**kwargs)
        if info is not None and not (
            info.token or info.certificate_path or info.certificate_data or info.username
        ):
            # kopf's own kubeconfig reader knows tokens, certificates and passwords; a user
            # with an exec plugin (EKS, GKE, OIDC login helpers) needs the kubernetes client,
            # which runs the plugin (and again whenever kopf logs in anew after a 401).
            return self._login_with_plugin(info)
        return info

    def _login_with_plugin(self, info: kopf.ConnectionInfo) -> kopf.ConnectionInfo:
        # Imported here: the kubernetes client is heavy, and only exec-plugin users need it.
        from .. import kube_credentials  # noqa: PLC0415

        config = kube_credentials.load_config(self.kubeconfig)
        return kube_credentials.connection_info(config, info.default_namespace)

    async def _publish(
        self,
        store: ResourceStore,
        changed: asyncio.Event,
        listed: asyncio.Event,
        serving_loop: asyncio.AbstractEventLoop,
        ready: asyncio.Event,
    ) -> None:
        await listed.wait()
        log.info("listed every kind; following changes")
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            changed.clear()  # before reading: a change from now on means one more round
            resources, invalid = store.resources()
            future = asyncio.run_coroutine_threadsafe(
                self._swap(resources, invalid, ready), serving_loop
            )
            try:
                await asyncio.wrap_future(future)
            except Exception:
                log.exception("building from the cluster's resources failed; the last one stays")
            await changed.wait()
            # Let the rest of a burst arrive; under steady churn, rebuild at most every
            # min_interval: each build holds the GIL against requests (bench/README.md).
            await asyncio.sleep(max(self.window, started + self.min_interval - loop.time()))

    async def _swap(
        self, resources: list[Resource], invalid: dict[str, int], ready: asyncio.Event
    ) -> None:
        """On the serving loop: build, swap, and be ready from the first snapshot on."""
        await self.apply(resources, invalid)
        ready.set()
