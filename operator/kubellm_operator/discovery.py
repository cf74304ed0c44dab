"""Azure OpenAI deployment discovery through Azure Resource Manager.

For an LLMProvider with `spec.azure.discovery`, a kopf daemon lists the account's deployments
every `interval` with an Entra ID token for Resource Manager (following `nextLink`),
publishes them in `status.discoveredDeployments`, and with `createModels: true` keeps one
LLMModel per deployment, owned by the provider (so deleting the provider deletes them).
How the listing went is recorded with the reconciler, which writes it with the other
conditions (Discovered, and Ready for refused credentials): one writer of conditions.

A daemon rather than work on events: kopf runs daemons on the active replica only, and
stops them when the provider is deleted or no longer asks for discovery. A new spec or a
changed client secret wakes the daemon at once rather than at its next interval.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
import kubernetes

from kubellm_gateway.providers.entra import (
    RESOURCE_MANAGER_SCOPE,
    ClientCredentials,
    EntraError,
    EntraTokenSource,
)
from kubellm_gateway.resources import (
    API_GROUP,
    API_VERSION,
    PLURALS,
    VERSION,
    AzureDiscovery,
    EntraID,
    LLMProvider,
    ResourceError,
    parse_resource,
)

from .conditions import (
    CREDENTIALS_REJECTED,
    DISCOVERED,
    DISCOVERY_FAILED,
    Verdict,
    fails,
    holds,
)
from .evaluation import Key, key_of
from .kubeapi import Conflict
from .reconciler import Reconciler

log = logging.getLogger(__name__)

ARM_API_VERSION = "2024-10-01"
MAX_PAGES = 100  # a bound on nextLink chains: a misbehaving endpoint must not loop us forever
REQUEST_TIMEOUT = 30.0
DISCOVERED_BY = "kubellm.io/discovered-by"
LISTED_MAX = 1024  # the CRD's bound on status.discoveredDeployments
# A stopped daemon's time to finish its request and tidy up before kopf cancels it.
STOP_GRACE = 5.0


class DiscoveryError(Exception):
    """Resource Manager refused the listing or answered something unusable."""


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    model: str
    version: str
    state: str

    def status_entry(self) -> dict[str, str]:
        return {
            "name": self.name,
            "model": self.model,
            "version": self.version,
            "provisioningState": self.state,
        }


def deployments_url(d: AzureDiscovery) -> str:
    return (
        f"{d.armEndpoint.rstrip('/')}/subscriptions/{quote(d.subscriptionID)}"
        f"/resourceGroups/{quote(d.resourceGroup)}/providers/Microsoft.CognitiveServices"
        f"/accounts/{quote(d.accountName)}/deployments?api-version={ARM_API_VERSION}"
    )


def _deployment(item: Any) -> Deployment:
    try:
        model = item["properties"]["model"]
        return Deployment(
            name=str(item["name"]),
            model=str(model["name"]),
            version=str(model.get("version", "")),
            state=str(item["properties"].get("provisioningState", "")),
        )
    except (KeyError, TypeError):
        raise DiscoveryError(f"unexpected deployment entry: {str(item)[:200]}") from None


async def list_deployments(
    session: aiohttp.ClientSession, token: str, discovery: AzureDiscovery
) -> list[Deployment]:
    """Every deployment of the account, all pages."""
    url: str | None = deployments_url(discovery)
    found: list[Deployment] = []
    for _ in range(MAX_PAGES):
        if url is None:
            return found
        try:
            async with session.get(
                url,
                headers={"authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            ) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise DiscoveryError(f"Resource Manager: {type(exc).__name__}: {exc}") from None
        if response.status != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise DiscoveryError(f"Resource Manager answered {response.status}: {message or body}")
        found.extend(_deployment(item) for item in body.get("value") or ())
        url = body.get("nextLink")
    raise DiscoveryError(f"more than {MAX_PAGES} pages of deployments")


def model_name(provider: str, deployment: str) -> str:
    """A DNS-1123 name for the LLMModel of a deployment."""
    raw = f"{provider}-{deployment}".lower()
    name = re.sub(r"[^a-z0-9]+", "-", raw).strip("-")[:253].rstrip("-")
    return name or provider


def model_manifest(provider: LLMProvider, deployment: Deployment) -> dict[str, Any]:
    """The LLMModel serving one deployment, owned by its provider."""
    meta = provider.metadata
    return {
        "apiVersion": API_VERSION,
        "kind": "LLMModel",
        "metadata": {
            "name": model_name(meta.name, deployment.name),
            "namespace": meta.namespace,
            "labels": {DISCOVERED_BY: meta.name},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "LLMProvider",
                    "name": meta.name,
                    "uid": meta.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "model": deployment.name,
            "backends": [{"provider": meta.name, "model": deployment.name}],
        },
    }


# --- the operator's discovery ---------------------------------------------------------------


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> Discovery:
    """Add discovery's handlers to the operator's registry."""
    discovery = Discovery(reconciler)
    providers = (API_GROUP, VERSION, PLURALS["LLMProvider"])
    kopf.on.startup(id="azure-discovery-open", registry=registry)(discovery.open)
    kopf.on.cleanup(id="azure-discovery-close", registry=registry)(discovery.close)
    kopf.daemon(
        *providers,
        id="azure-discovery",
        when=_wants_discovery,
        cancellation_backoff=STOP_GRACE,
        cancellation_timeout=STOP_GRACE,
        registry=registry,
    )(discovery.run)
    kopf.on.event(*providers, id="azure-discovery-spec", registry=registry)(discovery.on_provider)
    kopf.on.event("v1", "secrets", id="azure-discovery-secrets", registry=registry)(
        discovery.on_secret
    )
    return discovery


def _wants_discovery(spec: kopf.Spec, **_: Any) -> bool:
    azure = spec.get("azure")
    return isinstance(azure, Mapping) and bool(azure.get("discovery"))


@dataclass(frozen=True)
class _Target:
    """An LLMProvider asking for discovery, as the gateway reads it."""

    provider: LLMProvider
    entra: EntraID
    discovery: AzureDiscovery


@dataclass
class _Daemon:
    """What the change handlers need to know of one provider's running daemon."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    generation: int | None = None  # of the spec it last listed with
    secret: str | None = None  # the Secret holding its client secret


