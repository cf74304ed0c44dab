"""The routing table: an immutable snapshot built from resources, swapped atomically.

Requests read the current snapshot once and never lock. Everything a request
needs (model by id or alias, key by hash, the models a principal may use) is a
dictionary lookup here; the work happens once per configuration change.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import itertools
import logging
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from .providers.base import Operation, Provider
from .providers.pool import ProviderPool
from .resources import (
    AccessPolicy,
    APIKey,
    Capability,
    LabelSelector,
    LLMModel,
    LLMProvider,
    Pricing,
    Resource,
    Secret,
)

log = logging.getLogger(__name__)

API_KEY_SECRET_FIELD = "apiKey"  # noqa: S105 - a field name, not a secret
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# The values a build makes by the ten thousand are NamedTuples: immutable like frozen
# dataclasses, but made three times faster (bench/propagation.py, "cold build"), and
# hashed in C (a Principal is looked up on every request).


class Principal(NamedTuple):
    """Who is calling: the subjects AccessPolicies name."""

    user: str
    groups: frozenset[str]
    api_key: str | None = None  # "namespace/name" of the APIKey used, if any
    auth: str = "apikey"


class Route(NamedTuple):
    provider: Provider
    model: str  # the backend's model (or Azure deployment) name
    weight: int


class ModelEntry(NamedTuple):
    id: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    capabilities: frozenset[Operation]
    tiers: tuple[tuple[Route, ...], ...]  # by priority, best first; empty if none is routable
    pricing: Pricing | None
    created: int


class KeyEntry(NamedTuple):
    principal: Principal
    digest: bytes
    expires_at: float | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class Grant:
    """What the policies naming one principal give it."""

    models: frozenset[str]  # the union of `policies`' models
    policies: tuple[tuple[AccessPolicy, frozenset[str]], ...]  # each naming policy, its models
    _granting: dict[str, tuple[AccessPolicy, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def granting(self, model_id: str) -> tuple[AccessPolicy, ...]:
        """The naming policies that grant the model, in policy order; memoized, as both the
        request's policy label and its limits ask on every request."""
        found = self._granting.get(model_id)
        if found is None:
            found = self._granting[model_id] = tuple(
                p for p, models in self.policies if model_id in models
            )
        return found


GRANT_MEMO_SIZE = 10_000  # principals memoized per snapshot


_WILDCARD = re.compile(r"[*?\[]")


class _ModelIndex:
    """Model ids sorted (globs scan only the ids that share their literal prefix) and by
    label (selectors intersect label sets): testing every policy against every model cost
    20 s at 10,000 models and 1,000 policies (bench/propagation.py)."""

    def __init__(self, models: Sequence[ModelEntry]) -> None:
        self.ids = sorted(m.id for m in models)
        self.labels = {m.id: m.labels for m in models}
        self.by_label: dict[tuple[str, str], set[str]] = defaultdict(set)
        for m in models:
            for item in m.labels.items():
                self.by_label[item].add(m.id)
        self.memo: dict[str, frozenset[str]] = {}  # policies often share globs and selectors

    def policy_models(self, policy: AccessPolicy) -> frozenset[str]:
        selector = policy.spec.modelSelector
        selector_key = "selector:" + selector.model_dump_json() if selector is not None else ""
        key = "policy:" + "\0".join(policy.spec.models) + "\0" + selector_key
        if (hit := self.memo.get(key)) is not None:
            return hit  # many policies give the same models to different subjects
        parts = [self.glob(pattern) for pattern in policy.spec.models]
        if selector is not None:
            parts.append(self.selected(selector, selector_key))
        matched = self.memo[key] = frozenset().union(*parts)
        return matched

    def glob(self, pattern: str) -> frozenset[str]:
        if (hit := self.memo.get("glob:" + pattern)) is not None:
            return hit
        prefix = _WILDCARD.split(pattern, maxsplit=1)[0]
        if prefix == pattern:
            matched = frozenset({pattern} & self.labels.keys())
        elif pattern == prefix + "*":  # the usual glob: every id with the prefix, no regex
            matched = frozenset(self.prefixed(prefix))
        else:
            regex = re.compile(fnmatch.translate(pattern))
            matched = frozenset(i for i in self.prefixed(prefix) if regex.match(i))
        self.memo["glob:" + pattern] = matched
        return matched

    def prefixed(self, prefix: str) -> list[str]:
        """The ids starting with `prefix`: one run of the sorted ids."""
        start = bisect.bisect_left(self.ids, prefix)
        if prefix and prefix[-1] != chr(sys.maxunicode):
            # Below the prefix's successor (last character + 1) is exactly what starts with it.
            successor = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            return self.ids[start : bisect.bisect_left(self.ids, successor, lo=start)]
        return list(itertools.takewhile(lambda i: i.startswith(prefix), self.ids[start:]))

    def selected(self, selector: LabelSelector, key: str) -> frozenset[str]:
        """The ids `selector` matches; `key` is its memo key ("selector:" and its JSON)."""
        if (hit := self.memo.get(key)) is not None:
            return hit
        if selector.matchLabels:
            sets = sorted(
                (self.by_label.get(item, set()) for item in selector.matchLabels.items()), key=len
            )
            candidates: Iterable[str] = set.intersection(*sets)
        else:
            candidates = self.ids
        expressions = selector.matchExpressions
        matched = frozenset(
            candidates
            if not expressions
            else (i for i in candidates if all(r.matches(self.labels[i]) for r in expressions))
        )
        self.memo[key] = matched
        return matched


