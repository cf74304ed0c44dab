"""The resource model: parsing, defaults, validation rules and their error messages."""

import base64
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest
from pydantic import ValidationError

from kubellm_gateway.resources import (
    API_VERSION,
    KINDS,
    AccessPolicy,
    APIKey,
    Capability,
    LabelSelector,
    LLMModel,
    LLMProvider,
    ProviderType,
    ResourceError,
    Secret,
    Timeouts,
    parse_duration,
    parse_resource,
    resource_key,
)

KEY = {"name": "openai", "key": "apiKey"}
ENTRA = {"tenantID": "t", "clientID": "c", "clientSecretRef": {"name": "entra", "key": "secret"}}
DISCOVERY = {"subscriptionID": "s", "resourceGroup": "rg", "accountName": "acct"}
AZURE_URL = "https://acct.openai.azure.com"
BACKEND = {"provider": "openai", "model": "gpt-4o"}


def obj(kind: str, spec: dict[str, Any], name: str = "x", **top: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
        **top,
    }


def secret(name: str = "s", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, **fields}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def reason_of(doc: dict[str, Any]) -> list[str]:
    """The failing clauses, after checking the message names the resource."""
    with pytest.raises(ResourceError) as caught:
        parse_resource(doc)
    err = caught.value
    assert str(err) == f"{err.kind} {err.namespace}/{err.name}: {err.reason}"
    assert (err.kind, err.name) == (doc["kind"], doc["metadata"].get("name", "?"))
    return err.reason.split("; ")


def assert_clause(clauses: list[str], expected: str) -> None:
    assert any(c.startswith(expected) for c in clauses), clauses


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5),
        ("10m", 600),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1m30s500ms", 90.5),
        (" 2m ", 120),
        ("0", 0),
        ("30", 30),
        (7, 7),
        (0.25, 0.25),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    "value", ["", "s", "5x", "5 s", "1.2.3s", "1h-30m", "-5s", "-1", -1, float("inf"), "nan", True]
)
def test_parse_duration_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .*"):
        parse_duration(value)


def test_duration_fields_parse_and_keep_constraints() -> None:
    assert Timeouts(connect="250ms", idle=2).connect == 0.25
    with pytest.raises(ValidationError, match="greater than 0"):
        Timeouts(connect=0)


def test_duration_schema_is_int_or_string_with_readable_defaults() -> None:
    interval = LLMProvider.model_json_schema()["$defs"]["AzureDiscovery"]["properties"]["interval"]
    assert interval["x-kubernetes-int-or-string"] is True
    assert interval["default"] == "10m"


# --- defaults -------------------------------------------------------------------------------


def test_provider_defaults() -> None:
    p = parse_resource(obj("LLMProvider", {"type": "OpenAI"}))
    assert isinstance(p, LLMProvider)
    assert p.metadata.namespace == "default"
    assert p.metadata.labels == {}
    assert p.spec.base_url == "https://api.openai.com/v1"
    assert p.spec.apiKeySecretRef is None
    assert (p.spec.timeouts.connect, p.spec.timeouts.firstByte, p.spec.timeouts.idle) == (
        5,
        120,
        60,
    )
    assert (p.spec.retry.attempts, p.spec.retry.initialBackoff, p.spec.retry.maxBackoff) == (
        2,
        0.25,
        10,
    )
    assert p.status.conditions == []
    assert p.status.discoveredDeployments == []


@pytest.mark.parametrize(
    ("type_", "extra", "base_url"),
    [
        ("Anthropic", {"apiKeySecretRef": KEY}, "https://api.anthropic.com"),
        ("Mock", {}, ""),
        ("AzureOpenAI", {"baseURL": AZURE_URL + "/", "apiKeySecretRef": KEY}, AZURE_URL),
        ("OpenAI", {"baseURL": "http://vllm.ml.svc:8000/v1/"}, "http://vllm.ml.svc:8000/v1"),
    ],
)
def test_provider_base_url(type_: str, extra: dict[str, Any], base_url: str) -> None:
    p = parse_resource(obj("LLMProvider", {"type": type_, **extra}))
    assert isinstance(p, LLMProvider)
    assert p.spec.type is ProviderType(type_)
    assert p.spec.base_url == base_url


