"""OIDC token verification against real provider processes on 127.0.0.1.

The verifier is tested directly here (it is wired into the gateway later): tokens
from oidc-provider-mock, Keycloak-shaped tokens signed with keys a real HTTP server
publishes, and hand-forged tokens for every attack the verifier must refuse.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from kubellm_gateway.auth import authenticate
from kubellm_gateway.auth.oidc import REFETCH_INTERVAL, OIDCSettings, OIDCVerifier
from kubellm_gateway.errors import APIError
from kubellm_gateway.providers.pool import ProviderPool
from kubellm_gateway.routing import Principal, Snapshot, build
from tests.support.manifests import backend, model, policy, provider
from tests.support.oidc import CLIENT_ID, KeycloakRealm, ProviderMock, SigningKey, b64url, forge
from tests.unit.conftest import parse_all

KEYCLOAK_GROUPS = ("groups", "realm_access.roles", f"resource_access.{CLIENT_ID}.roles")


class Clock:
    """The verifier's pacing clock, moved by hand: no test waits 30 s."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float = REFETCH_INTERVAL + 1) -> None:
        self.t += seconds


MakeVerifier = Callable[..., OIDCVerifier]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_verifier(clock: Clock) -> AsyncIterator[MakeVerifier]:
    made: list[OIDCVerifier] = []

    def make(*issuers: str, **settings: Any) -> OIDCVerifier:
        settings.setdefault("audience", CLIENT_ID)
        verifier = OIDCVerifier(OIDCSettings(issuers=issuers, **settings), clock=clock)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.aclose()


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeycloakRealm]:
    """A realm no test stops or rotates: those tests make their own."""
    server = KeycloakRealm(tmp_path_factory.mktemp("realm"))
    yield server
    server.stop()