def _grants_model(policy: AccessPolicy, model_id: str, labels: Mapping[str, str]) -> bool:
    """Whether `policy` gives the model: _ModelIndex.policy_models for one model."""
    selector = policy.spec.modelSelector
    return any(fnmatch.fnmatchcase(model_id, pattern) for pattern in policy.spec.models) or (
        selector is not None and selector.matches(labels)
    )


def _subjects(policy: AccessPolicy) -> list[tuple[str, str]]:
    """The (kind, name) keys of the principals a policy names."""
    return [
        # An APIKey subject names a key in the policy's namespace.
        (s.kind, f"{policy.metadata.namespace}/{s.name}" if s.kind == "APIKey" else s.name)
        for s in policy.spec.subjects
    ]


def _own_names(principal: Principal) -> Iterable[tuple[str, str]]:
    """The (kind, name) keys a policy may name the principal by, but for its groups."""
    yield "User", principal.user
    if principal.api_key is not None:
        yield "APIKey", principal.api_key


def _names(principal: Principal) -> Iterable[tuple[str, str]]:
    """The (kind, name) keys a policy may name the principal by."""
    yield from _own_names(principal)
    for group in principal.groups:
        yield "Group", group


class Access:
    """The policies indexed for granting: by the subjects they name, with their models."""

    def __init__(self, policies: Sequence[AccessPolicy], granted: Sequence[frozenset[str]]) -> None:
        self.policies = tuple(policies)
        self.granted = tuple(granted)  # each policy's models, by position
        self.naming: dict[tuple[str, str], set[int]] = defaultdict(set)
        for position, policy in enumerate(policies):
            for subject in _subjects(policy):
                self.naming[subject].add(position)
        # Principals sharing the same policies (a group's keys) share one union.
        self.unions: dict[tuple[int, ...], frozenset[str]] = {}
        self.by_groups: dict[frozenset[str], tuple[int, ...]] = {}  # positions naming groups

    def positions(self, principal: Principal) -> tuple[int, ...]:
        """The positions of the policies naming the principal, in policy order."""
        groups = self.by_groups.get(principal.groups)
        if groups is None:
            if len(self.by_groups) >= GRANT_MEMO_SIZE:
                self.by_groups.clear()
            named = (self.naming.get(("Group", g), ()) for g in principal.groups)
            groups = self.by_groups[principal.groups] = tuple(sorted(set().union(*named)))
        own = [found for name in _own_names(principal) if (found := self.naming.get(name))]
        if not own:
            return groups  # the usual case: granted through groups alone
        return tuple(sorted(set(groups).union(*own)))

    def models(self, principal: Principal) -> frozenset[str]:
        return self._union(self.positions(principal))

    def grant(self, principal: Principal) -> Grant:
        positions = self.positions(principal)
        return Grant(
            self._union(positions), tuple((self.policies[i], self.granted[i]) for i in positions)
        )

    def _union(self, positions: tuple[int, ...]) -> frozenset[str]:
        models = self.unions.get(positions)
        if models is None:
            if len(self.unions) >= GRANT_MEMO_SIZE:
                self.unions.clear()
            sets = [self.granted[i] for i in positions]
            models = sets[0] if len(sets) == 1 else frozenset().union(*sets)
            self.unions[positions] = models
        return models


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    models: Mapping[str, ModelEntry]  # by id and by alias
    keys: Mapping[bytes, KeyEntry]  # by SHA-256 digest of the key
    grants: Mapping[Principal, frozenset[str]]  # precomputed for every API key
    policies: tuple[AccessPolicy, ...]
    problems: tuple[str, ...] = ()
    resource_counts: Mapping[str, int] = field(default_factory=dict)
    access: Access = field(default_factory=lambda: Access((), ()))
    # Principals without a key (OIDC users) are granted on first use, then looked up.
    _memo: dict[Principal, Grant] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def allowed(self, principal: Principal) -> frozenset[str]:
        """Ids of the models the principal may use (default deny)."""
        granted = self.grants.get(principal)
        if granted is None:
            granted = self.grant(principal).models
        return granted

    def grant(self, principal: Principal) -> Grant:
        """The policies naming the principal and what they give it, memoized per snapshot."""
        grant = self._memo.get(principal)
        if grant is None:
            if len(self._memo) >= GRANT_MEMO_SIZE:
                self._memo.clear()  # a flood of new principals costs recomputation, not memory
            grant = self._memo[principal] = self.access.grant(principal)
        return grant

    def _canonical(self) -> list[ModelEntry]:
        return [m for key, m in self.models.items() if key == m.id]

    def listed(self, principal: Principal) -> list[ModelEntry]:
        allowed = self.allowed(principal)
        return sorted((m for m in self._canonical() if m.id in allowed), key=lambda m: m.id)