def test_provider_settings_defaults() -> None:
    azure = parse_resource(
        obj(
            "LLMProvider",
            {
                "type": "AzureOpenAI",
                "baseURL": AZURE_URL,
                "azure": {"entraID": ENTRA, "discovery": DISCOVERY},
            },
        )
    )
    assert isinstance(azure, LLMProvider) and azure.spec.azure
    assert azure.spec.azure.apiVersion == "2024-10-21"
    assert azure.spec.azure.entraID and azure.spec.azure.discovery
    assert azure.spec.azure.entraID.authorityHost == "https://login.microsoftonline.com"
    discovery = azure.spec.azure.discovery
    assert (discovery.interval, discovery.createModels) == (600, False)
    assert discovery.armEndpoint == "https://management.azure.com"

    anthropic = parse_resource(
        obj("LLMProvider", {"type": "Anthropic", "apiKeySecretRef": KEY, "anthropic": {}})
    )
    assert isinstance(anthropic, LLMProvider) and anthropic.spec.anthropic
    assert anthropic.spec.anthropic.version == "2023-06-01"
    assert anthropic.spec.anthropic.defaultMaxTokens == 4096

    mock = parse_resource(obj("LLMProvider", {"type": "Mock", "mock": {}}))
    assert isinstance(mock, LLMProvider) and mock.spec.mock
    assert (mock.spec.mock.latency, mock.spec.mock.tokensPerSecond) == (0, 0)
    assert mock.spec.mock.text is None


def test_model_defaults() -> None:
    m = parse_resource(obj("LLMModel", {"backends": [BACKEND]}, name="gpt-4o"))
    assert isinstance(m, LLMModel)
    assert m.model_id == "gpt-4o"
    assert m.spec.aliases == []
    assert m.spec.capabilities == [Capability.chat]
    assert (m.spec.backends[0].weight, m.spec.backends[0].priority) == (1, 0)
    assert m.spec.pricing is None
    assert m.spec.disabled is False
    assert m.status.observedGeneration is None


def test_model_id_from_spec() -> None:
    spec = {
        "model": "meta-llama/Llama-3.1-8B:instruct",
        "aliases": ["llama", "x" * 256],
        "capabilities": ["chat", "completions", "embeddings"],
        "backends": [BACKEND, {**BACKEND, "weight": 1000, "priority": 100}],
        "pricing": {"inputPerMillion": 2.5},
    }
    m = parse_resource(obj("LLMModel", spec, name="llama"))
    assert isinstance(m, LLMModel) and m.spec.pricing
    assert m.model_id == "meta-llama/Llama-3.1-8B:instruct"
    assert m.spec.pricing.outputPerMillion == 0


def test_access_policy_defaults() -> None:
    p = parse_resource(
        obj("AccessPolicy", {"subjects": [{"kind": "User", "name": "alice"}], "models": ["*"]})
    )
    assert isinstance(p, AccessPolicy)
    assert (p.spec.modelSelector, p.spec.limits) == (None, None)


def test_api_key_defaults_and_user() -> None:
    k = parse_resource(obj("APIKey", {"secretName": "ci-bot-key"}, name="ci-bot"))
    assert isinstance(k, APIKey)
    assert k.user == "ci-bot"
    assert (k.spec.groups, k.spec.expiresAt, k.spec.disabled) == ([], None, False)
    assert (k.status.keyHash, k.status.keyPrefix) == (None, None)

    k = parse_resource(
        obj(
            "APIKey",
            {"user": "robot", "secretName": "k", "expiresAt": "2027-01-01T00:00:00Z"},
            status={"keyHash": "sha256:" + "ab" * 32, "keyPrefix": "sk-kl-AbC1"},
        )
    )
    assert isinstance(k, APIKey)
    assert k.user == "robot"
    assert k.spec.expiresAt == datetime(2027, 1, 1, tzinfo=UTC)


def test_secret_defaults() -> None:
    s = parse_resource(secret())
    assert isinstance(s, Secret)
    assert (s.type, s.data, s.stringData) == ("Opaque", {}, {})


# --- validation rules -----------------------------------------------------------------------