class Discovery:
    def __init__(self, reconciler: Reconciler) -> None:
        self._reconciler = reconciler
        self._cluster = reconciler.cluster
        self._session: aiohttp.ClientSession | None = None  # one for every provider
        self._daemons: dict[Key, _Daemon] = {}
        self._tokens: dict[Key, tuple[ClientCredentials, EntraTokenSource]] = {}

    # --- kopf entry points ----------------------------------------------------------------

    async def open(self, **_: Any) -> None:
        self._session = aiohttp.ClientSession()

    async def close(self, **_: Any) -> None:
        # kopf runs cleanup handlers once every daemon has stopped.
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def on_provider(self, event: Mapping[str, Any], **_: Any) -> None:
        meta = (event.get("object") or {}).get("metadata") or {}
        daemon = self._daemons.get((meta.get("namespace") or "default", meta.get("name", "")))
        # Not on status writes (ours and the reconciler's): only a new spec is news.
        if daemon is not None and meta.get("generation") != daemon.generation:
            daemon.wake.set()

    async def on_secret(self, event: Mapping[str, Any], **_: Any) -> None:
        meta = (event.get("object") or {}).get("metadata") or {}
        for (namespace, _name), daemon in self._daemons.items():
            if namespace == meta.get("namespace") and daemon.secret == meta.get("name"):
                daemon.wake.set()

    async def run(self, stopped: kopf.DaemonStopped, body: kopf.Body, **_: Any) -> None:
        """One provider's daemon: list, wait for the interval or a change, list again."""
        key = key_of(body)
        daemon = self._daemons[key] = _Daemon()
        try:
            while not stopped:
                daemon.wake.clear()
                daemon.generation = body.metadata.get("generation")
                interval = None  # an invalid spec waits for a new one
                target = _target(body)
                if target is not None:
                    daemon.secret = target.entra.clientSecretRef.name
                    interval = target.discovery.interval
                    await self._report(key, await self._outcome(key, target, body))
                await _sleep(stopped, daemon.wake, interval)
            if stopped.reason and kopf.DaemonStoppingReason.FILTERS_MISMATCH in stopped.reason:
                await self._retire(key)
        finally:
            if self._daemons.get(key) is daemon:  # not a successor's, for a re-created provider
                del self._daemons[key]
                self._tokens.pop(key, None)
                self._reconciler.set_discovery(key, None)

    # --- one listing ----------------------------------------------------------------------

    async def _outcome(self, key: Key, target: _Target, body: kopf.Body) -> Verdict | None:
        """How listing (and keeping models) went; None if the client secret is missing."""
        try:
            return await self._discover(key, target, body)
        except EntraError as exc:
            # Entra ID's refusals carry an AADSTS code (and never the secret); anything else
            # is the token endpoint failing, not the credentials.
            reason = CREDENTIALS_REJECTED if "AADSTS" in str(exc) else DISCOVERY_FAILED
            return fails(reason, str(exc))
        except DiscoveryError as exc:
            return fails(DISCOVERY_FAILED, str(exc))
        except kubernetes.client.ApiException as exc:
            return fails(DISCOVERY_FAILED, f"Kubernetes API: {exc.status} {exc.reason}")

    async def _discover(self, key: Key, target: _Target, body: kopf.Body) -> Verdict | None:
        entra, discovery = target.entra, target.discovery
        ref = entra.clientSecretRef
        secret = await self._cluster.secret_value(key[0], ref.name, ref.key)
        if secret is None:
            return None  # ResolvedRefs reports it, and its creation wakes us
        credentials = ClientCredentials(entra.tenantID, entra.clientID, secret, entra.authorityHost)
        token = await self._token_source(key, credentials).token()
        deployments = await list_deployments(self._http(), token, discovery)
        listed = [d.status_entry() for d in deployments[:LISTED_MAX]]
        if (body.get("status") or {}).get("discoveredDeployments") != listed:
            await self._cluster.patch_status(
                "LLMProvider", key[0], key[1], {"discoveredDeployments": listed}
            )
        # A deployment still being created (or failed, or being deleted) serves nothing yet.
        serving = [d for d in deployments if d.state == "Succeeded"]
        wanted = [model_manifest(target.provider, d) for d in serving]
        notes = await self._keep_models(key, wanted if discovery.createModels else [])
        found = f"{len(deployments)} deployment{'' if len(deployments) == 1 else 's'} listed"
        if discovery.createModels:
            found += ", an LLMModel for each"
            if len(serving) < len(deployments):
                found += f" of the {len(serving)} provisioned"
        if len(deployments) > LISTED_MAX:
            notes.insert(0, f"status lists the first {LISTED_MAX}")
        return holds(DISCOVERED, "; ".join([found, *notes]))

    async def _report(self, key: Key, outcome: Verdict | None) -> None:
        if outcome is None or not self._reconciler.set_discovery(key, outcome):
            return
        if outcome.ok:
            log.info("LLMProvider %s/%s: %s", *key, outcome.message)
        else:
            log.warning("LLMProvider %s/%s: %s: %s", *key, outcome.reason, outcome.message)
        await self._reconciler.reconcile("LLMProvider", key)

    def _token_source(self, key: Key, credentials: ClientCredentials) -> EntraTokenSource:
        cached = self._tokens.get(key)
        if cached is None or not _same(cached[0], credentials):
            source = EntraTokenSource(credentials, RESOURCE_MANAGER_SCOPE, self._http)
            cached = self._tokens[key] = (credentials, source)
        return cached[1]

    def _http(self) -> aiohttp.ClientSession:
        assert self._session is not None, "discovery runs between kopf's startup and cleanup"
        return self._session

    # --- the models -----------------------------------------------------------------------

    async def _keep_models(self, key: Key, wanted: list[dict[str, Any]]) -> list[str]:
        """Create, correct and delete the provider's discovered LLMModels (those labelled
        with its name, never others) to match `wanted`; notes on what could not be done."""
        namespace, provider = key
        labelled = await self._cluster.list_objects(
            "LLMModel", namespace, f"{DISCOVERED_BY}={provider}"
        )
        existing = {m["metadata"]["name"]: m for m in labelled}
        kept: set[str] = set()
        notes = []
        for manifest in wanted:
            name = manifest["metadata"]["name"]
            if name in kept:
                deployment = manifest["spec"]["model"]
                notes.append(f"deployment {deployment!r} has no LLMModel: {name} is taken")
                continue
            kept.add(name)
            current = existing.get(name)
            if current is None:
                try:
                    await self._cluster.create_object(manifest)
                except Conflict:
                    notes.append(f"LLMModel {namespace}/{name} exists, not made by discovery")
            elif _decided(current) != _decided(manifest):
                await self._cluster.patch_object("LLMModel", namespace, name, _decided(manifest))
        for name in sorted(existing.keys() - kept):
            await self._cluster.delete_object("LLMModel", namespace, name)
        return notes

    async def _retire(self, key: Key) -> None:
        """Discovery was switched off: its listing and its models go."""
        try:
            await self._keep_models(key, [])
            await self._cluster.patch_status(
                "LLMProvider", key[0], key[1], {"discoveredDeployments": None}
            )
        except kubernetes.client.ApiException as exc:
            log.warning("LLMProvider %s/%s: discovery not tidied up: %s", *key, exc.reason)