EMPTY = Snapshot(generation=0, models={}, keys={}, grants={}, policies=())


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _qualified(resource: Resource) -> str:
    return f"{resource.metadata.namespace}/{resource.metadata.name}"


def _owner(resource: Resource) -> str:
    """How problems name a resource."""
    return f"{resource.kind} {_qualified(resource)}"


def _created(resource: Resource) -> datetime:
    created = resource.metadata.creationTimestamp or _EPOCH
    # The API server writes UTC with "Z"; a hand-written manifest may omit the zone.
    return created if created.tzinfo is not None else created.replace(tzinfo=UTC)


class _ModelMemo(NamedTuple):
    resource: LLMModel
    providers: tuple[tuple[str, Provider | None], ...]  # each backend's provider, as looked up
    entry: ModelEntry
    problems: tuple[str, ...]


class _KeyMemo(NamedTuple):
    resource: APIKey
    secret: Secret | None  # the Secret its key was read from, if it was
    entry: KeyEntry | None  # None: refused
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Derived:
    """What one build derived from its resources. Memos are keyed by the id() of the
    resource they hold (so the id cannot be reused while the memo lives) and are valid
    only for that very object: sources keep the same object for an unchanged resource."""

    keys_from_secrets: bool
    models: dict[int, _ModelMemo]
    keys: dict[int, _KeyMemo]
    canonical: dict[str, ModelEntry]  # by id, without aliases
    access: Access
    grants: dict[Principal, frozenset[str]]


class BuildCache:
    """What the last build derived, for the next build (given the same pool) to reuse.

    Each build replaces it whole, so it holds only what the current resources derive;
    builds sharing one must not run concurrently (Runtime.apply runs one at a time).
    """

    def __init__(self) -> None:
        self.last: _Derived | None = None


# Above this many changed model ids, matching every policy against each changed model
# costs more than matching every policy against the whole model index.
_MODEL_DELTA_LIMIT = 32


def _model_delta(
    before: Mapping[str, ModelEntry], after: Mapping[str, ModelEntry]
) -> tuple[set[str], list[ModelEntry]] | None:
    """The ids whose match may have changed (gone or relabeled) and the entries to match
    again, or None when there are too many of them. Policies match only id and labels."""
    gone = {
        i
        for i, e in before.items()
        if (now := after.get(i)) is not e and (now is None or now.labels != e.labels)
    }
    if len(gone) > _MODEL_DELTA_LIMIT:
        return None
    fresh = [
        e
        for i, e in after.items()
        if (then := before.get(i)) is not e and (then is None or then.labels != e.labels)
    ]
    if len(fresh) > _MODEL_DELTA_LIMIT:
        return None
    return gone, fresh