GOOD = [
    obj("LLMProvider", {"type": "OpenAI", "apiKeySecretRef": KEY}),
    obj("LLMProvider", {"type": "AzureOpenAI", "baseURL": AZURE_URL, "apiKeySecretRef": KEY}),
    obj("LLMProvider", {"type": "AzureOpenAI", "baseURL": AZURE_URL, "azure": {"entraID": ENTRA}}),
    obj("LLMProvider", {"type": "Mock", "mock": {"latency": "50ms", "text": "hi"}}),
    obj("LLMProvider", {"type": "OpenAI", "retry": {"attempts": 0, "initialBackoff": 0}}),
    obj("AccessPolicy", {"subjects": [{"kind": "Group", "name": "ds"}], "modelSelector": {}}),
    obj(
        "AccessPolicy",
        {
            "subjects": [{"kind": "APIKey", "name": "ci-bot"}],
            "models": ["gpt-4o", "claude-*"],
            "modelSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            "limits": {"requestsPerMinute": 600, "costPerMonth": 0.5},
        },
    ),
    obj("APIKey", {"secretName": "k", "groups": ["ci"], "expiresAt": "2027-01-01T00:00:00+02:00"}),
]


@pytest.mark.parametrize("doc", GOOD, ids=lambda d: d["kind"])
def test_valid_resources(doc: dict[str, Any]) -> None:
    assert parse_resource(doc) is not None


OPENAI = {"type": "OpenAI"}
AZURE = {"type": "AzureOpenAI", "baseURL": AZURE_URL}
ANTHROPIC = {"type": "Anthropic", "apiKeySecretRef": KEY}
MOCK = {"type": "Mock"}
MODEL = {"backends": [BACKEND]}
SUBJECTS = [{"kind": "User", "name": "alice"}]
POLICY = {"subjects": SUBJECTS, "models": ["*"]}


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


def selecting(*exprs: dict[str, Any]) -> dict[str, Any]:
    return {**POLICY, "modelSelector": {"matchExpressions": list(exprs)}}