def _target(body: kopf.Body) -> _Target | None:
    """None if the provider is invalid (its Accepted condition says why)."""
    try:
        provider = parse_resource(dict(body))
    except ResourceError:
        return None
    if not isinstance(provider, LLMProvider) or provider.spec.azure is None:
        return None
    azure = provider.spec.azure
    if azure.entraID is None or azure.discovery is None:
        return None
    return _Target(provider, azure.entraID, azure.discovery)


def _same(a: ClientCredentials, b: ClientCredentials) -> bool:
    return (a.tenant_id, a.client_id, a.authority_host) == (
        b.tenant_id,
        b.client_id,
        b.authority_host,
    ) and secrets.compare_digest(a.client_secret.encode(), b.client_secret.encode())


def _decided(model: Mapping[str, Any]) -> dict[str, Any]:
    """What discovery decides of an LLMModel. The rest (pricing, aliases...) is people's to
    add: a merge patch of this part keeps it. Backends are compared by what discovery sets,
    not the defaults the API server fills in."""
    spec = model.get("spec") or {}
    return {
        "metadata": {"ownerReferences": model["metadata"].get("ownerReferences")},
        "spec": {
            "model": spec.get("model"),
            "backends": [
                {"provider": b.get("provider"), "model": b.get("model")}
                for b in spec.get("backends") or []
            ],
        },
    }


async def _sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float | None) -> None:
    """Until `seconds` pass, or the daemon is stopped or woken."""
    waiters = {asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
