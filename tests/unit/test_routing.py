"""routing.build: model ids, backends, keys and grants from parsed resources (Mock: no network)."""

import fnmatch
import hashlib
from typing import Any

import pytest

from kubellm_gateway.auth.apikeys import authenticate
from kubellm_gateway.errors import APIError
from kubellm_gateway.providers.base import Operation
from kubellm_gateway.providers.pool import ProviderPool
from kubellm_gateway.resources import LabelSelector
from kubellm_gateway.routing import Principal, Snapshot, build, capability_route, key_digest
from tests.support.manifests import api_key, backend, model, policy, provider, secret
from tests.unit.conftest import model_entry, parse_all, with_meta

MOCK = provider("mock", "Mock")
OPENAI_URL = "http://127.0.0.1:9/v1"  # never contacted: sessions open on first request


def snapshot_of(*docs: dict[str, Any] | list[dict[str, Any]]) -> Snapshot:
    snapshot, left = build(parse_all(*docs), ProviderPool(), 1)
    assert left == []
    return snapshot


def in_namespace(namespace: str, *docs: dict[str, Any]) -> list[dict[str, Any]]:
    return [with_meta(doc, namespace=namespace) for doc in docs]


# --- models ---------------------------------------------------------------------------------


def test_ids_and_aliases_share_one_entry() -> None:
    s = snapshot_of(
        MOCK,
        model("chat", [backend("mock", "m1")], aliases=["c", "chat-latest"]),
        model("emb", [backend("mock", "e1")], model="text-embed", capabilities=["embeddings"]),
    )
    assert s.models["c"] is s.models["chat"] is s.models["chat-latest"]
    assert s.models["text-embed"].name == "emb"
    assert "emb" not in s.models
    assert s.models["text-embed"].capabilities == {Operation.embeddings}
    assert s.problems == ()


def test_disabled_model_is_absent() -> None:
    s = snapshot_of(MOCK, model("old", [backend("mock", "m")], aliases=["o"], disabled=True))
    assert dict(s.models) == {}
    assert s.problems == ()


def test_tiers_by_priority_with_weights() -> None:
    s = snapshot_of(
        MOCK,
        provider("other", "Mock"),
        model(
            "chat",
            [
                backend("mock", "late", priority=5),
                backend("mock", "a", weight=3),
                backend("other", "b"),
                backend("other", "mid", priority=1),
            ],
            pricing={"inputPerMillion": 1},
        ),
    )
    entry = s.models["chat"]
    assert [[(r.provider.name, r.model, r.weight) for r in tier] for tier in entry.tiers] == [
        [("default/mock", "a", 3), ("default/other", "b", 1)],
        [("default/other", "mid", 1)],
        [("default/mock", "late", 1)],
    ]
    assert entry.tiers[0][0].provider is entry.tiers[2][0].provider
    assert entry.pricing is not None
    assert entry.pricing.inputPerMillion == 1


def claimant(namespace: str, name: str, created: str | None = None) -> list[dict[str, Any]]:
    doc = with_meta(model(name, [backend("mock", name)], model="shared"), namespace=namespace)
    if created is not None:
        doc = with_meta(doc, creationTimestamp=created)
    return [*in_namespace(namespace, MOCK), doc]


@pytest.mark.parametrize(
    ("first", "second", "winner"),
    [
        (("z", "zz", "2024-01-01T00:00:00Z"), ("a", "aa", "2025-01-01T00:00:00Z"), "z/zz"),
        (("b", "a", None), ("a", "z", None), "a/z"),
        (("a", "m2", None), ("a", "m1", None), "a/m1"),
        (("a", "m2", "2024-01-01T00:00:00Z"), ("a", "m1", "2024-01-01T00:00:00Z"), "a/m1"),
    ],
)
def test_duplicate_id_oldest_then_namespace_name_wins(
    first: tuple[str, str, str | None], second: tuple[str, str, str | None], winner: str
) -> None:
    loser = next(f"{ns}/{n}" for ns, n, _ in (first, second) if f"{ns}/{n}" != winner)
    for docs in (claimant(*first) + claimant(*second), claimant(*second) + claimant(*first)):
        s = snapshot_of(*docs)
        entry = s.models["shared"]
        assert f"{entry.namespace}/{entry.name}" == winner
        assert s.problems == (
            f"LLMModel {loser}: model id 'shared' is already served by LLMModel {winner}",
        )