# (kind, spec, the clause the error must contain after "spec.")
BAD = [
    # LLMProvider: settings and credentials must fit the type
    (
        "LLMProvider",
        {**OPENAI, "azure": {}},
        "azure: only allowed with type AzureOpenAI, not OpenAI",
    ),
    ("LLMProvider", {**MOCK, "anthropic": {}}, "anthropic: only allowed with type Anthropic"),
    ("LLMProvider", {**OPENAI, "mock": {}}, "mock: only allowed with type Mock"),
    ("LLMProvider", {**AZURE, "baseURL": None, "apiKeySecretRef": KEY}, "baseURL: required for"),
    ("LLMProvider", AZURE, "apiKeySecretRef: type AzureOpenAI needs exactly one of"),
    (
        "LLMProvider",
        {**AZURE, "apiKeySecretRef": KEY, "azure": {"entraID": ENTRA}},
        "apiKeySecretRef: type AzureOpenAI needs exactly one of",
    ),
    ("LLMProvider", {"type": "Anthropic"}, "apiKeySecretRef: required for type Anthropic"),
    (
        "LLMProvider",
        {**MOCK, "apiKeySecretRef": KEY},
        "apiKeySecretRef: not allowed with type Mock",
    ),
    (
        "LLMProvider",
        {**AZURE, "apiKeySecretRef": KEY, "azure": {"discovery": DISCOVERY}},
        "azure.discovery: requires entraID",
    ),
    (
        "LLMProvider",
        {"type": "Gemini"},
        "type: Input should be 'OpenAI', 'AzureOpenAI', 'Anthropic'",
    ),
    ("LLMProvider", {}, "type: Field required"),
    # LLMProvider: field values
    ("LLMProvider", {**OPENAI, "baseURL": "ftp://f"}, "baseURL: 'ftp://f' is not an http or https"),
    ("LLMProvider", {**OPENAI, "baseURL": "vllm:8000"}, "baseURL: 'vllm:8000' is not an http"),
    (
        "LLMProvider",
        {**OPENAI, "apiKeySecretRef": {"name": "Open_AI", "key": "k"}},
        "apiKeySecretRef.name: 'Open_AI' is not a lowercase RFC 1123 subdomain",
    ),
    (
        "LLMProvider",
        {**OPENAI, "apiKeySecretRef": {"name": "o", "key": "a/b"}},
        "apiKeySecretRef.key: 'a/b' is not a valid Secret key",
    ),
    ("LLMProvider", {**OPENAI, "apiKeySecretRef": {"name": "o"}}, "apiKeySecretRef.key: Field req"),
    ("LLMProvider", {**OPENAI, "timeouts": {"connect": 0}}, "timeouts.connect: Input should be gr"),
    ("LLMProvider", {**OPENAI, "timeouts": {"idle": "soon"}}, "timeouts.idle: invalid duration"),
    ("LLMProvider", {**OPENAI, "retry": {"attempts": 11}}, "retry.attempts: Input should be less"),
    ("LLMProvider", {**OPENAI, "retry": {"attempts": -1}}, "retry.attempts: Input should be great"),
    (
        "LLMProvider",
        {**OPENAI, "retry": {"initialBackoff": "1m", "maxBackoff": "1s"}},
        "retry.maxBackoff: must not be less than initialBackoff",
    ),
    (
        "LLMProvider",
        {**ANTHROPIC, "anthropic": {"defaultMaxTokens": 0}},
        "anthropic.defaultMaxTokens: Input should be greater than or equal to 1",
    ),
    (
        "LLMProvider",
        {**MOCK, "mock": {"tokensPerSecond": -1}},
        "mock.tokensPerSecond: Input should be greater than or equal to 0",
    ),
    (
        "LLMProvider",
        {**AZURE, "azure": {"entraID": {**ENTRA, "tenantID": ""}}},
        "azure.entraID.tenantID: String should have at least 1 character",
    ),
    (
        "LLMProvider",
        {**AZURE, "azure": {"entraID": ENTRA, "discovery": {**DISCOVERY, "interval": 0}}},
        "azure.discovery.interval: Input should be greater than 0",
    ),
    ("LLMProvider", {**OPENAI, "baseUrl": "http://x"}, "baseUrl: Extra inputs are not permitted"),
    ("LLMProvider", {**OPENAI, "timeouts": {"firstbyte": 1}}, "timeouts.firstbyte: Extra inputs"),
    # LLMModel
    ("LLMModel", {}, "backends: Field required"),
    ("LLMModel", {"backends": []}, "backends: List should have at least 1 item"),
    ("LLMModel", {"backends": [BACKEND] * 33}, "backends: List should have at most 32 items"),
    ("LLMModel", {"backends": [{**BACKEND, "weight": 0}]}, "backends[0].weight: Input should be g"),
    (
        "LLMModel",
        {"backends": [BACKEND, {**BACKEND, "weight": 1001}]},
        "backends[1].weight: Input should be less than or equal to 1000",
    ),
    ("LLMModel", {"backends": [{**BACKEND, "priority": 101}]}, "backends[0].priority: Input sho"),
    ("LLMModel", {"backends": [{**BACKEND, "priority": -1}]}, "backends[0].priority: Input sho"),
    (
        "LLMModel",
        {"backends": [{**BACKEND, "provider": "Azure_EU"}]},
        "backends[0].provider: 'Azure_EU' is not a lowercase RFC 1123 subdomain",
    ),
    ("LLMModel", {"backends": [{"provider": "openai"}]}, "backends[0].model: Field required"),
    ("LLMModel", {"backends": [{**BACKEND, "model": ""}]}, "backends[0].model: String should"),
    ("LLMModel", {**MODEL, "model": "gpt 4o"}, "model: 'gpt 4o' is not a valid model id"),
    ("LLMModel", {**MODEL, "model": ""}, "model: '' is not a valid model id"),
    ("LLMModel", {**MODEL, "model": "x" * 257}, "model: 'xxx"),
    ("LLMModel", {**MODEL, "aliases": ["a", "b", "a"]}, "aliases: duplicate entries: a"),
    ("LLMModel", {**MODEL, "aliases": ["ok", "not\tok"]}, "aliases[1]: 'not\\tok' is not a valid"),
    ("LLMModel", {**MODEL, "capabilities": []}, "capabilities: List should have at least 1 item"),
    ("LLMModel", {**MODEL, "capabilities": ["chat", "chat"]}, "capabilities: duplicate entries"),
    (
        "LLMModel",
        {**MODEL, "capabilities": ["images"]},
        "capabilities[0]: Input should be 'chat', 'completions' or 'embeddings'",
    ),
    ("LLMModel", {**MODEL, "pricing": {"inputPerMillion": -1}}, "pricing.inputPerMillion: Input"),
    ("LLMModel", {**MODEL, "backend": []}, "backend: Extra inputs are not permitted"),
    # AccessPolicy
    ("AccessPolicy", {"models": ["*"]}, "subjects: Field required"),
    ("AccessPolicy", {**POLICY, "subjects": []}, "subjects: List should have at least 1 item"),
    ("AccessPolicy", {**POLICY, "subjects": SUBJECTS * 257}, "subjects: List should have at most"),
    (
        "AccessPolicy",
        {**POLICY, "subjects": [{"kind": "Team", "name": "t"}]},
        "subjects[0].kind: Input should be 'Group', 'User' or 'APIKey'",
    ),
    (
        "AccessPolicy",
        {**POLICY, "subjects": [{"kind": "User", "name": ""}]},
        "subjects[0].name: String should have at least 1 character",
    ),
    ("AccessPolicy", {"subjects": SUBJECTS}, "models: give models, modelSelector or both"),
    ("AccessPolicy", {**POLICY, "models": []}, "models: give models, modelSelector or both"),
    ("AccessPolicy", {**POLICY, "models": [""]}, "models[0]: String should have at least 1"),
    (
        "AccessPolicy",
        selecting(expr("t", "In")),
        "modelSelector.matchExpressions[0].values: required for operator In",
    ),
    (
        "AccessPolicy",
        selecting(expr("t", "Exists"), expr("t", "NotIn")),
        "modelSelector.matchExpressions[1].values: required for operator NotIn",
    ),
    (
        "AccessPolicy",
        selecting(expr("t", "Exists", "a")),
        "modelSelector.matchExpressions[0].values: must be empty for operator Exists",
    ),
    (
        "AccessPolicy",
        selecting(expr("t", "DoesNotExist", "a")),
        "modelSelector.matchExpressions[0].values: must be empty for operator DoesNotExist",
    ),
    (
        "AccessPolicy",
        selecting(expr("t", "Equals", "a")),
        "modelSelector.matchExpressions[0].operator: Input should be 'In', 'NotIn', 'Exists'",
    ),
    (
        "AccessPolicy",
        {**POLICY, "modelSelector": {"matchLabel": {}}},
        "modelSelector.matchLabel: Extra inputs are not permitted",
    ),
    *[
        (
            "AccessPolicy",
            {**POLICY, "limits": {field: value}},
            f"limits.{field}: Input should be gr",
        )
        for field, value in [
            ("requestsPerMinute", 0),
            ("tokensPerMinute", -5),
            ("tokensPerDay", 0),
            ("costPerDay", 0),
            ("costPerMonth", -0.01),
        ]
    ],
    # APIKey
    ("APIKey", {}, "secretName: Field required"),
    ("APIKey", {"secretName": "Bad_Name"}, "secretName: 'Bad_Name' is not a lowercase RFC 1123"),
    (
        "APIKey",
        {"secretName": "k", "expiresAt": "2027-01-01T00:00:00"},
        "expiresAt: Input should have timezone info",
    ),
    ("APIKey", {"secretName": "k", "expiresAt": "soon"}, "expiresAt: Input should be a valid"),
    ("APIKey", {"secretName": "k", "user": ""}, "user: String should have at least 1 character"),
    ("APIKey", {"secretName": "k", "groups": ["ci", ""]}, "groups[1]: String should have at least"),
]


