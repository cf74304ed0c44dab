"""What each kind's conditions say, from the object and what the operator knows of the rest.

Pure functions over plain data: `World` is a read-only view of the operator's indices.
Validation is the gateway's own (resources.parse_resource), so an object the operator calls
Accepted is one every gateway pod can load, with the same message when it cannot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubellm_gateway.resources import (
    AccessPolicy,
    APIKey,
    LLMModel,
    LLMProvider,
    Resource,
    ResourceError,
    SecretKeyRef,
    parse_resource,
)

from . import apikeys
from .apikeys import SecretInfo
from .conditions import (
    ACCEPTED,
    API_KEY_NOT_FOUND,
    CREDENTIALS_REJECTED,
    DISABLED,
    DISCOVERED,
    DISCOVERY_FAILED,
    DUPLICATE_ALIAS,
    DUPLICATE_MODEL,
    EXPIRED,
    INVALID_SPEC,
    PENDING,
    PROVIDER_NOT_FOUND,
    PROVIDER_NOT_READY,
    READY,
    RESOLVED_REFS,
    SECRET_CONFLICT,
    SECRET_KEY_MISSING,
    SECRET_NOT_FOUND,
    Verdict,
    fails,
    holds,
    unknown,
)

Key = tuple[str, str]  # namespace, name
Body = Mapping[str, Any]
Verdicts = dict[str, Verdict]


@dataclass(frozen=True)
class World:
    """Everything the operator has listed, by kind and (namespace, name)."""

    providers: Mapping[Key, Body]
    models: Mapping[Key, Body]
    policies: Mapping[Key, Body]
    apikeys: Mapping[Key, Body]
    secrets: Mapping[Key, SecretInfo]
    claims: Mapping[str, Iterable[Key]]  # model id -> the LLMModels naming it
    # The latest Azure deployment discovery outcome per LLMProvider, since the operator started.
    discovery: Mapping[Key, Verdict] = field(default_factory=dict)
    # Parsed LLMModels by resourceVersion, kept by the caller across evaluations.
    parsed: dict[Key, tuple[str | None, LLMModel | None]] = field(default_factory=dict)
    # Conclusions valid for this picture only.
    memo: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> Mapping[Key, Body]:
        return {
            "LLMProvider": self.providers,
            "LLMModel": self.models,
            "AccessPolicy": self.policies,
            "APIKey": self.apikeys,
        }[kind]


def key_of(body: Body) -> Key:
    meta = body["metadata"]
    return meta.get("namespace") or "default", meta["name"]


def condition_status(body: Body, type_: str) -> str | None:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            status: str | None = condition.get("status")
            return status
    return None


def _parse(body: Body) -> Resource | Verdict:
    try:
        resource = parse_resource(body)
    except ResourceError as exc:
        return fails(INVALID_SPEC, exc.reason)
    assert resource is not None
    return resource


def _invalid(verdict: Verdict) -> Verdicts:
    waiting = unknown(INVALID_SPEC, "not checked: the spec is invalid")
    return {ACCEPTED: verdict, RESOLVED_REFS: waiting, READY: fails(INVALID_SPEC, verdict.message)}


def _summary(accepted: Verdict, resolved: Verdict, ready: Verdict | None = None) -> Verdicts:
    if ready is None:
        if not accepted.ok:
            ready = fails(accepted.reason, accepted.message)
        elif not resolved.ok:
            ready = fails(resolved.reason, resolved.message)
        else:
            ready = holds(READY, "ready to serve")
    return {ACCEPTED: accepted, RESOLVED_REFS: resolved, READY: ready}


def _valid() -> Verdict:
    return holds(ACCEPTED, "the spec is valid")


def _secret_ref(
    world: World, namespace: str, ref: SecretKeyRef, field: str
) -> tuple[str, str] | None:
    secret = world.secrets.get((namespace, ref.name))
    if secret is None:
        return SECRET_NOT_FOUND, f"{field}: Secret {namespace}/{ref.name} not found"
    if ref.key not in secret.keys:
        return SECRET_KEY_MISSING, f"{field}: Secret {namespace}/{ref.name} has no key {ref.key!r}"
    return None


# --- LLMProvider ----------------------------------------------------------------------------


def provider_secret_refs(provider: LLMProvider) -> list[tuple[SecretKeyRef, str]]:
    refs = []
    if provider.spec.apiKeySecretRef is not None:
        refs.append((provider.spec.apiKeySecretRef, "spec.apiKeySecretRef"))
    azure = provider.spec.azure
    if azure is not None and azure.entraID is not None:
        refs.append((azure.entraID.clientSecretRef, "spec.azure.entraID.clientSecretRef"))
    return refs


def evaluate_provider(body: Body, world: World) -> Verdicts:
    parsed = _parse(body)
    if isinstance(parsed, Verdict):
        return _invalid(parsed)
    assert isinstance(parsed, LLMProvider)
    namespace = parsed.metadata.namespace
    problems = [
        problem
        for ref, field in provider_secret_refs(parsed)
        if (problem := _secret_ref(world, namespace, ref, field)) is not None
    ]
    if problems:
        resolved = fails(problems[0][0], "; ".join(message for _, message in problems))
    else:
        resolved = holds(RESOLVED_REFS, "every referenced Secret and key exists")
    verdicts = _summary(_valid(), resolved)
    if parsed.spec.azure is not None and parsed.spec.azure.discovery is not None:
        discovered = _discovered(body, world, resolved)
        verdicts[DISCOVERED] = discovered
        if discovered.reason == CREDENTIALS_REJECTED:
            # The same credentials sign the gateway's inference requests: those fail too.
            verdicts[READY] = fails(CREDENTIALS_REJECTED, discovered.message)
    return verdicts


def _discovered(body: Body, world: World, resolved: Verdict) -> Verdict:
    if not resolved.ok:
        return unknown(resolved.reason, f"deployments not listed: {resolved.message}")
    outcome = world.discovery.get(key_of(body))
    if outcome is not None:
        return outcome
    # Not listed since the operator started: the verdict on record stands until the first
    # listing, so that a restart does not flap the conditions (and post Events) of every
    # provider.
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == DISCOVERED and condition.get("reason") in (
            DISCOVERED,
            CREDENTIALS_REJECTED,
            DISCOVERY_FAILED,
        ):
            return Verdict(condition["status"], condition["reason"], condition.get("message", ""))
    return unknown(PENDING, "the first listing of deployments is under way")


# --- LLMModel -------------------------------------------------------------------------------


def model_ids(body: Body) -> set[str]:
    """The ids a model's manifest claims (its own and its aliases), valid or not."""
    spec = body.get("spec") or {}
    aliases = spec.get("aliases")
    names = aliases if isinstance(aliases, list) else []
    return {
        spec.get("model") or body["metadata"]["name"],
        *(a for a in names if isinstance(a, str)),
    }