def _granted(
    policies: Sequence[AccessPolicy], canonical: Mapping[str, ModelEntry], last: _Derived | None
) -> list[frozenset[str]]:
    """Each policy's models: a policy seen last time is updated by the models that changed
    since, the others are matched against an index of all models."""
    before: dict[int, frozenset[str]] = {}
    delta = None
    if last is not None and (delta := _model_delta(last.canonical, canonical)) is not None:
        before = {id(p): g for p, g in zip(last.access.policies, last.access.granted, strict=True)}
    index: _ModelIndex | None = None
    granted: list[frozenset[str]] = []
    for policy in policies:
        models = before.get(id(policy))
        if models is not None and delta is not None:
            gone, fresh = delta
            drop = gone & models
            add = {e.id for e in fresh if _grants_model(policy, e.id, e.labels)}
            if not drop <= add <= models:  # else the same set: keep the object for grants
                models = frozenset((models - drop) | add)
        else:
            index = index or _ModelIndex(list(canonical.values()))
            models = index.policy_models(policy)
        granted.append(models)
    return granted


def _grants(
    keys: Mapping[bytes, KeyEntry], access: Access, last: _Derived | None
) -> dict[Principal, frozenset[str]]:
    """Every key's models. A principal keeps last build's grant unless a policy that names
    it was added, removed or now gives other models."""
    if last is None:
        return {entry.principal: access.models(entry.principal) for entry in keys.values()}
    before = last.access
    then = {id(p): g for p, g in zip(before.policies, before.granted, strict=True)}
    now = {id(p): g for p, g in zip(access.policies, access.granted, strict=True)}
    # Both policy tuples are alive here, so no id() stands for two policies.
    touched = {
        name
        for (policies, granted, other) in (
            (access.policies, access.granted, then),
            (before.policies, before.granted, now),
        )
        for p, g in zip(policies, granted, strict=True)
        if other.get(id(p)) is not g
        for name in _subjects(p)
    }
    grants: dict[Principal, frozenset[str]] = {}
    for entry in keys.values():
        principal = entry.principal
        models = last.grants.get(principal)
        if models is None or (touched and any(n in touched for n in _names(principal))):
            models = access.models(principal)
        grants[principal] = models
    return grants