@pytest.mark.parametrize(("kind", "spec", "clause"), BAD, ids=[c for _, _, c in BAD])
def test_invalid_specs(kind: str, spec: dict[str, Any], clause: str) -> None:
    assert_clause(reason_of(obj(kind, spec, name="bad")), f"spec.{clause}")


@pytest.mark.parametrize(
    ("metadata", "name", "clause"),
    [
        ({}, "?", "metadata.name: Field required"),
        ({"name": "Bad"}, "Bad", "metadata.name: 'Bad' is not a lowercase RFC 1123 subdomain"),
        ({"name": "a" * 254}, "a" * 254, "metadata.name: 'aaa"),
        ({"name": "a.b-c", "namespace": "Team_A"}, "a.b-c", "metadata.namespace: 'Team_A' is not"),
        (
            {"name": "x", "labels": {"tier": 1}},
            "x",
            "metadata.labels.tier: Input should be a valid string",
        ),
    ],
)
def test_invalid_metadata(metadata: dict[str, Any], name: str, clause: str) -> None:
    doc = {**obj("LLMModel", MODEL), "metadata": metadata}
    with pytest.raises(ResourceError) as caught:
        parse_resource(doc)
    assert caught.value.name == name
    assert_clause(caught.value.reason.split("; "), clause)