@pytest.fixture
def own_realm(tmp_path: Path) -> Iterator[KeycloakRealm]:
    server = KeycloakRealm(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def provider_mock(tmp_path: Path) -> Iterator[ProviderMock]:
    server = ProviderMock(tmp_path)
    yield server
    server.stop()


async def refused(verifier: OIDCVerifier, token: str) -> str:
    """The message of the 401 the token gets."""
    with pytest.raises(APIError) as caught:
        await verifier.principal(token)
    error = caught.value
    assert error.status == 401
    assert error.code == "invalid_api_key"
    assert error.headers["www-authenticate"].startswith("Bearer ")
    return error.message


# --- Keycloak-shaped claims -----------------------------------------------------------------


async def test_keycloak_claims_map_to_principal_and_policy_subjects(
    realm: KeycloakRealm, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(realm.url, groups_claims=KEYCLOAK_GROUPS)
    principal = await verifier.principal(realm.token())
    assert principal == Principal(
        "alice",
        frozenset(
            {
                "/acme/research",
                "/acme/research/nlp",
                "offline_access",
                "data-science",
                "gpt-users",
            }
        ),
        api_key=None,
        auth="oidc",
    )
    snapshot, _ = build(
        parse_all(
            provider("mock", "Mock"),
            *(model(name, [backend("mock", name)]) for name in ("nlp", "gpt", "ds", "short", "x")),
            policy("nlp", [("Group", "/acme/research/nlp")], models=["nlp"]),
            policy("client-role", [("Group", "gpt-users")], models=["gpt"]),
            policy("realm-role", [("Group", "data-science")], models=["ds"]),
            # With "full group path" on, a short name is not the group.
            policy("short", [("Group", "nlp")], models=["short"]),
            policy("other-client", [("Group", "view-profile")], models=["x"]),
        ),
        ProviderPool(),
        1,
    )
    assert snapshot.allowed(principal) == {"nlp", "gpt", "ds"}


async def test_group_names_without_full_path_and_default_claims(
    realm: KeycloakRealm, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(realm.url)  # groups claim "groups" only
    principal = await verifier.principal(realm.token(groups=["nlp", "ops"]))
    assert principal.groups == {"nlp", "ops"}
    single = await verifier.principal(realm.token(groups="solo"))
    assert single.groups == {"solo"}
    odd = await verifier.principal(realm.token(groups=[1, None, "ok", {"x": 1}]))
    assert odd.groups == {"ok"}
    none = await verifier.principal(realm.token(groups={"not": "a list"}))
    assert none.groups == frozenset()


async def test_username_claim_and_fallback_to_sub(
    realm: KeycloakRealm, make_verifier: MakeVerifier
) -> None:
    by_email = make_verifier(realm.url, username_claim="email")
    assert (await by_email.principal(realm.token(email="a@acme.io"))).user == "a@acme.io"
    default = make_verifier(realm.url)
    assert (await default.principal(realm.token(preferred_username=None, sub="s-1"))).user == "s-1"
    assert (await default.principal(realm.token(preferred_username="", sub="s-2"))).user == "s-2"
    message = await refused(default, realm.token(preferred_username=None, sub=None))
    assert message == ("Invalid access token: neither `preferred_username` nor `sub` names a user.")


async def test_verified_principal_is_cached_until_the_token_expires(
    realm: KeycloakRealm, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(realm.url, leeway=0)
    token = realm.token(exp=int(time.time()) + 2)
    first = await verifier.principal(token)
    assert await verifier.principal(token) is first  # the cache, not a second verification
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.3)
    assert await refused(verifier, token) == "Invalid access token: expired."


# --- attacks --------------------------------------------------------------------------------


def _tampered(realm: KeycloakRealm) -> str:
    header, _, signature = realm.token().split(".")
    claims = realm.claims(preferred_username="admin", groups=["/acme/admins"])
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


def _alg_none(realm: KeycloakRealm) -> str:
    return forge({"alg": "none", "typ": "JWT", "kid": realm.key.kid}, realm.claims())[0]


def _hs256_with_public_key(realm: KeycloakRealm) -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": realm.key.kid}
    _, signing_input = forge(header, realm.claims())
    signature = hmac.new(realm.key.public_pem(), signing_input, hashlib.sha256).digest()
    return forge(header, realm.claims(), signature)[0]


def _algorithm_swapped(realm: KeycloakRealm) -> str:
    # The right private key, but RS384 under a kid that declares RS256.
    return jwt.encode(realm.claims(), realm.key.private, "RS384", headers={"kid": realm.key.kid})


ATTACKS: dict[str, tuple[Callable[[KeycloakRealm], str], str]] = {
    "alg none": (_alg_none, "signing algorithm not accepted"),
    # Refused before any key lookup: unsigned tokens cannot even trigger a JWKS refetch.
    "alg none, unknown kid": (
        lambda r: forge({"alg": "none", "kid": "new"}, r.claims())[0],
        "signing algorithm not accepted",
    ),
    "HS256 signed with the public key": (_hs256_with_public_key, "signing algorithm not accepted"),
    "algorithm swapped under a known kid": (_algorithm_swapped, "signing algorithm not accepted"),
    "alg not a string": (
        lambda r: forge({"alg": ["RS256"], "kid": r.key.kid}, r.claims())[0],
        "signing algorithm not accepted",
    ),
    "kid not a string": (
        lambda r: forge({"alg": "RS256", "kid": {"k": 1}}, r.claims())[0],
        "not a well-formed JWT",
    ),
    "unknown kid": (
        lambda r: SigningKey.rsa("intruder").sign(r.claims()),
        "signed with an unknown key",
    ),
    "signed with the realm's encryption key": (
        lambda r: SigningKey(r.encryption_key.kid, "RS256", r.encryption_key.private).sign(
            r.claims()
        ),
        "signed with an unknown key",
    ),
    "right kid, other private key": (
        lambda r: SigningKey.rsa(r.key.kid).sign(r.claims()),
        "bad signature",
    ),
    "expired": (lambda r: r.token(exp=int(time.time()) - 120), "expired"),
    "not yet valid": (lambda r: r.token(nbf=int(time.time()) + 120), "not valid yet"),
    "issued in the future": (lambda r: r.token(iat=int(time.time()) + 120), "not valid yet"),
    "wrong issuer": (
        lambda r: r.token(iss="http://127.0.0.1:9/realms/evil"),
        "issuer not accepted",
    ),
    "no issuer": (lambda r: r.token(iss=None), "issuer not accepted"),
    "wrong audience": (lambda r: r.token(aud=["account", "other-app"]), "audience not accepted"),
    "no audience": (lambda r: r.token(aud=None), "the `aud` claim is missing"),
    "no expiry": (lambda r: r.token(exp=None), "the `exp` claim is missing"),
    "tampered payload": (_tampered, "bad signature"),
    "not a JWT": (lambda r: "abc.def.ghi", "not a well-formed JWT"),
    # Keycloak ID and refresh tokens can name the gateway's client as audience too.
    "a Keycloak ID token": (lambda r: r.token(typ="ID"), "not an access token"),
    "a Keycloak refresh token": (lambda r: r.token(typ="Refresh"), "not an access token"),
    "an ID token by its JOSE type": (
        lambda r: r.key.sign(r.claims(typ=None), typ="id_token+jwt"),
        "not an access token",
    ),
    "too large": (lambda r: r.token(padding="x" * 20_000), "too large"),
}


@pytest.mark.parametrize("attack", ATTACKS)
async def test_attacks_are_refused(
    attack: str, realm: KeycloakRealm, make_verifier: MakeVerifier
) -> None:
    build_token, reason = ATTACKS[attack]
    verifier = make_verifier(realm.url)
    await verifier.principal(realm.token())  # keys in hand, the baseline works
    assert await refused(verifier, build_token(realm)) == f"Invalid access token: {reason}."


async def test_token_of_another_issuer(
    realm: KeycloakRealm,
    tmp_path_factory: pytest.TempPathFactory,
    provider_mock: ProviderMock,
    make_verifier: MakeVerifier,
) -> None:
    other = KeycloakRealm(tmp_path_factory.mktemp("other"), realm="other")
    try:
        verifier = make_verifier(realm.url, other.url)
        assert (await verifier.principal(other.token())).user == "alice"
        # Signed by one trusted issuer's key, claiming the other: the keys do not mix.
        crossed = realm.key.sign(other.claims())
        assert (
            await refused(verifier, crossed) == "Invalid access token: signed with an unknown key."
        )
        # A real provider nobody configured.
        stranger = provider_mock.token("mallory", {"preferred_username": "mallory"})
        assert await refused(verifier, stranger) == "Invalid access token: issuer not accepted."
    finally:
        other.stop()


async def test_es256_key_implied_from_its_curve(
    own_realm: KeycloakRealm, make_verifier: MakeVerifier
) -> None:
    ec_key = SigningKey.ec()
    own_realm.publish(ec_key.jwk(declare_alg=False), own_realm.key.jwk())
    verifier = make_verifier(own_realm.url)
    assert (await verifier.principal(own_realm.token(ec_key))).user == "alice"
    assert (await verifier.principal(own_realm.token())).user == "alice"
    hs = forge({"alg": "HS256", "kid": ec_key.kid}, own_realm.claims())[0]
    assert await refused(verifier, hs) == "Invalid access token: signing algorithm not accepted."


async def test_access_tokens_by_rfc_9068_or_unmarked_are_accepted(
    realm: KeycloakRealm, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(realm.url)
    for token in (
        realm.key.sign(realm.claims(typ=None), typ="at+jwt"),
        realm.key.sign(realm.claims(typ=None), typ="JWT"),
        realm.token(typ=None),  # most providers mark nothing
        realm.token(typ="bearer"),
    ):
        assert (await verifier.principal(token)).user == "alice"


# --- oidc-provider-mock: real tokens, rotation ------------------------------------------------


async def test_tokens_from_a_real_provider(
    provider_mock: ProviderMock, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(provider_mock.url)
    token = provider_mock.token(
        "u-123", {"preferred_username": "bob", "groups": ["/org/team"], "email": "bob@org.io"}
    )
    principal = await verifier.principal(token)
    assert principal == Principal("bob", frozenset({"/org/team"}), auth="oidc")
    assert await verifier.principal(token) is principal
    for_other_client = provider_mock.token("u-123", {}, client_id="another-app")
    assert await refused(verifier, for_other_client) == (
        "Invalid access token: audience not accepted."
    )


async def test_key_rotation_at_the_provider_is_picked_up(
    provider_mock: ProviderMock, make_verifier: MakeVerifier, clock: Clock
) -> None:
    verifier = make_verifier(provider_mock.url)
    before = provider_mock.token("u-1", {"preferred_username": "carol"})
    assert (await verifier.principal(before)).user == "carol"
    provider_mock.restart()  # a new signing key, published under the same issuer
    after = provider_mock.token("u-1", {"preferred_username": "carol"})
    # The provider's tokens carry no kid: a signature that fails is an unknown key, and
    # the keys were fetched moments ago, so no refetch yet.
    assert await refused(verifier, after) == "Invalid access token: bad signature."
    clock.advance()
    assert (await verifier.principal(after)).user == "carol"
    # The old key is gone from the provider: its tokens are refused, cached or not.
    assert await refused(verifier, before) == "Invalid access token: bad signature."


# --- Keycloak realm: rotation, pacing, outages -------------------------------------------------


async def test_rotation_with_kids_and_refetch_pacing(
    own_realm: KeycloakRealm, make_verifier: MakeVerifier, clock: Clock
) -> None:
    verifier = make_verifier(own_realm.url)
    old_token = own_realm.token()
    await verifier.principal(old_token)
    assert own_realm.jwks_fetches() == 1
    new_key = SigningKey.rsa()
    own_realm.publish(own_realm.key.jwk(), new_key.jwk())  # Keycloak: both active for a while
    new_token = own_realm.token(new_key)
    # Keys were fetched moments ago: a kid we do not hold waits for the next permitted refetch.
    assert "unknown key" in await refused(verifier, new_token)
    assert own_realm.jwks_fetches() == 1
    clock.advance()
    assert (await verifier.principal(new_token)).user == "alice"
    assert own_realm.jwks_fetches() == 2
    # A flood of forged kids costs the provider nothing within the interval...
    intruder = SigningKey.rsa("intruder")
    for _ in range(20):
        assert "unknown key" in await refused(verifier, intruder.sign(own_realm.claims()))
    assert own_realm.jwks_fetches() == 2
    # ...and one fetch after it.
    clock.advance()
    for _ in range(5):
        assert "unknown key" in await refused(verifier, intruder.sign(own_realm.claims()))
    assert own_realm.jwks_fetches() == 3
    # The old key is withdrawn: tokens it signed stop working, also cached ones.
    own_realm.publish(new_key.jwk())
    clock.advance()
    assert "unknown key" in await refused(verifier, intruder.sign(own_realm.claims()))
    assert await refused(verifier, old_token) == "Invalid access token: signed with an unknown key."
    assert (await verifier.principal(new_token)).user == "alice"


async def test_concurrent_first_requests_share_one_fetch(
    own_realm: KeycloakRealm, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(own_realm.url)
    tokens = [own_realm.token(preferred_username=f"user-{i}") for i in range(50)]
    principals = await asyncio.gather(*(verifier.principal(t) for t in tokens))
    assert [p.user for p in principals] == [f"user-{i}" for i in range(50)]
    assert own_realm.jwks_fetches() == 1


async def test_provider_down_keeps_cached_keys_working(
    own_realm: KeycloakRealm, make_verifier: MakeVerifier, clock: Clock
) -> None:
    verifier = make_verifier(own_realm.url)
    await verifier.principal(own_realm.token())
    own_realm.stop()
    # New tokens (not in the principal cache) signed with a held key still verify.
    for i in range(3):
        assert (
            await verifier.principal(own_realm.token(preferred_username=f"u{i}"))
        ).user == f"u{i}"
    clock.advance()
    intruder = SigningKey.rsa("intruder").sign(own_realm.claims())
    assert "unknown key" in await refused(verifier, intruder)  # the refetch failed: no crash
    assert (await verifier.principal(own_realm.token(preferred_username="later"))).user == "later"
    # Back up: a key published meanwhile is found on the next permitted refetch.
    rotated = SigningKey.rsa()
    own_realm.publish(own_realm.key.jwk(), rotated.jwk())
    own_realm.start()
    clock.advance()
    assert (await verifier.principal(own_realm.token(rotated))).user == "alice"


async def test_provider_unreachable_from_the_start(
    make_verifier: MakeVerifier, tmp_path: Path
) -> None:
    realm = KeycloakRealm(tmp_path)
    realm.stop()
    verifier = make_verifier(realm.url)
    assert await refused(verifier, realm.token()) == (
        "Invalid access token: signed with an unknown key."
    )
    await verifier.prefetch()  # logs, never raises


# --- the dispatch -------------------------------------------------------------------------------


async def test_dispatch_sends_jwts_to_the_verifier_and_keys_to_the_key_path(
    realm: KeycloakRealm, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(realm.url)
    snapshot = Snapshot(generation=1, models={}, keys={}, grants={}, policies=())

    def scope(value: str) -> dict[str, Any]:
        return {"type": "http", "headers": [(b"authorization", f"Bearer {value}".encode())]}

    principal = await authenticate(scope(realm.token()), snapshot, verifier)
    assert principal.auth == "oidc"
    with pytest.raises(APIError) as caught:
        await authenticate(scope("sk-kl-" + "a.b.c"), snapshot, verifier)
    assert caught.value.message == "Incorrect, expired or disabled API key."
    # Without OIDC configured a JWT is just an unknown API key.
    with pytest.raises(APIError) as caught:
        await authenticate(scope(realm.token()), snapshot, None)
    assert caught.value.message == "Incorrect, expired or disabled API key."