class _Builder:
    def __init__(
        self, resources: Iterable[Resource], keys_from_secrets: bool, last: _Derived | None
    ) -> None:
        self.keys_from_secrets = keys_from_secrets
        self.last = last
        self.model_memos: dict[int, _ModelMemo] = {}
        self.key_memos: dict[int, _KeyMemo] = {}
        self.problems: list[str] = []
        self.capability_sets: dict[tuple[Capability, ...], frozenset[Operation]] = {}
        self.group_sets: dict[frozenset[str], frozenset[str]] = {}
        self.by_kind: dict[str, list[Resource]] = defaultdict(list)
        for resource in resources:
            self.by_kind[resource.kind].append(resource)
        self.secrets = {
            (r.metadata.namespace, r.metadata.name): r
            for r in self.by_kind["Secret"]
            if isinstance(r, Secret)
        }

    def problem(self, message: str) -> None:
        self.problems.append(message)
        log.warning("%s", message)

    def secret_value(self, owner: str, namespace: str, name: str, key: str) -> str | None:
        secret = self.secrets.get((namespace, name))
        if secret is None:
            self.problem(f"{owner}: Secret {namespace}/{name} not found")
            return None
        try:
            value = secret.value(key)
        except ValueError as exc:
            self.problem(f"{owner}: {exc}")
            return None
        if value is None:
            self.problem(f"{owner}: Secret {namespace}/{name} has no key {key!r}")
        return value

    def provider_credentials(self) -> dict[str, tuple[LLMProvider, str | None]]:
        wanted: dict[str, tuple[LLMProvider, str | None]] = {}
        for p in self.by_kind["LLMProvider"]:
            assert isinstance(p, LLMProvider)
            entra = p.spec.azure.entraID if p.spec.azure is not None else None
            # The one secret a provider needs: its API key, or its Entra ID client secret.
            ref = p.spec.apiKeySecretRef or (entra.clientSecretRef if entra is not None else None)
            owner = _owner(p)
            key = None
            if ref is not None:
                key = self.secret_value(owner, p.metadata.namespace, ref.name, ref.key)
                if key is None:
                    continue
            wanted[_qualified(p)] = (p, key)
        return wanted

    def models(self, providers: Mapping[str, Provider]) -> dict[str, ModelEntry]:
        table: dict[str, ModelEntry] = {}
        owners: dict[str, LLMModel] = {}
        resources = [m for m in self.by_kind["LLMModel"] if isinstance(m, LLMModel)]
        # The oldest claim to an id wins, so a newcomer cannot hijack a live model.
        resources.sort(key=lambda m: (_created(m), m.metadata.namespace, m.metadata.name))
        for m in resources:
            if m.spec.disabled:
                log.info("%s is disabled", _owner(m))
                continue
            model_id = m.model_id
            if (first := owners.get(model_id)) is not None:
                # Refused whole: its aliases would otherwise lead to another model's id.
                self.taken(m, model_id, first)
                continue
            owners[model_id] = m
            table[model_id] = entry = self.model_entry(m, providers)
            for alias in m.spec.aliases:
                if (first := owners.get(alias)) is not None:
                    self.taken(m, alias, first)
                    continue
                owners[alias] = m
                table[alias] = entry
        return table

    def taken(self, m: LLMModel, model_id: str, first: LLMModel) -> None:
        self.problem(f"{_owner(m)}: model id {model_id!r} is already served by {_owner(first)}")

    def model_entry(self, m: LLMModel, providers: Mapping[str, Provider]) -> ModelEntry:
        """m's entry, reused while m and the providers its backends name stay the same."""
        memo = self.last.models.get(id(m)) if self.last is not None else None
        if (
            memo is None
            or memo.resource is not m
            or any(providers.get(name) is not p for name, p in memo.providers)
        ):
            first_problem = len(self.problems)
            names = [f"{m.metadata.namespace}/{b.provider}" for b in m.spec.backends]
            used = tuple([(name, providers.get(name)) for name in names])
            entry = self.derive_model_entry(m, [provider for _, provider in used])
            memo = _ModelMemo(m, used, entry, tuple(self.problems[first_problem:]))
        else:
            for message in memo.problems:
                self.problem(message)
        self.model_memos[id(m)] = memo
        return memo.entry

    def derive_model_entry(self, m: LLMModel, providers: Sequence[Provider | None]) -> ModelEntry:
        by_priority: dict[int, list[Route]] = {}
        for i, (backend, provider) in enumerate(zip(m.spec.backends, providers, strict=True)):
            if provider is None:
                self.problem(
                    f"{_owner(m)}: spec.backends[{i}]: LLMProvider {m.metadata.namespace}/"
                    f"{backend.provider} is missing or unusable"
                )
                continue
            route = Route(provider, backend.model, backend.weight)
            by_priority.setdefault(backend.priority, []).append(route)
        if not by_priority:
            self.problem(f"{_owner(m)}: no routable backend; requests get 503")
        return ModelEntry(
            m.model_id,
            m.metadata.namespace,
            m.metadata.name,
            m.metadata.labels,
            self.operations(m.spec.capabilities),
            tuple(tuple(by_priority[p]) for p in sorted(by_priority)),
            m.spec.pricing,
            int(_created(m).timestamp()),
        )

    def operations(self, capabilities: Sequence[Capability]) -> frozenset[Operation]:
        # Models share a handful of capability lists: one frozenset each, not one per model.
        key = tuple(capabilities)
        found = self.capability_sets.get(key)
        if found is None:
            found = self.capability_sets[key] = frozenset(Operation(c.value) for c in key)
        return found

    def keys(self) -> dict[bytes, KeyEntry]:
        keys: dict[bytes, KeyEntry] = {}
        for k in self.by_kind["APIKey"]:
            assert isinstance(k, APIKey)
            entry = self.key_entry(k)
            if entry is None:
                continue
            digest = entry.digest
            if digest in keys:
                self.problem(f"{_owner(k)}: the same key is used by another APIKey; both refused")
                keys[digest] = KeyEntry(keys[digest].principal, digest, None, disabled=True)
                continue
            keys[digest] = entry
        return keys

    def key_entry(self, k: APIKey) -> KeyEntry | None:
        """The key's entry (None if refused), reused while the key and its Secret stay."""
        secret = None
        if not k.status.keyHash and self.keys_from_secrets:
            secret = self.secrets.get((k.metadata.namespace, k.spec.secretName))
        memo = self.last.keys.get(id(k)) if self.last is not None else None
        if memo is not None and memo.resource is k and memo.secret is secret:
            for message in memo.problems:
                self.problem(message)
        else:
            first_problem = len(self.problems)
            entry = None
            if (digest := self.key_digest(k)) is not None:
                expires = k.spec.expiresAt
                groups = frozenset(k.spec.groups)
                # Keys of one team share one set: memory, and hashing it is then cached.
                groups = self.group_sets.setdefault(groups, groups)
                entry = KeyEntry(
                    Principal(k.user, groups, _qualified(k)),
                    digest,
                    expires.timestamp() if expires is not None else None,
                    k.spec.disabled,
                )
            memo = _KeyMemo(k, secret, entry, tuple(self.problems[first_problem:]))
        self.key_memos[id(k)] = memo
        return memo.entry

    def key_digest(self, k: APIKey) -> bytes | None:
        # In a cluster the operator publishes only the hash; from files, the Secret holds the key.
        if k.status.keyHash:
            return bytes.fromhex(k.status.keyHash.removeprefix("sha256:"))
        if not self.keys_from_secrets:
            self.problem(
                f"{_owner(k)}: no status.keyHash yet (the operator writes it after minting the "
                "key); refused until then, since the gateway never reads API-key Secrets in a "
                "cluster"
            )
            return None
        value = self.secret_value(
            _owner(k), k.metadata.namespace, k.spec.secretName, API_KEY_SECRET_FIELD
        )
        if value is None:
            return None
        if not value.strip():
            self.problem(f"{_owner(k)}: the key in Secret {k.spec.secretName} is empty")
            return None
        return key_digest(value)