def test_model_losing_its_id_is_refused_with_its_aliases() -> None:
    # Otherwise its alias would lead callers granted "shared" to the loser's backends.
    loser = with_meta(
        model("b", [backend("mock", "b")], model="shared", aliases=["side-door"]),
        creationTimestamp="2025-01-01T00:00:00Z",
    )
    s = snapshot_of(*claimant("default", "a", "2024-01-01T00:00:00Z"), loser)
    assert s.models["shared"].name == "a"
    assert "side-door" not in s.models


def test_naive_creation_timestamp_does_not_break_the_build() -> None:
    # A hand-written manifest may omit the zone; the build must not crash comparing times.
    docs = claimant("a", "old", "2024-01-01T00:00:00") + claimant("a", "new", "2025-01-01T00:00Z")
    entry = snapshot_of(*docs).models["shared"]
    assert entry.name == "old"


def test_missing_provider_leaves_a_tierless_entry_and_a_problem() -> None:
    s = snapshot_of(
        MOCK,
        model("chat", [backend("nope", "x"), backend("mock", "m", priority=1)]),
        model("lost", [backend("nope", "x")]),
        *in_namespace("team", model("elsewhere", [backend("mock", "m")])),
    )
    assert [[r.model for r in t] for t in s.models["chat"].tiers] == [["m"]]
    assert s.models["lost"].tiers == ()
    assert s.models["elsewhere"].tiers == ()  # providers are looked up in the model's namespace
    assert s.problems == (
        "LLMModel default/chat: spec.backends[0]: LLMProvider default/nope is missing or unusable",
        "LLMModel default/lost: spec.backends[0]: LLMProvider default/nope is missing or unusable",
        "LLMModel default/lost: no routable backend; requests get 503",
        "LLMModel team/elsewhere: spec.backends[0]: LLMProvider team/mock is missing or unusable",
        "LLMModel team/elsewhere: no routable backend; requests get 503",
    )


OPENAI = provider(
    "oai", "OpenAI", baseURL=OPENAI_URL, apiKeySecretRef={"name": "oai-key", "key": "apiKey"}
)
CHAT_ON_OPENAI = model("chat", [backend("oai", "gpt")])


@pytest.mark.parametrize(
    ("secrets", "problem"),
    [
        ([], "Secret default/oai-key not found"),
        (in_namespace("other", secret("oai-key", apiKey="sk")), "Secret default/oai-key not found"),
        ([secret("oai-key", token="sk")], "Secret default/oai-key has no key 'apiKey'"),
    ],
)
def test_provider_secret_problems(secrets: list[dict[str, Any]], problem: str) -> None:
    s = snapshot_of(*secrets, OPENAI, CHAT_ON_OPENAI)
    assert s.models["chat"].tiers == ()
    assert s.problems[0] == "LLMProvider default/oai: " + problem


def test_provider_with_its_secret_is_routable() -> None:
    s = snapshot_of(secret("oai-key", apiKey="sk-upstream"), OPENAI, CHAT_ON_OPENAI)
    (route,) = s.models["chat"].tiers[0]
    assert (type(route.provider).__name__, route.provider.name) == ("OpenAIProvider", "default/oai")
    assert "sk-upstream" not in repr(route.provider)
    assert s.problems == ()


def test_resource_counts() -> None:
    s = snapshot_of(MOCK, model("chat", [backend("mock", "m")]), api_key("k", "sk-k"))
    counts = {kind: n for kind, n in s.resource_counts.items() if n}
    assert counts == {"LLMProvider": 1, "LLMModel": 1, "Secret": 1, "APIKey": 1}