def _serving_model(key: Key, world: World) -> LLMModel | None:
    """The model as the gateway takes it: valid and enabled, or None (parsed once per version)."""
    body = world.models.get(key)
    if body is None:
        return None
    version = body["metadata"].get("resourceVersion")
    cached = world.parsed.get(key)
    if cached is None or cached[0] != version:
        parsed = _parse(body)
        model = parsed if isinstance(parsed, LLMModel) and not parsed.spec.disabled else None
        cached = world.parsed[key] = (version, model)
    return cached[1]


def _age(model: LLMModel, key: Key) -> tuple[datetime, Key]:
    created = model.metadata.creationTimestamp or datetime.min.replace(tzinfo=UTC)
    return (created if created.tzinfo else created.replace(tzinfo=UTC)), key


def id_owner(model_id: str, world: World) -> Key | None:
    """The model serving `model_id`, by the gateway's rule: models take their ids oldest
    first; one whose own id is taken is refused whole; a taken alias is skipped. Only the
    models claiming the id are looked at (and, for an alias, the claims to their own id)."""
    owners = world.memo.setdefault("owners", {})
    if model_id not in owners:
        candidates = [
            (_age(model, k), model)
            for k in world.claims.get(model_id, ())
            if (model := _serving_model(k, world)) is not None
        ]
        owners[model_id] = None
        for (_, k), model in sorted(candidates, key=lambda c: c[0]):
            # Its own id: nobody older took it, so it is served. An alias: served if the
            # model itself is (claims to its own id come only from models at least as old).
            if model.model_id == model_id or id_owner(model.model_id, world) == k:
                owners[model_id] = k
                break
    owner: Key | None = owners[model_id]
    return owner


