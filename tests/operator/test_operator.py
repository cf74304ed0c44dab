"""kubellm-operator end to end: kopf for real against the Kubernetes emulator, objects made
and changed over HTTP as kubectl would, conditions and Events read back the same way."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from kubellm_operator.reconciler import Reconciler
from tests.operator.conftest import (
    condition,
    events_of,
    message,
    minted_key,
    resource,
    secret,
    settle,
    wait_condition,
    wait_event,
)
from tests.support.gateway import new_key
from tests.support.kube import KubeAPI

MOCK = resource("LLMProvider", "mock", {"type": "Mock"})


def backend(provider: str, model: str = "m") -> dict[str, str]:
    return {"provider": provider, "model": model}


def openai(name: str, secret_name: str, key: str = "apiKey") -> dict[str, object]:
    spec = {
        "type": "OpenAI",
        "baseURL": "http://127.0.0.1:9/v1",
        "apiKeySecretRef": {"name": secret_name, "key": key},
    }
    return resource("LLMProvider", name, spec)


def test_a_healthy_namespace_is_ready_at_the_observed_generation(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(secret("openai-upstream", apiKey=new_key()))
    kube_api.create(openai("openai", "openai-upstream"))
    kube_api.create(MOCK)
    kube_api.create(resource("LLMModel", "gpt", {"backends": [backend("openai"), backend("mock")]}))
    kube_api.create(resource("APIKey", "ci", {"secretName": "ci-key", "groups": ["ci"]}))
    policy = {"subjects": [{"kind": "APIKey", "name": "ci"}], "models": ["*"]}
    kube_api.create(resource("AccessPolicy", "ci", policy))
    for kind, name in [
        ("LLMProvider", "openai"),
        ("LLMProvider", "mock"),
        ("LLMModel", "gpt"),
        ("APIKey", "ci"),
        ("AccessPolicy", "ci"),
    ]:
        wait_condition(kube_api, kind, name, "ResolvedRefs", "True", "ResolvedRefs")
        obj = wait_condition(kube_api, kind, name, "Ready", "True", "Ready")
        assert condition(obj, "Accepted") == ("True", "Accepted")
        generation = obj["metadata"]["generation"]
        assert obj["status"]["observedGeneration"] == generation
        assert {c["observedGeneration"] for c in obj["status"]["conditions"]} == {generation}
        assert all(c["lastTransitionTime"].endswith("Z") for c in obj["status"]["conditions"])


def test_a_spec_change_is_observed_even_when_no_condition_changes(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(MOCK)
    before = wait_condition(kube_api, "LLMProvider", "mock", "Ready", "True", "Ready")
    kube_api.patch("LLMProvider", "mock", {"spec": {"retry": {"attempts": 5}}})
    after = kube_api.wait(
        "LLMProvider", "mock", lambda o: (o or {})["status"]["observedGeneration"] == 2
    )
    assert after is not None
    assert [c["lastTransitionTime"] for c in after["status"]["conditions"]] == [
        c["lastTransitionTime"] for c in before["status"]["conditions"]
    ]
    assert {c["observedGeneration"] for c in after["status"]["conditions"]} == {2}


def test_an_invalid_spec_is_reported_with_the_gateways_own_message(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    bad = resource(
        "LLMProvider", "bad", {"type": "Mock", "apiKeySecretRef": {"name": "s", "key": "k"}}
    )
    kube_api.create(bad)
    obj = wait_condition(kube_api, "LLMProvider", "bad", "Accepted", "False", "InvalidSpec")
    assert message(obj, "Accepted") == "spec.apiKeySecretRef: not allowed with type Mock"
    assert condition(obj, "ResolvedRefs") == ("Unknown", "InvalidSpec")
    assert condition(obj, "Ready") == ("False", "InvalidSpec")

    kube_api.create(
        resource("LLMModel", "weights", {"backends": [backend("mock") | {"weight": 0}]})
    )
    obj = wait_condition(kube_api, "LLMModel", "weights", "Accepted", "False", "InvalidSpec")
    assert "spec.backends[0].weight" in message(obj, "Accepted")

    # Fixing the spec is a new generation, and the verdict follows it.
    kube_api.patch("LLMProvider", "bad", {"spec": {"apiKeySecretRef": None}})
    obj = wait_condition(kube_api, "LLMProvider", "bad", "Ready", "True", "Ready")
    assert obj["metadata"]["generation"] == 2
    assert obj["status"]["observedGeneration"] == 2


def test_a_secret_created_after_its_provider_makes_provider_and_model_ready(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(openai("openai", "late", key="token"))
    kube_api.create(resource("LLMModel", "gpt", {"backends": [backend("openai")]}))
    obj = wait_condition(
        kube_api, "LLMProvider", "openai", "ResolvedRefs", "False", "SecretNotFound"
    )
    assert message(obj, "ResolvedRefs") == "spec.apiKeySecretRef: Secret default/late not found"
    wait_condition(kube_api, "LLMModel", "gpt", "Ready", "False", "ProviderNotReady")

    kube_api.create(secret("late", other=new_key()))
    obj = wait_condition(kube_api, "LLMProvider", "openai", "Ready", "False", "SecretKeyMissing")
    assert message(obj, "Ready") == "spec.apiKeySecretRef: Secret default/late has no key 'token'"

    kube_api.patch("Secret", "late", {"stringData": {"token": new_key()}})
    wait_condition(kube_api, "LLMProvider", "openai", "Ready", "True", "Ready")
    wait_condition(kube_api, "LLMModel", "gpt", "Ready", "True", "Ready")


def test_deleting_a_provider_or_its_secret_reaches_the_models(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(secret("upstream", apiKey=new_key()))
    kube_api.create(openai("openai", "upstream"))
    kube_api.create(MOCK)
    kube_api.create(
        resource("LLMModel", "both", {"backends": [backend("openai"), backend("mock")]})
    )
    wait_condition(kube_api, "LLMModel", "both", "Ready", "True", "Ready")

    kube_api.delete("Secret", "upstream")
    obj = wait_condition(kube_api, "LLMModel", "both", "ResolvedRefs", "False", "ProviderNotReady")
    assert condition(obj, "Ready") == ("True", "Ready")  # the Mock backend still serves
    assert message(obj, "Ready").startswith("1 of 2 backends usable")

    kube_api.delete("LLMProvider", "mock")
    obj = wait_condition(kube_api, "LLMModel", "both", "Ready", "False", "ProviderNotFound")
    assert message(obj, "ResolvedRefs") == "LLMProvider not found in default: mock"


def test_the_newer_of_two_models_with_one_id_is_refused_until_the_older_goes(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(MOCK)
    # Same second of creation is likely: the tie goes to namespace/name, as in the gateway.
    kube_api.create(
        resource("LLMModel", "a-first", {"model": "gpt-4o", "backends": [backend("mock")]})
    )
    kube_api.create(
        resource("LLMModel", "b-second", {"model": "gpt-4o", "backends": [backend("mock")]})
    )
    obj = wait_condition(kube_api, "LLMModel", "b-second", "Accepted", "False", "DuplicateModel")
    assert "already served by LLMModel default/a-first" in message(obj, "Accepted")
    assert condition(obj, "Ready") == ("False", "DuplicateModel")
    wait_condition(kube_api, "LLMModel", "a-first", "Ready", "True", "Ready")

    # A model refused for its id claims none of its aliases either, as in the gateway.
    spec = {"model": "gpt-4o", "aliases": ["shared"], "backends": [backend("mock")]}
    kube_api.patch("LLMModel", "b-second", {"spec": spec})
    spec = {"model": "other", "aliases": ["shared"], "backends": [backend("mock")]}
    kube_api.create(resource("LLMModel", "c-third", spec))
    wait_condition(kube_api, "LLMModel", "c-third", "Accepted", "True", "Accepted")

    kube_api.delete("LLMModel", "a-first")
    wait_condition(kube_api, "LLMModel", "b-second", "Ready", "True", "Ready")
    wait_condition(kube_api, "LLMModel", "c-third", "Accepted", "True", "DuplicateAlias")


def test_a_taken_alias_is_reported_and_freed_when_its_owner_changes_id(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(MOCK)
    kube_api.create(resource("LLMModel", "a", {"model": "small", "backends": [backend("mock")]}))
    spec = {"model": "tiny", "aliases": ["small"], "backends": [backend("mock")]}
    kube_api.create(resource("LLMModel", "b", spec))
    obj = wait_condition(kube_api, "LLMModel", "b", "Accepted", "True", "DuplicateAlias")
    assert "'small' (LLMModel default/a)" in message(obj, "Accepted")

    # Model a no longer claims "small": b, which did not change, is re-evaluated.
    kube_api.patch("LLMModel", "a", {"spec": {"model": "renamed"}})
    wait_condition(kube_api, "LLMModel", "b", "Accepted", "True", "Accepted")


def test_events_are_posted_once_per_transition(operator: Reconciler, kube_api: KubeAPI) -> None:
    kube_api.create(openai("openai", "upstream"))
    wait_condition(kube_api, "LLMProvider", "openai", "Ready", "False", "SecretNotFound")
    kube_api.create(secret("upstream", apiKey=new_key()))
    wait_condition(kube_api, "LLMProvider", "openai", "Ready", "True", "Ready")
    kube_api.patch("LLMProvider", "openai", {"metadata": {"labels": {"team": "a"}}})
    settle()
    assert events_of(kube_api, "openai") == [
        (
            "Warning",
            "SecretNotFound",
            "Ready is False: spec.apiKeySecretRef: Secret default/upstream not found",
        ),
        ("Normal", "ResolvedRefs", "ResolvedRefs is True: every referenced Secret and key exists"),
        ("Normal", "Ready", "Ready is True: ready to serve"),
    ]
    event = next(e for e in kube_api.list("Event") if e["involvedObject"]["name"] == "openai")
    assert event["involvedObject"]["kind"] == "LLMProvider"
    provider = kube_api.get("LLMProvider", "openai")
    assert provider is not None
    assert event["involvedObject"]["uid"] == provider["metadata"]["uid"]


# --- API keys -------------------------------------------------------------------------------


def test_a_key_is_minted_into_an_owned_secret_and_only_its_hash_is_in_status(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(resource("APIKey", "ci", {"secretName": "ci-key"}))
    obj = wait_condition(kube_api, "APIKey", "ci", "Ready", "True", "Ready")
    key = minted_key(kube_api, "ci-key")
    assert key.startswith("sk-kl-") and len(key) == len("sk-kl-") + 43  # 32 bytes, urlsafe
    assert obj["status"]["keyHash"] == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    assert obj["status"]["keyPrefix"] == key[:10]

    owned = kube_api.get("Secret", "ci-key")
    assert owned is not None
    assert owned["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kubellm.io/v1alpha1",
            "kind": "APIKey",
            "name": "ci",
            "uid": obj["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert owned["metadata"]["labels"] == {"kubellm.io/apikey": "ci"}
    settle()
    assert minted_key(kube_api, "ci-key") == key  # minted once
    events = events_of(kube_api, "ci")
    assert events[0][:2] == ("Normal", "KeyMinted")
    assert key[:10] in events[0][2]
    everything = str(kube_api.list("Event")) + str(kube_api.get("APIKey", "ci"))
    assert key not in everything and key[10:20] not in everything


def test_rotation_by_annotation_mints_once_per_value(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(resource("APIKey", "ci", {"secretName": "ci-key"}))
    wait_condition(kube_api, "APIKey", "ci", "Ready", "True", "Ready")
    first = minted_key(kube_api, "ci-key")

    kube_api.patch("APIKey", "ci", {"metadata": {"annotations": {"kubellm.io/rotate": "r1"}}})
    obj = kube_api.wait(
        "APIKey", "ci", lambda o: (o or {}).get("status", {}).get("rotation") == "r1"
    )
    assert obj is not None
    second = minted_key(kube_api, "ci-key")
    assert second != first
    assert obj["status"]["keyHash"] == "sha256:" + hashlib.sha256(second.encode()).hexdigest()
    assert condition(obj, "Ready") == ("True", "Ready")

    kube_api.patch("APIKey", "ci", {"metadata": {"labels": {"unrelated": "change"}}})
    settle()
    assert minted_key(kube_api, "ci-key") == second
    assert [e[1] for e in events_of(kube_api, "ci")].count("KeyRotated") == 1


def test_a_deleted_key_secret_is_replaced_with_a_new_key(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(resource("APIKey", "ci", {"secretName": "ci-key"}))
    wait_condition(kube_api, "APIKey", "ci", "Ready", "True", "Ready")
    first = minted_key(kube_api, "ci-key")

    kube_api.delete("Secret", "ci-key")
    kube_api.wait("Secret", "ci-key", lambda s: s is not None)
    obj = kube_api.wait("APIKey", "ci", lambda o: (o or {})["status"]["keyPrefix"] != first[:10])
    assert obj is not None
    second = minted_key(kube_api, "ci-key")
    assert second != first
    assert obj["status"]["keyHash"] == "sha256:" + hashlib.sha256(second.encode()).hexdigest()
    wait_condition(kube_api, "APIKey", "ci", "Ready", "True", "Ready")
    assert second[:10] in wait_event(kube_api, "ci", "KeyRotated")[2]


def test_a_key_expires_on_time_with_nothing_else_happening(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    spec = {"secretName": "short-key", "expiresAt": expires.isoformat()}
    kube_api.create(resource("APIKey", "short", spec))
    wait_condition(kube_api, "APIKey", "short", "Ready", "True", "Ready")
    obj = wait_condition(kube_api, "APIKey", "short", "Ready", "False", "Expired", timeout=6)
    flipped = datetime.fromisoformat(
        next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")[
            "lastTransitionTime"
        ].replace("Z", "+00:00")
    )
    assert expires - timedelta(seconds=1) <= flipped <= expires + timedelta(seconds=2)
    # Events are posted from a queue, a moment after the status write.
    event = wait_event(kube_api, "short", "Expired")
    assert event == ("Warning", "Expired", f"Ready is False: expired at {expires.isoformat()}")


def test_an_existing_secret_of_someone_else_is_never_overwritten(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    theirs = new_key()
    kube_api.create(secret("taken", apiKey=theirs))
    kube_api.create(resource("APIKey", "ci", {"secretName": "taken"}))
    obj = wait_condition(kube_api, "APIKey", "ci", "Ready", "False", "SecretConflict")
    assert "not owned by this APIKey" in message(obj, "ResolvedRefs")
    settle()
    assert minted_key(kube_api, "taken") == theirs
    assert "keyHash" not in obj["status"]


def test_a_disabled_key_is_not_ready(operator: Reconciler, kube_api: KubeAPI) -> None:
    kube_api.create(resource("APIKey", "off", {"secretName": "off-key", "disabled": True}))
    obj = wait_condition(kube_api, "APIKey", "off", "Ready", "False", "Disabled")
    assert condition(obj, "ResolvedRefs") == ("True", "ResolvedRefs")  # minted all the same


def test_a_policy_naming_a_missing_key_resolves_when_the_key_appears(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    policy = {"subjects": [{"kind": "APIKey", "name": "later"}], "models": ["*"]}
    kube_api.create(resource("AccessPolicy", "p", policy))
    obj = wait_condition(kube_api, "AccessPolicy", "p", "Ready", "False", "APIKeyNotFound")
    assert message(obj, "ResolvedRefs") == "APIKey not found in default: later"
    kube_api.create(resource("APIKey", "later", {"secretName": "later-key"}))
    wait_condition(kube_api, "AccessPolicy", "p", "Ready", "True", "Ready")


def test_a_burst_of_changes_posts_each_transition_once(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(openai("openai", "upstream"))
    for i in range(5):
        kube_api.create(resource("LLMModel", f"m{i}", {"backends": [backend("openai")]}))
    wait_condition(kube_api, "LLMModel", "m4", "Ready", "False", "ProviderNotReady")
    # Each change to the Secret re-evaluates the provider, each provider change its models,
    # faster than their own status writes come back through the watch.
    kube_api.create(secret("upstream", apiKey=new_key()))
    for i in range(5):
        kube_api.patch("Secret", "upstream", {"metadata": {"labels": {"n": str(i)}}})
    for i in range(5):
        wait_condition(kube_api, "LLMModel", f"m{i}", "Ready", "True", "Ready")
    settle()
    assert [e[1] for e in events_of(kube_api, "openai")] == [
        "SecretNotFound",
        "ResolvedRefs",
        "Ready",
    ]
    for i in range(5):
        assert [e[1] for e in events_of(kube_api, f"m{i}")] == [
            "ProviderNotReady",
            "ResolvedRefs",
            "Ready",
        ]


def test_keys_are_minted_once_while_their_apikeys_change(
    operator: Reconciler, kube_api: KubeAPI
) -> None:
    names = [f"k{i}" for i in range(8)]
    for name in names:
        kube_api.create(resource("APIKey", name, {"secretName": f"{name}-key"}))
    for round_ in range(3):
        for name in names:
            kube_api.patch("APIKey", name, {"metadata": {"labels": {"round": str(round_)}}})
    for name in names:
        wait_condition(kube_api, "APIKey", name, "Ready", "True", "Ready")
    settle()
    for name in names:
        assert [e[1] for e in events_of(kube_api, name)] == ["KeyMinted", "Ready"], name