@pytest.mark.parametrize(
    ("capabilities", "op", "upstream"),
    [
        ({Operation.chat}, Operation.chat, Operation.chat),
        ({Operation.chat}, Operation.completions, Operation.chat),
        ({Operation.chat}, Operation.embeddings, None),
        ({Operation.completions}, Operation.chat, None),
        ({Operation.chat, Operation.completions}, Operation.completions, Operation.completions),
        ({Operation.embeddings}, Operation.embeddings, Operation.embeddings),
        ({Operation.embeddings}, Operation.completions, None),
    ],
)
def test_capability_route(
    capabilities: set[Operation], op: Operation, upstream: Operation | None
) -> None:
    entry = model_entry(capabilities=frozenset(capabilities))
    assert capability_route(entry, op) is upstream


# --- keys and grants ------------------------------------------------------------------------

GRANTS_DOCS = [
    MOCK,
    model("chat", [backend("mock", "c")], aliases=["chat-alias"]),
    model("embed-small", [backend("mock", "e")], capabilities=["embeddings"]),
    model("free-model", [backend("mock", "f")], labels={"tier": "free"}),
    *api_key("alice", "sk-alice", groups=["devs", "ops"]),
    *api_key("bob", "sk-bob", user="robert"),
    *api_key("carol", "sk-carol"),
    *api_key("dave", "sk-dave"),
    policy("devs", [("Group", "devs")], models=["chat"]),
    policy("robert", [("User", "robert")], models=["embed-*"]),
    policy("carol", [("APIKey", "carol")], modelSelector={"matchLabels": {"tier": "free"}}),
    policy("ops", [("Group", "ops"), ("User", "nobody")], models=["free-model"]),
]


def principal(s: Snapshot, key: str) -> Principal:
    return s.keys[key_digest(key)].principal


@pytest.mark.parametrize(
    ("key", "user", "allowed"),
    [
        ("sk-alice", "alice", {"chat", "free-model"}),
        ("sk-bob", "robert", {"embed-small"}),
        ("sk-carol", "carol", {"free-model"}),
        ("sk-dave", "dave", set()),
    ],
)
def test_grants_per_key(key: str, user: str, allowed: set[str]) -> None:
    s = snapshot_of(*GRANTS_DOCS)
    p = principal(s, key)
    assert (p.user, p.api_key) == (user, f"default/{key.removeprefix('sk-')}")
    assert s.grants[p] == allowed
    assert s.allowed(p) == allowed
    assert [m.id for m in s.listed(p)] == sorted(allowed)


def test_principals_without_a_key_are_granted_on_demand() -> None:
    s = snapshot_of(*GRANTS_DOCS)
    jwt_user = Principal("zed", frozenset({"devs"}), auth="jwt")
    assert jwt_user not in s.grants
    assert s.allowed(jwt_user) == {"chat"}
    assert s.allowed(Principal("robert", frozenset(), auth="jwt")) == {"embed-small"}
    assert s.allowed(Principal("stranger", frozenset())) == frozenset()
    # An APIKey subject needs the key itself, not a user of the same name.
    assert s.allowed(Principal("carol", frozenset(), api_key=None)) == frozenset()


def test_listed_is_sorted_and_has_no_aliases() -> None:
    s = snapshot_of(*GRANTS_DOCS, policy("all", [("User", "dave")], modelSelector={}))
    assert [m.id for m in s.listed(principal(s, "sk-dave"))] == [
        "chat",
        "embed-small",
        "free-model",
    ]


def test_apikey_subjects_match_only_keys_in_the_policys_namespace() -> None:
    s = snapshot_of(
        *in_namespace("team-a", MOCK, model("chat", [backend("mock", "m")])),
        *in_namespace("team-a", *api_key("k", "sk-a")),
        *in_namespace("team-b", *api_key("k", "sk-b")),
        *in_namespace("team-a", policy("p", [("APIKey", "k")], models=["*"])),
    )
    assert s.allowed(principal(s, "sk-a")) == {"chat"}
    assert s.allowed(principal(s, "sk-b")) == frozenset()


def hashed_key(name: str, key: str, **spec: Any) -> dict[str, Any]:
    doc = api_key(name, "unused", **spec)[1]
    return {**doc, "status": {"keyHash": "sha256:" + hashlib.sha256(key.encode()).hexdigest()}}