def _accept_model(model: LLMModel, key: Key, world: World) -> Verdict:
    owner = id_owner(model.model_id, world)
    if owner is not None and owner != key:
        return fails(
            DUPLICATE_MODEL,
            f"model id {model.model_id!r} is already served by LLMModel {owner[0]}/{owner[1]} "
            "(the older claim wins)",
        )
    taken = [
        f"{alias!r} (LLMModel {owner[0]}/{owner[1]})"
        for alias in model.spec.aliases
        if (owner := id_owner(alias, world)) is not None and owner != key
    ]
    if taken:
        # Still accepted (the gateway serves its other ids), but say what it does not get.
        skipped = ", ".join(taken)
        return Verdict("True", DUPLICATE_ALIAS, f"valid; aliases served by older models: {skipped}")
    return _valid()


def evaluate_model(body: Body, world: World) -> Verdicts:
    parsed = _parse(body)
    if isinstance(parsed, Verdict):
        return _invalid(parsed)
    assert isinstance(parsed, LLMModel)
    key = key_of(body)
    # A disabled model claims no id, so it cannot be a duplicate.
    accepted = _valid() if parsed.spec.disabled else _accept_model(parsed, key, world)
    missing, not_ready, usable = [], [], 0
    for backend in parsed.spec.backends:
        provider = world.providers.get((key[0], backend.provider))
        if provider is None:
            missing.append(backend.provider)
        elif condition_status(provider, READY) != "True":
            not_ready.append(backend.provider)
        else:
            usable += 1
    total = len(parsed.spec.backends)
    if missing:
        resolved = fails(
            PROVIDER_NOT_FOUND,
            f"LLMProvider not found in {key[0]}: {', '.join(sorted(set(missing)))}",
        )
    elif not_ready:
        resolved = fails(
            PROVIDER_NOT_READY, f"LLMProvider not ready: {', '.join(sorted(set(not_ready)))}"
        )
    else:
        resolved = holds(RESOLVED_REFS, "every backend's provider is ready")
    if parsed.spec.disabled:
        ready = fails(DISABLED, "spec.disabled is true")
    elif not accepted.ok:
        ready = fails(accepted.reason, accepted.message)
    elif usable == 0:
        ready = fails(resolved.reason, f"no usable backend: {resolved.message}")
    elif usable < total:
        ready = holds(READY, f"{usable} of {total} backends usable: {resolved.message}")
    else:
        ready = holds(READY, f"all {total} backends usable")
    return _summary(accepted, resolved, ready)


# --- AccessPolicy ---------------------------------------------------------------------------


def evaluate_policy(body: Body, world: World) -> Verdicts:
    parsed = _parse(body)
    if isinstance(parsed, Verdict):
        return _invalid(parsed)
    assert isinstance(parsed, AccessPolicy)
    namespace = parsed.metadata.namespace
    missing = sorted(
        {
            s.name
            for s in parsed.spec.subjects
            if s.kind == "APIKey" and (namespace, s.name) not in world.apikeys
        }
    )
    if missing:
        resolved = fails(
            API_KEY_NOT_FOUND, f"APIKey not found in {namespace}: {', '.join(missing)}"
        )
    else:
        resolved = holds(RESOLVED_REFS, "every APIKey subject exists")
    return _summary(_valid(), resolved)


# --- APIKey ---------------------------------------------------------------------------------