def test_missing_metadata_and_spec() -> None:
    with pytest.raises(ResourceError) as caught:
        parse_resource({"apiVersion": API_VERSION, "kind": "LLMModel"})
    assert str(caught.value) == "LLMModel default/?: metadata: Field required; spec: Field required"


def test_api_key_status_hash_format() -> None:
    doc = obj("APIKey", {"secretName": "k"}, status={"keyHash": "md5:abc"})
    assert_clause(reason_of(doc), "status.keyHash: String should match pattern")


def test_resource_error_names_resource_and_field() -> None:
    doc = obj("LLMModel", {"backends": [{**BACKEND, "weight": 0}]}, name="gpt-4o")
    doc["metadata"]["namespace"] = "team-a"
    with pytest.raises(ResourceError) as caught:
        parse_resource(doc)
    err = caught.value
    assert isinstance(err, ValueError)
    assert (err.kind, err.namespace, err.name) == ("LLMModel", "team-a", "gpt-4o")
    assert err.reason == "spec.backends[0].weight: Input should be greater than or equal to 1"
    assert str(err) == f"LLMModel team-a/gpt-4o: {err.reason}"


def test_every_error_is_reported() -> None:
    spec = {
        "type": "OpenAI",
        "azure": {},
        "mock": {},
        "timeouts": {"connect": "fast"},
        "retry": {"attempts": 99},
        "typo": 1,
    }
    assert reason_of(obj("LLMProvider", spec, name="p")) == [
        "spec.timeouts.connect: invalid duration 'fast': expected seconds or a string like "
        "'250ms', '5s', '10m', '1h30m'",
        "spec.retry.attempts: Input should be less than or equal to 10",
        "spec.typo: Extra inputs are not permitted",
    ]
    # Cross-field rules run once the fields themselves are valid, and report every problem.
    assert reason_of(obj("LLMProvider", {"type": "OpenAI", "azure": {}, "mock": {}}, name="p")) == [
        "spec.azure: only allowed with type AzureOpenAI, not OpenAI",
        "spec.mock: only allowed with type Mock, not OpenAI",
    ]


# --- envelopes and dispatch -----------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {},
        [],
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubellm"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": 1}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
        {"apiVersion": "example.com/v1", "kind": "LLMModel", "metadata": {"name": "m"}},
        {"apiVersion": "v2", "kind": "Secret", "metadata": {"name": "s"}},
        {"kind": "LLMModel", "metadata": {"name": "m"}},
    ],
)
def test_foreign_documents_are_not_ours(doc: Any) -> None:
    assert parse_resource(doc) is None


@pytest.mark.parametrize(
    ("api_version", "kind", "reason"),
    [
        ("kubellm.io/v1", "LLMModel", "unsupported apiVersion 'kubellm.io/v1'"),
        (API_VERSION, "LLMModle", "unknown kind 'LLMModle', expected one of LLMProvider, "),
    ],
)
def test_typos_in_our_group_are_errors(api_version: str, kind: str, reason: str) -> None:
    doc = {**obj(kind, MODEL, name="m"), "apiVersion": api_version}
    with pytest.raises(ResourceError, match=f"^{kind} default/m: {reason}"):
        parse_resource(doc)


def test_unknown_top_level_and_metadata_keys_are_ignored() -> None:
    doc = obj("LLMModel", MODEL, name="m", extra=1, status={"future": True})
    doc["metadata"].update(
        namespace="ml",
        labels={"tier": "standard"},
        generation=3,
        uid="u-1",
        resourceVersion="42",
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "kubectl"}],
        ownerReferences=[],
    )
    m = parse_resource(MappingProxyType(doc))  # kopf bodies are mappings, not dicts
    assert isinstance(m, LLMModel)
    assert (m.metadata.generation, m.metadata.resourceVersion) == (3, "42")
    assert resource_key(m) == ("LLMModel", "ml", "m")