def test_key_hash_in_status_is_used_instead_of_the_secret() -> None:
    s = snapshot_of(hashed_key("cluster", "sk-from-operator"))  # its Secret is not there
    assert list(s.keys) == [key_digest("sk-from-operator")]
    assert s.problems == ()
    s = snapshot_of(secret("cluster-key", apiKey="sk-in-secret"), hashed_key("cluster", "sk-h"))
    assert list(s.keys) == [key_digest("sk-h")]


def test_key_fields() -> None:
    s = snapshot_of(
        api_key("k", "sk-k", disabled=True, expiresAt="2030-01-01T00:00:00Z", groups=["g"])
    )
    entry = s.keys[key_digest("sk-k")]
    assert entry.disabled
    assert entry.expires_at == 1893456000.0
    assert entry.principal == Principal("k", frozenset({"g"}), "default/k")


@pytest.mark.parametrize(
    ("docs", "problem"),
    [
        ([api_key("k", "sk")[1]], "APIKey default/k: Secret default/k-key not found"),
        ([secret("k-key", other="sk"), api_key("k", "sk")[1]], "has no key 'apiKey'"),
        (api_key("k", "  "), "APIKey default/k: the key in Secret k-key is empty"),
    ],
)
def test_unusable_keys_are_problems(docs: list[dict[str, Any]], problem: str) -> None:
    s = snapshot_of(*docs)
    assert dict(s.keys) == {}
    assert len(s.problems) == 1
    assert problem in s.problems[0]


def scope(key: str) -> dict[str, Any]:
    return {"type": "http", "headers": [(b"authorization", f"Bearer {key}".encode())]}


def test_two_apikeys_sharing_a_key_are_both_refused() -> None:
    s = snapshot_of(
        *api_key("one", "sk-same"),
        *api_key("two", "sk-same"),
        *api_key("three", "sk-other"),
    )
    assert s.keys[key_digest("sk-same")].disabled
    assert s.problems == (
        "APIKey default/two: the same key is used by another APIKey; both refused",
    )
    with pytest.raises(APIError) as caught:
        authenticate(scope("sk-same"), s)
    assert caught.value.status == 401
    assert authenticate(scope("sk-other"), s).user == "three"


# --- which models a policy names ------------------------------------------------------------

TRICKY_IDS = [
    "team1/a", "team1/", "team10/b", "team1-x", "Team1/c", "team1", "teamé/d", "team\U0010ffff/e",
    "a[b]", "ab", "gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-40", "x*y", "x?y", "xzy",
]  # fmt: skip
PATTERNS = [
    "*", "team1/*", "team1*", "team1", "team1/a", "team1?*", "team\U0010ffff*", "gpt-4?",
    "gpt-4*", "gpt-4o*mini", "[Tt]eam1/*", "a[[]b]", "x[*]y", "x?y", "nothing*",
]  # fmt: skip


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_glob_names_exactly_the_ids_fnmatch_matches(pattern: str) -> None:
    docs = [model(f"m{i}", [backend("mock", "x")], model=i_d) for i, i_d in enumerate(TRICKY_IDS)]
    s = snapshot_of(MOCK, *docs, policy("p", [("Group", "g")], models=[pattern]))
    expected = {i for i in TRICKY_IDS if fnmatch.fnmatchcase(i, pattern)}
    assert s.allowed(Principal("u", frozenset({"g"}))) == expected


@pytest.mark.parametrize(
    "selector",
    [
        {"matchLabels": {"tier": "gold"}},
        {"matchLabels": {"tier": "gold", "team": "a"}},
        {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]}]},
        {"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
        {"matchLabels": {"tier": "none"}},
    ],
)
def test_a_selector_names_exactly_the_models_it_matches(selector: dict[str, Any]) -> None:
    labels = [
        {"tier": "gold", "team": "a"},
        {"tier": "silver"},
        {"team": "a"},
        {"tier": "gold"},
        {},
    ]
    docs = [model(f"m{i}", [backend("mock", "x")], labels=ls) for i, ls in enumerate(labels)]
    s = snapshot_of(MOCK, *docs, policy("p", [("Group", "g")], modelSelector=selector))
    parsed = LabelSelector.model_validate(selector)
    expected = {f"m{i}" for i, ls in enumerate(labels) if parsed.matches(ls)}
    assert s.allowed(Principal("u", frozenset({"g"}))) == expected