def evaluate_apikey(body: Body, world: World, now: datetime) -> Verdicts:
    parsed = _parse(body)
    if isinstance(parsed, Verdict):
        return _invalid(parsed)
    assert isinstance(parsed, APIKey)
    key = key_of(body)
    secret = world.secrets.get((key[0], parsed.spec.secretName))
    uid = body["metadata"].get("uid", "")
    status = body.get("status") or {}
    where = f"Secret {key[0]}/{parsed.spec.secretName}"
    if secret is None:
        resolved = fails(SECRET_NOT_FOUND, f"{where} not found; a key is being minted")
    elif uid not in secret.owner_uids:
        resolved = fails(
            SECRET_CONFLICT, f"{where} exists and is not owned by this APIKey: not overwritten"
        )
    elif secret.api_key_hash is None or secret.api_key_hash != status.get("keyHash"):
        resolved = fails(
            SECRET_KEY_MISSING,
            f"{where} does not hold the key on record; annotate the APIKey "
            f"{apikeys.ROTATE_ANNOTATION}=<any new value> for a new one",
        )
    else:
        resolved = holds(RESOLVED_REFS, f"the key is in {where}")
    expires = parsed.spec.expiresAt
    if parsed.spec.disabled:
        ready = fails(DISABLED, "spec.disabled is true")
    elif expires is not None and expires <= now:
        ready = fails(EXPIRED, f"expired at {expires.isoformat()}")
    elif not resolved.ok:
        ready = fails(resolved.reason, resolved.message)
    else:
        ready = holds(
            READY, f"usable as {parsed.user}" + (f" until {expires.isoformat()}" if expires else "")
        )
    return _summary(_valid(), resolved, ready)


def evaluate(kind: str, body: Body, world: World, now: datetime) -> Verdicts:
    if kind == "LLMProvider":
        return evaluate_provider(body, world)
    if kind == "LLMModel":
        return evaluate_model(body, world)
    if kind == "AccessPolicy":
        return evaluate_policy(body, world)
    return evaluate_apikey(body, world, now)


# --- who depends on whom --------------------------------------------------------------------


def dependents(kind: str, key: Key, world: World, ids: Iterable[str] = ()) -> list[tuple[str, Key]]:
    """Objects whose conditions may change when (kind, key) changes or goes away.

    `ids` are the model ids a changed LLMModel claimed before and after the change."""
    namespace, name = key
    found: list[tuple[str, Key]] = []
    if kind == "Secret":
        for k, body in world.providers.items():
            spec = body.get("spec") or {}
            refs = [spec.get("apiKeySecretRef") or {}]
            refs.append(
                ((spec.get("azure") or {}).get("entraID") or {}).get("clientSecretRef") or {}
            )
            if k[0] == namespace and any(r.get("name") == name for r in refs):
                found.append(("LLMProvider", k))
        for k, body in world.apikeys.items():
            if k[0] == namespace and (body.get("spec") or {}).get("secretName") == name:
                found.append(("APIKey", k))
    elif kind == "LLMProvider":
        for k, body in world.models.items():
            backends = (body.get("spec") or {}).get("backends") or []
            if k[0] == namespace and any(
                isinstance(b, Mapping) and b.get("provider") == name for b in backends
            ):
                found.append(("LLMModel", k))
    elif kind == "LLMModel":
        claimants = {k for model_id in ids for k in world.claims.get(model_id, ())}
        found += [("LLMModel", k) for k in sorted(claimants - {key})]
    elif kind == "APIKey":
        for k, body in world.policies.items():
            subjects = (body.get("spec") or {}).get("subjects") or []
            if k[0] == namespace and any(
                isinstance(s, Mapping) and s.get("kind") == "APIKey" and s.get("name") == name
                for s in subjects
            ):
                found.append(("AccessPolicy", k))
    return found


def mint_reason(body: Body, world: World) -> str | None:
    """Why this APIKey needs a new key now, or None."""
    secret_name = (body.get("spec") or {}).get("secretName")
    if not isinstance(secret_name, str):
        return None
    return apikeys.why_mint(body, world.secrets.get((key_of(body)[0], secret_name)))
