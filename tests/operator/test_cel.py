"""The CRDs' CEL rules (x-kubernetes-validations), evaluated with a CEL library on good and
bad objects: the emulator does not run them, a real API server does. Every case is also
put to the gateway's pydantic models, which must agree on what is valid."""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel

from kubellm_gateway.resources import API_VERSION, ResourceError, parse_resource
from kubellm_operator.crds import KINDS, crd
from tests.support.examples import example_documents

CEL = celpy.Environment()
SCHEMAS = {k.kind: crd(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for k in KINDS}

KEY = {"name": "s", "key": "apiKey"}
ENTRA = {"tenantID": "t", "clientID": "c", "clientSecretRef": KEY}
DISCOVERY = {"subscriptionID": "s", "resourceGroup": "g", "accountName": "a"}
AZURE_URL = "https://x.openai.azure.com"
BACKEND = {"provider": "p", "model": "m"}


def violations(schema: dict[str, Any], value: Any, old: Any = None) -> list[str]:
    """Messages of the rules `value` breaks, walking the schema as the API server does.
    Rules that read oldSelf (transition rules) run only where an old value exists."""
    found = []
    for entry in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in entry["rule"]
        if transition and old is None:
            continue
        activation = {"self": json_to_cel(value)}
        if transition:
            activation["oldSelf"] = json_to_cel(old)
        result = CEL.program(CEL.compile(entry["rule"])).evaluate(activation)
        assert isinstance(result, celpy.celtypes.BoolType), (entry["rule"], result)
        if not result:
            found.append(entry["message"])
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                previous = old.get(name) if isinstance(old, dict) else None
                found += violations(child, value[name], previous)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            found += violations(schema["items"], item)
    return found


def check(kind: str, spec: dict[str, Any], old_spec: dict[str, Any] | None = None) -> list[str]:
    obj = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    old = None if old_spec is None else {**obj, "spec": old_spec}
    return violations(SCHEMAS[kind], obj, old)


def pydantic_accepts(kind: str, spec: dict[str, Any]) -> bool:
    try:
        parse_resource(
            {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
        )
    except ResourceError:
        return False
    return True


GOOD = [
    ("LLMProvider", {"type": "OpenAI"}),
    ("LLMProvider", {"type": "OpenAI", "apiKeySecretRef": KEY}),
    ("LLMProvider", {"type": "AzureOpenAI", "baseURL": AZURE_URL, "apiKeySecretRef": KEY}),
    ("LLMProvider", {"type": "AzureOpenAI", "baseURL": AZURE_URL, "azure": {"entraID": ENTRA}}),
    (
        "LLMProvider",
        {
            "type": "AzureOpenAI",
            "baseURL": AZURE_URL,
            "azure": {"entraID": ENTRA, "discovery": DISCOVERY},
        },
    ),
    ("LLMProvider", {"type": "Anthropic", "apiKeySecretRef": KEY, "anthropic": {}}),
    ("LLMProvider", {"type": "Mock", "mock": {"latency": "10ms"}}),
    ("LLMModel", {"backends": [BACKEND, BACKEND | {"weight": 3, "priority": 1}]}),
    ("AccessPolicy", {"subjects": [{"kind": "Group", "name": "g"}], "models": ["*"]}),
    ("AccessPolicy", {"subjects": [{"kind": "User", "name": "u"}], "modelSelector": {}}),
    (
        "AccessPolicy",
        {
            "subjects": [{"kind": "User", "name": "u"}],
            "modelSelector": {
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a"]},
                    {"key": "beta", "operator": "DoesNotExist"},
                ]
            },
        },
    ),
    ("APIKey", {"secretName": "k", "user": "u", "groups": ["g"]}),
]

BAD = [
    ("LLMProvider", {"type": "OpenAI", "azure": {}}, "azure is only allowed with type AzureOpenAI"),
    (
        "LLMProvider",
        {"type": "OpenAI", "anthropic": {}},
        "anthropic is only allowed with type Anthropic",
    ),
    ("LLMProvider", {"type": "OpenAI", "mock": {}}, "mock is only allowed with type Mock"),
    (
        "LLMProvider",
        {"type": "AzureOpenAI", "apiKeySecretRef": KEY},
        "baseURL is required for type AzureOpenAI",
    ),
    (
        "LLMProvider",
        {"type": "AzureOpenAI", "baseURL": AZURE_URL},
        "type AzureOpenAI needs exactly one of apiKeySecretRef or azure.entraID",
    ),
    (
        "LLMProvider",
        {
            "type": "AzureOpenAI",
            "baseURL": AZURE_URL,
            "apiKeySecretRef": KEY,
            "azure": {"entraID": ENTRA},
        },
        "type AzureOpenAI needs exactly one of apiKeySecretRef or azure.entraID",
    ),
    (
        "LLMProvider",
        {
            "type": "AzureOpenAI",
            "baseURL": AZURE_URL,
            "apiKeySecretRef": KEY,
            "azure": {"discovery": DISCOVERY},
        },
        "discovery requires entraID (Resource Manager accepts no API keys)",
    ),
    ("LLMProvider", {"type": "Anthropic"}, "apiKeySecretRef is required for type Anthropic"),
    (
        "LLMProvider",
        {"type": "Mock", "apiKeySecretRef": KEY},
        "apiKeySecretRef is not allowed with type Mock",
    ),
    (
        "LLMModel",
        {"backends": [BACKEND, BACKEND | {"weight": 0}]},
        "every backend weight must be positive",
    ),
    (
        "AccessPolicy",
        {"subjects": [{"kind": "Group", "name": "g"}]},
        "give models, modelSelector or both",
    ),
    (
        "AccessPolicy",
        {"subjects": [{"kind": "Group", "name": "g"}], "models": []},
        "give models, modelSelector or both",
    ),
    (
        "AccessPolicy",
        {
            "subjects": [{"kind": "Group", "name": "g"}],
            "modelSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]},
        },
        "values are required for In and NotIn, and must be empty otherwise",
    ),
    (
        "AccessPolicy",
        {
            "subjects": [{"kind": "Group", "name": "g"}],
            "modelSelector": {
                "matchExpressions": [{"key": "k", "operator": "Exists", "values": ["v"]}]
            },
        },
        "values are required for In and NotIn, and must be empty otherwise",
    ),
]


@pytest.mark.parametrize(("kind", "spec"), GOOD)
def test_good_objects_pass_every_rule(kind: str, spec: dict[str, Any]) -> None:
    assert check(kind, spec) == []
    assert pydantic_accepts(kind, spec)


@pytest.mark.parametrize(("kind", "spec", "expected"), BAD)
def test_bad_objects_break_exactly_the_rule_for_them(
    kind: str, spec: dict[str, Any], expected: str
) -> None:
    assert check(kind, spec) == [expected]
    assert not pydantic_accepts(kind, spec)


def test_every_rule_is_exercised_by_a_bad_example() -> None:
    rules = {entry["message"] for schema in SCHEMAS.values() for entry in _all_rules(schema)}
    assert rules == {expected for _, _, expected in BAD} | set(_TRANSITIONS)


def _all_rules(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(schema.get("x-kubernetes-validations", []))
    for child in schema.get("properties", {}).values():
        found += _all_rules(child)
    if "items" in schema:
        found += _all_rules(schema["items"])
    return found


_TRANSITIONS = [
    "type is immutable: create a new resource instead",
    "user is immutable: create a new resource instead",
    "secretName is immutable: create a new resource instead",
]


@pytest.mark.parametrize(
    ("kind", "old", "new", "expected"),
    [
        ("LLMProvider", {"type": "Mock"}, {"type": "OpenAI"}, [_TRANSITIONS[0]]),
        ("LLMProvider", {"type": "OpenAI"}, {"type": "OpenAI", "baseURL": "http://h/v1"}, []),
        ("APIKey", {"secretName": "a"}, {"secretName": "b"}, [_TRANSITIONS[2]]),
        ("APIKey", {"secretName": "a"}, {"secretName": "a", "user": "u"}, [_TRANSITIONS[1]]),
        ("APIKey", {"secretName": "a", "user": "u"}, {"secretName": "a"}, [_TRANSITIONS[1]]),
        (
            "APIKey",
            {"secretName": "a", "user": "u"},
            {"secretName": "a", "user": "v"},
            [_TRANSITIONS[1]],
        ),
        (
            "APIKey",
            {"secretName": "a", "user": "u"},
            {"secretName": "a", "user": "u", "groups": ["g"]},
            [],
        ),
    ],
)
def test_identity_fields_cannot_change(
    kind: str, old: dict[str, Any], new: dict[str, Any], expected: list[str]
) -> None:
    assert check(kind, new, old) == expected
    assert check(kind, new) == []  # creating it that way is fine


def test_the_example_manifests_pass_every_rule() -> None:
    for doc in example_documents():
        if doc["kind"] in SCHEMAS:
            assert violations(SCHEMAS[str(doc["kind"])], doc) == [], doc