def test_kinds_and_resource_keys() -> None:
    assert set(KINDS) == {"LLMProvider", "LLMModel", "AccessPolicy", "APIKey"}
    for kind, cls in KINDS.items():
        assert cls.__name__ == kind
    s = parse_resource(secret("creds"))
    assert s is not None and resource_key(s) == ("Secret", "default", "creds")


def test_models_are_frozen() -> None:
    m = parse_resource(obj("LLMModel", MODEL))
    assert isinstance(m, LLMModel)
    with pytest.raises(ValidationError, match="frozen"):
        m.spec.disabled = True  # type: ignore[misc]


# --- Secret ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "value"),
    [
        ({"data": {"apiKey": b64("from-data")}}, "from-data"),
        ({"stringData": {"apiKey": "from-string"}}, "from-string"),
        ({"data": {"apiKey": b64("old")}, "stringData": {"apiKey": "new"}}, "new"),
        ({"data": {"other": b64("x")}, "stringData": {"another": "y"}}, None),
        ({"data": {"apiKey": b64("x" * 80)[:40] + "\n" + b64("x" * 80)[40:]}}, "x" * 80),
        ({"data": {"apiKey": b64("ключ")}}, "ключ"),
    ],
)
def test_secret_value(fields: dict[str, Any], value: str | None) -> None:
    s = parse_resource(secret(**fields))
    assert isinstance(s, Secret)
    assert s.value("apiKey") == value


def test_secret_bad_base64_is_named() -> None:
    doc = secret("creds", data={"ok": b64("x"), "apiKey": "not base64!"})
    doc["metadata"]["namespace"] = "ml"
    with pytest.raises(ResourceError) as caught:
        parse_resource(doc)
    assert str(caught.value) == "Secret ml/creds: data.apiKey: not valid base64"


def test_secret_binary_value_is_an_error_when_read() -> None:
    s = parse_resource(secret("bin", data={"blob": base64.b64encode(b"\xff\xfe").decode()}))
    assert isinstance(s, Secret)
    with pytest.raises(ValueError, match=r"Secret default/bin: key 'blob' is not UTF-8 text"):
        s.value("blob")


def test_secret_name_is_validated() -> None:
    with pytest.raises(ResourceError, match=r"^Secret default/Creds: metadata.name: 'Creds'"):
        parse_resource(secret("Creds"))


# --- label selectors ------------------------------------------------------------------------

LABELS = {"tier": "standard", "team": "ml"}


def where(*exprs: dict[str, Any], **match_labels: str) -> dict[str, Any]:
    return {"matchLabels": match_labels, "matchExpressions": list(exprs)}


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        (where(), {}, True),
        (where(), LABELS, True),
        (where(tier="standard"), LABELS, True),
        (where(tier="standard", team="ml"), LABELS, True),
        (where(tier="premium"), LABELS, False),
        (where(tier="standard"), {}, False),
        (where(expr("tier", "In", "a", "standard")), LABELS, True),
        (where(expr("tier", "In", "premium")), LABELS, False),
        (where(expr("zone", "In", "eu")), LABELS, False),
        (where(expr("tier", "NotIn", "premium")), LABELS, True),
        (where(expr("tier", "NotIn", "standard")), LABELS, False),
        (where(expr("zone", "NotIn", "eu")), LABELS, True),  # absent is "not in"
        (where(expr("team", "Exists")), LABELS, True),
        (where(expr("zone", "Exists")), LABELS, False),
        (where(expr("zone", "DoesNotExist")), LABELS, True),
        (where(expr("team", "DoesNotExist")), LABELS, False),
        (
            where(expr("tier", "In", "standard"), expr("zone", "DoesNotExist"), team="ml"),
            LABELS,
            True,
        ),
        (where(expr("tier", "Exists"), expr("team", "DoesNotExist"), team="ml"), LABELS, False),
        (where(expr("tier", "Exists"), team="other"), LABELS, False),
    ],
)
def test_label_selector(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(labels) is matches