def build(
    resources: Iterable[Resource],
    pool: ProviderPool,
    generation: int,
    *,
    keys_from_secrets: bool = True,
    cache: BuildCache | None = None,
) -> tuple[Snapshot, list[Provider]]:
    """A snapshot of `resources`, and the providers it no longer uses (to retire).

    With `keys_from_secrets` false (in a cluster) API keys are known only by
    APIKey.status.keyHash, never read from their Secrets. With a `cache` (the same one
    for every build with this `pool`), what unchanged resources derive is reused from the
    last build: the snapshot is the same as without it, built faster.
    """
    last = cache.last if cache is not None else None
    if last is not None and last.keys_from_secrets != keys_from_secrets:
        last = None  # keys were derived another way
    b = _Builder(resources, keys_from_secrets, last)
    providers, left = pool.sync(b.provider_credentials())
    models = b.models(providers)
    keys = b.keys()
    policies = tuple(p for p in b.by_kind["AccessPolicy"] if isinstance(p, AccessPolicy))
    canonical = {m.id: m for key, m in models.items() if key == m.id}
    access = Access(policies, _granted(policies, canonical, last))
    grants = _grants(keys, access, last)
    snapshot = Snapshot(
        generation=generation,
        models=models,
        keys=keys,
        grants=grants,
        policies=policies,
        problems=tuple(b.problems),
        resource_counts={kind: len(items) for kind, items in b.by_kind.items()},
        access=access,
    )
    if cache is not None:
        cache.last = _Derived(
            keys_from_secrets, b.model_memos, b.key_memos, canonical, access, grants
        )
    return snapshot, left


def capability_route(entry: ModelEntry, op: Operation) -> Operation | None:
    """The upstream operation that serves `op` on this model, or None."""
    if op in entry.capabilities:
        return op
    # Legacy completions and Anthropic's Messages are chat: any chat model serves them
    # (an Anthropic backend takes Messages as they are, the pipeline translates for others).
    if op in (Operation.completions, Operation.messages) and Operation.chat in entry.capabilities:
        return Operation.chat
    return None
